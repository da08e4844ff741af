"""A replay's dead letters as one JSON-lines file: one object per malformed record, with reason and a bounded copy.

The file is written where nothing of the user's can be hurt: each bundle writes its
part in a temporary directory next to the target, and a last step, after every part,
joins them into one file there and renames it to the target. Nothing is ever deleted
but that directory; the rename replaces only a regular file at exactly the target path
(a directory there is refused before the run: runners/output_paths.py).
"""

import os
import shutil
import uuid

import apache_beam as beam
import orjson
from apache_beam.transforms.window import GlobalWindows

from sinks.local_paths import temporary_path_next_to


def to_json_line(dead_letter) -> str:
    return orjson.dumps(dead_letter._asdict()).decode()


class _WritePartFn(beam.DoFn):
    """Writes a bundle's dead letters to its own part file; outputs the part's path."""

    def __init__(self, parts_dir: str):
        self._parts_dir = parts_dir

    def start_bundle(self):
        self._handle = self._path = None

    def process(self, dead_letter):
        if self._handle is None:
            os.makedirs(self._parts_dir, exist_ok=True)
            self._path = os.path.join(self._parts_dir, f"part-{uuid.uuid4().hex}")
            self._handle = open(self._path, "wb")
        self._handle.write((to_json_line(dead_letter) + "\n").encode())

    def finish_bundle(self):
        if self._handle is not None:
            self._handle.close()
            yield GlobalWindows.windowed_value(self._path)


class _PublishFn(beam.DoFn):
    """Joins the parts into one file and renames it to the target, after every part is written."""

    def __init__(self, parts_dir: str, path: str):
        self._parts_dir = parts_dir
        self._path = path

    def process(self, part_paths):
        os.makedirs(self._parts_dir, exist_ok=True)
        joined = os.path.join(self._parts_dir, "joined")
        with open(joined, "wb") as out:
            for part in sorted(part_paths):
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
        os.replace(joined, self._path)
        shutil.rmtree(self._parts_dir)


class WriteDeadLetters(beam.PTransform):
    """Writes dead letters to one JSON-lines file at `path` (local), replacing only this file."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path
        self._parts_dir = temporary_path_next_to(path, "parts")

    def expand(self, dead_letters):
        return (
            dead_letters
            | "WriteParts" >> beam.ParDo(_WritePartFn(self._parts_dir))
            | "AllParts" >> beam.combiners.ToList()
            | "Publish" >> beam.ParDo(_PublishFn(self._parts_dir, self._path)))

    def discard(self) -> None:
        """Removes what an interrupted run left of the parts; the target is as it was."""
        shutil.rmtree(self._parts_dir, ignore_errors=True)
