"""The records that flow through the DAG.

They are NamedTuples so that they pickle small, compare by value in tests and
carry their field names into dead letters and the raw archive.
"""

from typing import NamedTuple, Optional, Sequence, Tuple, Union

MINUTE_MS = 60_000
BATCH_SIZE = 50_000  # records in a batch of bounded input
MAX_RECORD_BYTES = 1 << 20  # a longer record is judged by its prefix: too long


class RawRecord(NamedTuple):
    """One input record as a source delivers it, before anything is trusted.

    `payload` is the raw bytes of a JSON line or message, or the dict a typed
    format (Avro, Parquet) decoded. `offset` is the 1-based line number or
    record index within `source` (-1 where the source has none).
    `receive_ts` is the ingestion time in epoch ms (publish time, record
    timestamp) where the source knows it. `oversize` is the full length in
    bytes of a record too long to read whole; `payload` then holds its prefix.
    """
    payload: Union[bytes, dict]
    source: str
    offset: int
    receive_ts: Optional[int] = None
    oversize: Optional[int] = None


class Click(NamedTuple):
    """A validated click. `click_ts` is event time in epoch milliseconds."""
    event_id: str
    ad_id: str
    click_ts: int
    user_id: Optional[str] = None
    ip: Optional[str] = None
    country: Optional[str] = None
    receive_ts: Optional[int] = None


class DeadLetter(NamedTuple):
    """A record that was not a valid click, with why and a bounded copy of it.

    `payload` is the original bytes decoded as UTF-8 with backslash escapes
    for anything that is not, cut to a bounded prefix; `length` is the full
    length in bytes so a cut is visible.
    """
    reason: str
    detail: str
    source: str
    offset: int
    length: int
    payload: str


class AdCount(NamedTuple):
    """Clicks of one ad in the one-minute window starting at `window_start`."""
    ad_id: str
    window_start: int
    clicks: int


class FilterCount(NamedTuple):
    """Clicks of one ad in one minute for one filter, e.g. `country=US`."""
    ad_id: str
    window_start: int
    filter: str
    clicks: int


class TopAds(NamedTuple):
    """The most clicked ads of one minute: (ad_id, clicks), best first."""
    window_start: int
    ranking: tuple


def minute_start(epoch_ms: int) -> int:
    return epoch_ms - epoch_ms % MINUTE_MS


class RawBatch(NamedTuple):
    """Many raw records of one source, for bounded input: a replay moves batches, not records.

    `payloads[i]` (bytes of a JSON line, or the dict of an Avro/Parquet record;
    Parquet rows may stay an Arrow table, which moves between steps far cheaper
    than dicts) was read at `offsets[i]`; `oversize` maps an index to the full length of a
    record cut to a prefix; `receive_ts`, where the source knows them (the raw
    archive does), holds each record's ingestion time.
    """
    source: str
    offsets: list
    payloads: list
    oversize: dict
    receive_ts: Optional[list] = None


class RawLines(NamedTuple):
    """A run of whole lines of a JSON-lines file, for bounded input: the parser splits it, so
    that reading a log costs no work per line. Line i of `data` is line `first_line + i`
    of `source`; `oversize` maps the index of a line cut to its prefix to its full length.
    """
    source: str
    first_line: int
    data: bytes
    oversize: dict

    def lines(self, max_bytes: int = MAX_RECORD_BYTES) -> Tuple[Sequence[int], list, dict]:
        """(line numbers, lines, {index: full length} of the lines cut to `max_bytes`), as a
        line reader has them: a CR before a newline is no part of a line, an empty line no record."""
        data = self.data
        if b"\r" in data and not self.oversize:
            data = data.replace(b"\r\n", b"\n")
            if data.endswith(b"\r"):
                data = data[:-1]
        lines = data.split(b"\n")
        if data.endswith(b"\n"):
            lines.pop()
        numbers = range(self.first_line, self.first_line + len(lines))
        if not all(lines):  # (a search for b"\n\n" would take longer than the split)
            kept = [i for i, line in enumerate(lines) if line]
            lines, numbers = [lines[i] for i in kept], [numbers[i] for i in kept]
        oversize = dict(self.oversize)
        if lines and max(map(len, lines)) > max_bytes:
            for i, line in enumerate(lines):
                if len(line) > max_bytes:
                    oversize[i] = len(line)
                    lines[i] = line[:max_bytes]
        return numbers, lines, oversize


def rows(element, row_type):
    """The rows of an aggregate element: a `row_type` itself, or a pyarrow Table of them (a replay's batch)."""
    if isinstance(element, row_type):
        yield element
    else:
        yield from map(row_type._make, zip(*(element.column(name).to_pylist() for name in row_type._fields)))
