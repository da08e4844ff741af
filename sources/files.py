"""Raw click logs on any Beam filesystem: JSON lines (plain or gzip), Avro and Parquet.

Logs are bounded, so every reader yields batches: JSON lines as `RawLines`, runs
of raw bytes the parser splits (so that a bad line is judged by the parser, not
lost by a decoder), Avro and Parquet records as `RawBatch`es of what their
readers decode.
"""

import logging
import os
from typing import Iterable, Iterator, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import fileio
import fastavro
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from transforms.records import BATCH_SIZE, MAX_RECORD_BYTES, RawBatch, RawLines

FORMATS = ("jsonl", "avro", "parquet")
CHUNK_BYTES = 8 << 20
PROGRESS_EVERY_LINES = 1_000_000


def format_of(pattern: str) -> str:
    """The log format a file pattern names by its extension; JSON lines otherwise."""
    name = pattern.lower()
    for fmt in ("avro", "parquet"):
        if name.endswith("." + fmt):
            return fmt
    return "jsonl"


def absolute(pattern: str) -> str:
    """Local patterns made absolute (Beam's local filesystem matches only those); URLs as given."""
    return pattern if "://" in pattern else os.path.abspath(pattern)


def check_patterns(patterns: Sequence[str]) -> None:
    """Fails before the pipeline starts when a pattern matches no file."""
    for pattern in patterns:
        if not FileSystems.match([absolute(pattern)])[0].metadata_list:
            raise FileNotFoundError(f"no input file matches {pattern!r}")


def runs_of_lines(chunks: Iterable[bytes], max_bytes: int = MAX_RECORD_BYTES) -> Iterator[Tuple[int, bytes, dict]]:
    """(number of its first line, a run of whole lines, {0: full length} if it is one line cut to
    `max_bytes`) for each run in a file's chunks; a CR before a newline is no part of a length.

    A run ends where a chunk's last line ends. A line that runs past a chunk and
    `max_bytes` goes alone, cut: memory stays bounded by one chunk plus `max_bytes`.
    """
    number = 1
    head = b""  # the start of the line that runs past the chunks so far
    dropped = 0  # bytes of that line beyond max_bytes
    last = b""  # its last byte so far
    for chunk in chunks:
        start = 0
        if dropped:
            end = chunk.find(b"\n")
            if end < 0:
                dropped, last = dropped + len(chunk), chunk[-1:]
                continue
            dropped, last = dropped + end, chunk[end - 1:end] if end else last
            yield number, head, {0: len(head) + dropped - (last == b"\r")}
            number, head, dropped, start = number + 1, b"", 0, end + 1
        end = chunk.rfind(b"\n", start)
        if end < 0:
            head += chunk[start:]
        else:
            run = head + chunk[start:end + 1]
            yield number, run, {}
            number += run.count(b"\n")
            head = chunk[end + 1:]
        if len(head) > max_bytes:
            dropped, last, head = len(head) - max_bytes, head[-1:], head[:max_bytes]
    if head or dropped:
        yield number, head, {0: len(head) + dropped - (last == b"\r")} if dropped else {}


class ReadJsonLinesFn(beam.DoFn):
    """Streams one matched file (gzip by extension) as runs of whole lines, split by the parser."""

    def process(self, readable_file):
        path = readable_file.metadata.path
        logging.info("reading %s (%d bytes)", path, readable_file.metadata.size_in_bytes)
        with readable_file.open(mime_type="application/octet-stream") as handle:
            chunks = iter(lambda: handle.read(CHUNK_BYTES), b"")
            for first_line, data, oversize in runs_of_lines(chunks):
                if first_line // PROGRESS_EVERY_LINES != (first_line + BATCH_SIZE) // PROGRESS_EVERY_LINES:
                    logging.info("%s: at line %d", path, first_line)
                yield RawLines(path, first_line, data, oversize)


class ReadJsonLines(beam.PTransform):
    def expand(self, files):
        return (
            files
            | "Open" >> fileio.ReadMatches()
            | "Lines" >> beam.ParDo(ReadJsonLinesFn()))


def typed_batch(source: str, records: list, offsets: list) -> RawBatch:
    """A batch of Avro records; a `receive_ts` field (the raw archive's) is their receive time."""
    receive_ts = [value if type(value) is int else None for value in (r.get("receive_ts") for r in records)]
    return RawBatch(source, offsets, records, {}, receive_ts if any(receive_ts) else None)


def parquet_batch(source: str, rows: pa.Table) -> RawBatch:
    """A batch of Parquet rows, kept as a table; a `receive_ts` column (the raw archive's) is their receive time."""
    receive_ts = None
    if "receive_ts" in rows.column_names and pa.types.is_integer(rows.schema.field("receive_ts").type):
        receive_ts = rows["receive_ts"].to_pylist()
    return RawBatch(source, [-1] * len(rows), rows, {}, receive_ts)


class ReadAvroFn(beam.DoFn):
    """One Avro file (fastavro, as Beam's avroio) into batches of record dicts, numbered from 1."""

    def process(self, readable_file):
        path = readable_file.metadata.path
        with readable_file.open(mime_type="application/octet-stream") as handle:
            records, offsets = [], []
            for number, record in enumerate(fastavro.reader(handle), start=1):
                records.append(record)
                offsets.append(number)
                if len(records) == BATCH_SIZE:
                    yield typed_batch(path, records, offsets)
                    records, offsets = [], []
            if records:
                yield typed_batch(path, records, offsets)


class ReadAvro(beam.PTransform):
    def expand(self, files):
        return files | "Open" >> fileio.ReadMatches() | "Records" >> beam.ParDo(ReadAvroFn())


class ReadParquet(beam.PTransform):
    """Parquet row groups through Beam's batched reader (it splits files), as batches of record dicts
    (Parquet has no record number here: offset -1)."""

    def expand(self, files):
        return (
            files
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "RowGroups" >> ReadAllFromParquetBatched(with_filename=True)
            | "ToBatches" >> beam.MapTuple(parquet_batch))


class ReadRawLogs(beam.PTransform):
    """All records of the files matching `patterns`, each file read by the reader of its format.

    The format is the file's extension unless `fmt` names one for all files.
    """

    def __init__(self, patterns: Sequence[str], fmt: str = "auto"):
        super().__init__()
        self._patterns = [absolute(pattern) for pattern in patterns]
        self._format = fmt

    def expand(self, pbegin):
        fmt = self._format

        def format_index(metadata, _):
            return FORMATS.index(format_of(metadata.path) if fmt == "auto" else fmt)

        jsonl, avro, parquet = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "SpreadFiles" >> beam.Reshuffle()
            | "ByFormat" >> beam.Partition(format_index, len(FORMATS)))
        return (
            (jsonl | "ReadJsonLines" >> ReadJsonLines(),
             avro | "ReadAvro" >> ReadAvro(),
             parquet | "ReadParquet" >> ReadParquet())
            | "AllLogs" >> beam.Flatten())
