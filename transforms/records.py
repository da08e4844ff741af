"""The records that flow through the DAG.

They are NamedTuples so that they pickle small, compare by value in tests and
carry their field names into dead letters and the raw archive.
"""

from typing import NamedTuple, Optional, Union

MINUTE_MS = 60_000


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


def rows(element, row_type):
    """The rows of an aggregate element: a `row_type` itself, or a pyarrow Table of them (a replay's batch)."""
    if isinstance(element, row_type):
        yield element
    else:
        yield from map(row_type._make, zip(*(element.column(name).to_pylist() for name in row_type._fields)))
