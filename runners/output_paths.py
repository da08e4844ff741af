"""A replay's outputs may replace only themselves: checked before the run, each refusal one line.

An output (the dead-letter file, the summary, a SQLite sink) is written at exactly the path it
is given, replacing only a regular file there: never a directory, never an input of the run,
never another of its outputs.
"""

import os
from typing import Dict, Iterable, List, Optional

from apache_beam.io.filesystems import FileSystems

from sources import is_kafka
from sources.files import absolute


def _input_files(inputs: Iterable[str]) -> set:
    patterns = [absolute(pattern) for pattern in inputs if not is_kafka(pattern) and "://" not in pattern]
    if not patterns:
        return set()
    return {os.path.realpath(metadata.path)
            for match in FileSystems.match(patterns) for metadata in match.metadata_list}


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def output_errors(inputs: Iterable[str], outputs: Dict[str, Optional[str]]) -> List[str]:
    """Why an output path (by the flag that gave it) would destroy something that is not its own."""
    inputs = _input_files(inputs)
    errors, seen = [], {}
    for flag, path in outputs.items():
        if path is None:
            continue
        real = os.path.realpath(path)
        if os.path.isdir(path) or path.endswith(os.sep):
            errors.append(f"{flag} {path} is a directory: give the path of a file (adclick replaces only that file)")
        elif not os.path.isdir(_existing_ancestor(os.path.dirname(real))):
            errors.append(f"{flag} {path} is inside a file, {_existing_ancestor(os.path.dirname(real))}")
        elif real in inputs:
            errors.append(f"{flag} {path} is an input of this replay: writing it would destroy it")
        elif real in seen:
            errors.append(f"{flag} and {seen[real]} are the same file, {path}")
        seen.setdefault(real, flag)
    return errors
