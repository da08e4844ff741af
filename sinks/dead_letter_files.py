"""A stream's dead letters: JSON-lines files, one per processing-time pane, under a directory.

Each line is a DeadLetter (reason, detail, source, offset, length, payload):
malformed records, and valid clicks set aside as skewed or too late (their
payload is the click as JSON).
"""

import apache_beam as beam

from sinks.dead_letters import to_json_line
from sinks.panes import WriteInPanes

DEFAULT_EVERY_SECONDS = 10


def write_json_lines(handle, dead_letters) -> None:
    handle.write("".join(to_json_line(dead_letter) + "\n" for dead_letter in dead_letters).encode())


class WriteDeadLetterFiles(beam.PTransform):
    """Also the risk filter's flagged clicks (`prefix` "flagged"): any NamedTuple records."""

    def __init__(self, directory: str, every_seconds: int = DEFAULT_EVERY_SECONDS, prefix: str = "dead-letters"):
        super().__init__()
        self._directory = directory
        self._every_seconds = every_seconds
        self._prefix = prefix

    def expand(self, dead_letters):
        return dead_letters | "WriteJsonLinesPanes" >> WriteInPanes(
            self._directory, lambda _: "", write_json_lines, self._prefix, ".jsonl", self._every_seconds)
