"""Raw click logs on any Beam filesystem: JSON lines (plain or gzip), Avro and Parquet.

Logs are bounded, so every reader yields `RawBatch`es: JSON lines as raw bytes
(so that a bad line is judged by the parser, not lost by a decoder), Avro and
Parquet records as the dicts their readers decode.
"""

import logging
import os
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.io import fileio
import fastavro
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquetBatched

from transforms.parse import BATCH_SIZE, MAX_RECORD_BYTES
from transforms.records import RawBatch

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


def split_lines(chunks: Iterable[bytes], max_bytes: int = MAX_RECORD_BYTES):
    """(line, full_length) for each line, empty ones too, so that callers can number them;
    a line over `max_bytes` keeps only its prefix. The newline that ends the last line
    does not start another.

    Memory stays bounded by one chunk plus `max_bytes`, however long a line is.
    A `\r` before the newline (CRLF files) is not part of the line.
    """
    head = b""  # the start of the line that runs past the current chunk (at most max_bytes)
    dropped = 0  # bytes of that line beyond max_bytes

    def finished(line, length):
        if line.endswith(b"\r") and length == len(line):
            return line[:-1], length - 1
        return line, length

    for chunk in chunks:
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if lines:
            first = head + lines[0]
            lines[0] = first[:max_bytes]
            yield finished(lines[0], len(first) + dropped)
            for line in lines[1:]:
                if len(line) > max_bytes:
                    yield line[:max_bytes], len(line)
                else:
                    yield finished(line, len(line))
            head, dropped = b"", 0
        head += rest
        if len(head) > max_bytes:
            dropped += len(head) - max_bytes
            head = head[:max_bytes]
    if head or dropped:
        yield finished(head, len(head) + dropped)


class ReadJsonLinesFn(beam.DoFn):
    """Streams one matched file (gzip by extension) into batches of numbered raw lines."""

    def process(self, readable_file):
        path = readable_file.metadata.path
        logging.info("reading %s (%d bytes)", path, readable_file.metadata.size_in_bytes)
        with readable_file.open(mime_type="application/octet-stream") as handle:
            chunks = iter(lambda: handle.read(CHUNK_BYTES), b"")
            batch = RawBatch(path, [], [], {})
            for number, (line, length) in enumerate(split_lines(chunks), start=1):
                if not length:
                    continue  # an empty line is no record
                if length > len(line):
                    batch.oversize[len(batch.payloads)] = length
                batch.offsets.append(number)
                batch.payloads.append(line)
                if len(batch.payloads) == BATCH_SIZE:
                    yield batch
                    batch = RawBatch(path, [], [], {})
                if number % PROGRESS_EVERY_LINES == 0:
                    logging.info("%s: %d lines read", path, number)
            if batch.payloads:
                yield batch


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
