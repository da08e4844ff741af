"""Raw click logs on any Beam filesystem: JSON lines (plain or compressed), Avro and Parquet.

Logs are bounded, so every reader yields batches: JSON lines as `RawLines`, runs
of raw bytes the parser splits (so that a bad line is judged by the parser, not
lost by a decoder), Avro and Parquet records as `RawBatch`es of what their
readers decode. A file that cannot be read to its end (truncated, corrupt, not
of its format) yields what was read before the damage, then one `unreadable_file`
dead letter: the damage is counted like any bad record, and named.
"""

import bz2
import errno
import json
import logging
import lzma
import os
import stat
import zlib
from typing import Callable, Dict, Generator, Iterable, Iterator, List, Sequence, Tuple, Union

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics

from transforms.records import BATCH_SIZE, MAX_RECORD_BYTES, DeadLetter, RawBatch, RawLines, RawRecord
from transforms.validation import Malformed, dead_letter

FORMATS = ("jsonl", "avro", "parquet")
CHUNK_BYTES = 8 << 20
COMPRESSED_CHUNK_BYTES = 64 << 10  # what a corrupt spot can lose of the data before it: what these decompress to
PIECE_BYTES = 1 << 20  # the most one call of a decompressor returns
ZSTD_INPUT_BYTES = 256  # what zstd gets at a time: it returns at most 8 MiB for it (RLE blocks of 128 KiB)
ZLIB_DECOMPRESSOR = type(zlib.decompressobj())
PROGRESS_EVERY_LINES = 1_000_000
UNREADABLE_FILE = "unreadable_file"
INCOMPLETE_FILES = "incomplete_files"  # the string set of the files not read whole: {"file", "offset", "detail"}
BOM = b"\xef\xbb\xbf"

# The decompressors of Beam's compression types (by extension, as apache_beam.io.filesystem has
# them), run here rather than by Beam's reader, which stops at the end of a truncated file's
# bytes without asking the decompressor whether its stream had ended.
DECOMPRESSORS = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    CompressionTypes.DEFLATE: zlib.decompressobj,
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.LZMA: lzma.LZMADecompressor,
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj(),
}


class DamagedFile(Exception):
    """A file's bytes end early or are not what its format or compression says."""


class OwnErrors:
    """A file's handle that keeps the last I/O error of its own (the filesystem's: a lost connection,
    a permission), so that a decoder's errors about the file's bytes, whatever their types (fastavro
    and pyarrow have many; pyarrow re-raises a handle's error as it is), are told apart from it.
    An invalid argument (a negative length or offset read from garbage) is the decoder's."""

    def __init__(self, handle):
        self._handle, self.failure = handle, None

    def __getattr__(self, name):
        attribute = getattr(self._handle, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    self.failure = error
                raise
        return call


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


def not_a_regular_file(path: str) -> str:
    """What a local path is if it is no regular file (a FIFO would block until a writer comes, and
    then yield its data once), else ''."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return f"which cannot be read ({error.strerror})"
    if stat.S_ISREG(mode):
        return ""
    return "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def check_patterns(patterns: Sequence[str]) -> None:
    """Fails before the pipeline starts when a pattern names a directory, matches no file, or matches
    something other than a regular file (a FIFO, a device).

    Beam would read a directory named with a trailing slash as all its files (a generated
    log's truth.jsonl too), and fail on one named without."""
    for pattern in patterns:
        if pattern.endswith("/") or "://" not in pattern and os.path.isdir(pattern):
            raise ValueError(f"--input {pattern!r} is a directory: name its files with a pattern, e.g. "
                             f"'{pattern.rstrip('/')}/*'")
        matched = FileSystems.match([absolute(pattern)])[0].metadata_list
        if not matched:
            raise FileNotFoundError(f"no input file matches {pattern!r}")
        for path in ([] if "://" in pattern else [metadata.path for metadata in matched]):
            kind = not_a_regular_file(path)
            if kind:
                raise ValueError(f"--input {pattern!r} names {path}, {kind}: a replay reads only regular files (a "
                                 "runner may read a file twice, and a pipe's data is gone once read); write it to a "
                                 "file and replay that")


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


def unreadable(path: str, offset: int, detail: str, data: bytes = b"", length: int = 0) -> DeadLetter:
    """The dead letter of a file not read to its end: `offset` is the first line or record not read,
    `data` what was read of it (a line the damage cut short), `length` its full length."""
    raw = RawRecord(data, path, offset, None, length if length > len(data) else None)
    return dead_letter(raw, Malformed(UNREADABLE_FILE, detail))


def described(error: Exception) -> str:
    """A decoder's error on one line of at most 200 characters (pyarrow's run over several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:200]


def output_pieces(decompressor, data: bytes) -> Generator[bytes, None, bytes]:
    """What `data` decompresses to, in pieces of at most about PIECE_BYTES (64 KiB of one byte repeated
    can stand for 64 MiB); returns the data after the end of the stream (the next member's), if it ended."""
    if isinstance(decompressor, ZLIB_DECOMPRESSOR):  # gzip, deflate: the rest of the input waits in a tail
        while True:
            piece = decompressor.decompress(data, PIECE_BYTES)
            yield piece
            data = decompressor.unconsumed_tail
            if decompressor.eof or not data and len(piece) < PIECE_BYTES:
                return decompressor.unused_data
    if hasattr(decompressor, "needs_input"):  # bz2, lzma: the rest of the input waits inside
        while True:
            piece = decompressor.decompress(data, PIECE_BYTES)
            yield piece
            data = b""
            # bz2 says it needs input once it has all of it, output still pending: a full piece asks again
            if decompressor.eof or decompressor.needs_input and len(piece) < PIECE_BYTES:
                return decompressor.unused_data
    view = memoryview(data)  # zstd's decompressor has no output limit: it gets a little input at a time
    for start in range(0, len(view), ZSTD_INPUT_BYTES):
        yield decompressor.decompress(view[start:start + ZSTD_INPUT_BYTES])
        if decompressor.eof:
            return decompressor.unused_data + view[start + ZSTD_INPUT_BYTES:].tobytes()
    return b""


def decompressed(chunks: Iterable[bytes], new_decompressor: Callable) -> Iterator[bytes]:
    """The data of compressed chunks in runs of about CHUNK_BYTES, member after member (concatenated
    gzip files, zstd frames): memory stays bounded however well a line compresses.

    Raises DamagedFile where the data is corrupt, or ends inside a member (a truncated file),
    after the data decoded before it."""
    decompressor, started, length = new_decompressor(), False, 0
    parts: List[bytes] = []
    for data in chunks:
        started = True
        while data:
            if decompressor.eof:
                decompressor = new_decompressor()
            pieces = output_pieces(decompressor, data)
            while True:
                try:
                    part = next(pieces)
                except StopIteration as end:
                    data = end.value
                    break
                except Exception as error:  # each codec has its own (zlib.error, OSError, LZMAError, ZstdError)
                    yield b"".join(parts)
                    raise DamagedFile(f"corrupt compressed data ({described(error)})") from None
                parts.append(part)
                length += len(part)
                if length >= CHUNK_BYTES:
                    yield b"".join(parts)
                    parts, length = [], 0
    yield b"".join(parts)
    if not started:  # an empty stream is some bytes in every format: none is one truncated to nothing
        raise DamagedFile("the file is empty: no compressed data, not even an empty stream (truncated?)")
    if not decompressor.eof:
        raise DamagedFile("the compressed data ends early: the file is truncated")


def without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A text file's chunks without the UTF-8 byte order mark some editors write at its start."""
    first = next(chunks, b"")
    yield first[len(BOM):] if first.startswith(BOM) else first
    yield from chunks


def until_damaged(chunks: Iterable[bytes], damage: list) -> Iterator[bytes]:
    """The chunks up to a DamagedFile, whose detail is then appended to `damage`."""
    try:
        yield from chunks
    except DamagedFile as error:
        damage.append(str(error))


def read_json_lines(path: str, handle) -> Iterator[Union[RawLines, DeadLetter]]:
    """A JSON-lines file (decompressed by its extension, as Beam would) as runs of whole lines,
    split by the parser; if damaged, the line the damage cut short is its dead letter's copy."""
    new_decompressor = DECOMPRESSORS.get(CompressionTypes.detect_compression_type(path))
    chunks = iter(lambda: handle.read(COMPRESSED_CHUNK_BYTES if new_decompressor else CHUNK_BYTES), b"")
    damage: List[str] = []
    chunks = without_bom(until_damaged(decompressed(chunks, new_decompressor) if new_decompressor else chunks, damage))
    first_line, data = 1, b""
    oversize: Dict[int, int] = {}
    for first_line, data, oversize in runs_of_lines(chunks):
        if damage:  # runs_of_lines yields nothing after the last chunk but the last line's start
            yield unreadable(path, first_line, damage[0], data, oversize.get(0, len(data)))
            return
        if first_line // PROGRESS_EVERY_LINES != (first_line + BATCH_SIZE) // PROGRESS_EVERY_LINES:
            logging.info("%s: at line %d", path, first_line)
        yield RawLines(path, first_line, data, oversize)
    if damage:  # after the last whole line, or the last line cut to its prefix
        yield unreadable(path, first_line + (1 if oversize else data.count(b"\n")), damage[0])


def typed_batch(source: str, records: list, offsets: list) -> RawBatch:
    """A batch of Avro records; a `receive_ts` field (the raw archive's) is their receive time."""
    receive_ts = [value if type(value) is int else None for value in (r.get("receive_ts") for r in records)]
    return RawBatch(source, offsets, records, {}, receive_ts if any(receive_ts) else None)


def read_avro(path: str, handle) -> Iterator[Union[RawBatch, DeadLetter]]:
    """An Avro file (fastavro, as Beam's avroio) as batches of record dicts, numbered from 1."""
    records, offsets, number, damage, handle = [], [], 0, None, OwnErrors(handle)
    try:
        for number, record in enumerate(fastavro.reader(handle), start=1):
            records.append(record)
            offsets.append(number)
            if len(records) == BATCH_SIZE:
                yield typed_batch(path, records, offsets)
                records, offsets = [], []
    except Exception as error:
        if error is handle.failure:
            raise  # the filesystem's, not the file's: the runner retries or fails the run
        damage = unreadable(path, number + 1, f"not a whole Avro file ({described(error)})")
    if records:
        yield typed_batch(path, records, offsets)
    if damage:
        yield damage


def parquet_batch(source: str, rows: pa.Table) -> RawBatch:
    """A batch of Parquet rows, kept as a table; a `receive_ts` column (the raw archive's) is their receive time."""
    receive_ts = None
    if "receive_ts" in rows.column_names and pa.types.is_integer(rows.schema.field("receive_ts").type):
        receive_ts = rows["receive_ts"].to_pylist()
    return RawBatch(source, [-1] * len(rows), rows, {}, receive_ts)


def read_parquet(path: str, handle) -> Iterator[Union[RawBatch, DeadLetter]]:
    """A Parquet file as batches of rows kept as Arrow tables (Parquet has no record number: offset -1;
    a damaged file's dead letter has the number of the first row not read). Row groups are read one
    by one, so that a damaged one leaves the whole ones before it counted."""
    rows_read, pending, damage, handle = 0, [], None, OwnErrors(handle)
    try:
        parquet = pq.ParquetFile(handle, page_checksum_verification=True)
        for group in range(parquet.num_row_groups):
            for rows in parquet.iter_batches(batch_size=BATCH_SIZE, row_groups=[group]):
                rows.validate(full=True)  # pyarrow reads strings as they are: invalid UTF-8 is damage too
                pending.append(rows)
                if sum(batch.num_rows for batch in pending) >= BATCH_SIZE:  # small row groups: one batch
                    yield parquet_batch(path, pa.Table.from_batches(pending))
                    rows_read, pending = rows_read + sum(batch.num_rows for batch in pending), []
    except Exception as error:
        if error is handle.failure:
            raise  # the filesystem's, not the file's: the runner retries or fails the run
        damage = f"not a whole Parquet file ({described(error)})"
    if pending:
        yield parquet_batch(path, pa.Table.from_batches(pending))
        rows_read += sum(batch.num_rows for batch in pending)
    if damage:
        yield unreadable(path, rows_read + 1, damage)


READERS = {"jsonl": read_json_lines, "avro": read_avro, "parquet": read_parquet}


class ReadLogFileFn(beam.DoFn):
    """One matched file, read in batches by the reader of its format (its extension unless `fmt` says).

    A file not read whole is named, with where and why, in the string set `incomplete_files` for
    the run summary (its dead letter counts it as `malformed.unreadable_file`)."""

    def __init__(self, fmt: str = "auto"):
        self._format = fmt

    def setup(self):
        self._incomplete_files = Metrics.string_set("adclick", INCOMPLETE_FILES)

    def process(self, readable_file):
        path = readable_file.metadata.path
        fmt = format_of(path) if self._format == "auto" else self._format
        logging.info("reading %s (%s, %d bytes)", path, fmt, readable_file.metadata.size_in_bytes)
        # JSON lines are decompressed by their reader, which notices a truncated file.
        compression = CompressionTypes.UNCOMPRESSED if fmt == "jsonl" else CompressionTypes.AUTO
        with readable_file.open(mime_type="application/octet-stream", compression_type=compression) as handle:
            for batch in READERS[fmt](path, handle):
                if isinstance(batch, DeadLetter):
                    logging.warning("%s was not read whole, stopped at %d: %s", path, batch.offset, batch.detail)
                    self._incomplete_files.add(json.dumps({"file": path, "offset": batch.offset,
                                                           "detail": batch.detail}))
                yield batch


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
            # Patterns that overlap ('logs/*' and 'logs/a*') match a file twice: it is read once.
            | "ByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
            | "EachFileOnce" >> beam.CombinePerKey(lambda matches: next(iter(matches)))
            | "Files" >> beam.Values()
            | "SpreadFiles" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Read" >> beam.ParDo(ReadLogFileFn(self._format)))
