"""Files written by processing-time panes: complete when they appear, never half-written.

A stream cannot wait for the end of its input, so records are gathered in the
global window and a pane fires every `every_seconds` of processing time, and a
last one when the watermark reaches the end (a drained stream): the Python
DirectRunner drops what a trigger has not fired when a window ends (Beam issue
#21260), so the records since the last timed pane would be lost. Each pane of
each partition becomes one file, written under a temporary name and
renamed when complete (Beam's FileSystems: local, gs://, s3://). A replay
(bounded input) writes one pane at the end. Names carry the time and a random
part: a retried bundle adds a file, never overwrites one.
"""

import datetime
import random
import uuid
from typing import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger
from apache_beam.transforms.window import GlobalWindows

TEMP_DIR = ".writing"


def write_atomically(path: str, write: Callable) -> None:
    """Calls `write(handle)` on a temporary file next to `path`'s tree, then renames it to `path`."""
    root = FileSystems.split(path)[0]
    temp = FileSystems.join(root, TEMP_DIR, uuid.uuid4().hex)
    for directory in (root, FileSystems.split(temp)[0]):
        try:
            FileSystems.mkdirs(directory)
        except IOError:
            pass  # already there
    with FileSystems.create(temp) as handle:
        write(handle)
    FileSystems.rename([temp], [path])


class _WritePane(beam.DoFn):
    def __init__(self, root: str, prefix: str, suffix: str, write_records):
        self._root = root
        self._prefix = prefix
        self._suffix = suffix
        self._write_records = write_records

    def process(self, partition_and_records):
        partition, records = partition_and_records
        records = list(records)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{self._prefix}-{stamp}-{uuid.uuid4().hex[:12]}{self._suffix}"
        directory = FileSystems.join(self._root, partition) if partition else self._root
        path = FileSystems.join(directory, name)
        write_atomically(path, lambda handle: self._write_records(handle, records))
        yield path, len(records)


class WriteInPanes(beam.PTransform):
    """Records -> one file per pane and partition under `root`; yields (path, record count)."""

    def __init__(self, root: str, partition: Callable, write_records: Callable, prefix: str, suffix: str,
                 every_seconds: int, shards: int = 1):
        super().__init__()
        self._root = root
        self._partition = partition
        self._write_records = write_records
        self._prefix = prefix
        self._suffix = suffix
        self._every_seconds = every_seconds
        self._shards = shards

    def expand(self, records):
        if not records.is_bounded:
            records = records | "ProcessingTimePanes" >> beam.WindowInto(
                GlobalWindows(),
                trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(self._every_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
        partition, shards = self._partition, self._shards
        return (
            records
            | "KeyByPartition" >> beam.Map(lambda record: ((partition(record), random.randrange(shards)), record))
            | "GatherPane" >> beam.GroupByKey()
            | "DropShard" >> beam.Map(lambda key_records: (key_records[0][0], key_records[1]))
            | "WriteFile" >> beam.ParDo(_WritePane(self._root, self._prefix, self._suffix, self._write_records)))
