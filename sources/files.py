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
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

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


def read_json_lines(path: str, handle) -> Iterator[RawLines]:
    """A JSON-lines file (gzip by extension) as runs of whole lines, split by the parser."""
    chunks = iter(lambda: handle.read(CHUNK_BYTES), b"")
    for first_line, data, oversize in runs_of_lines(chunks):
        if first_line // PROGRESS_EVERY_LINES != (first_line + BATCH_SIZE) // PROGRESS_EVERY_LINES:
            logging.info("%s: at line %d", path, first_line)
        yield RawLines(path, first_line, data, oversize)


def typed_batch(source: str, records: list, offsets: list) -> RawBatch:
    """A batch of Avro records; a `receive_ts` field (the raw archive's) is their receive time."""
    receive_ts = [value if type(value) is int else None for value in (r.get("receive_ts") for r in records)]
    return RawBatch(source, offsets, records, {}, receive_ts if any(receive_ts) else None)


def read_avro(path: str, handle) -> Iterator[RawBatch]:
    """An Avro file (fastavro, as Beam's avroio) as batches of record dicts, numbered from 1."""
    records, offsets = [], []
    for number, record in enumerate(fastavro.reader(handle), start=1):
        records.append(record)
        offsets.append(number)
        if len(records) == BATCH_SIZE:
            yield typed_batch(path, records, offsets)
            records, offsets = [], []
    if records:
        yield typed_batch(path, records, offsets)


def parquet_batch(source: str, rows: pa.Table) -> RawBatch:
    """A batch of Parquet rows, kept as a table; a `receive_ts` column (the raw archive's) is their receive time."""
    receive_ts = None
    if "receive_ts" in rows.column_names and pa.types.is_integer(rows.schema.field("receive_ts").type):
        receive_ts = rows["receive_ts"].to_pylist()
    return RawBatch(source, [-1] * len(rows), rows, {}, receive_ts)


def read_parquet(path: str, handle) -> Iterator[RawBatch]:
    """A Parquet file as batches of rows kept as Arrow tables (Parquet has no record number: offset -1)."""
    for rows in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_SIZE):
        yield parquet_batch(path, pa.Table.from_batches([rows]))


READERS = {"jsonl": read_json_lines, "avro": read_avro, "parquet": read_parquet}


class ReadLogFileFn(beam.DoFn):
    """One matched file, read in batches by the reader of its format (its extension unless `fmt` says)."""

    def __init__(self, fmt: str = "auto"):
        self._format = fmt

    def process(self, readable_file):
        path = readable_file.metadata.path
        fmt = format_of(path) if self._format == "auto" else self._format
        logging.info("reading %s (%s, %d bytes)", path, fmt, readable_file.metadata.size_in_bytes)
        with readable_file.open(mime_type="application/octet-stream") as handle:
            yield from READERS[fmt](path, handle)


class ReadRawLogs(beam.PTransform):
    """All records of the files matching `patterns`, each file read by the reader of its format.

    The format is the file's extension unless `fmt` names one for all files.
    """

    def __init__(self, patterns: Sequence[str], fmt: str = "auto"):
        super().__init__()
        self._patterns = [absolute(pattern) for pattern in patterns]
        self._format = fmt

    def expand(self, pbegin):
        # One reader step for every format: the runner fuses reading into parsing, so a replay
        # never holds more of its input than the batches in flight. A file is the unit of work.
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "SpreadFiles" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Read" >> beam.ParDo(ReadLogFileFn(self._format)))
