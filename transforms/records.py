"""The contract every layer shares: the records that flow through the DAG, the click's Arrow
schema, the aggregate rows a sink takes, filter texts, times and the event-id hash.

Each of these facts is defined here once; sources, transforms, sinks, serving and the launchers
import it. Plain Python, Arrow and numpy, no Beam: the parse workers import it (through
`transforms.validation`) without Beam. The records are NamedTuples so that they pickle small,
compare by value in tests and carry their field names into dead letters and the raw archive.
"""

import datetime
from typing import Any, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


# A batch of clicks (a replay's, the raw archive's Parquet): Click's fields, in its order.
CLICK_SCHEMA = pa.schema(list(zip(Click._fields, (
    pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.string(), pa.int64()))))


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


class SlidingTopAds(NamedTuple):
    """The top ads of the `minutes` minutes that end (exclusive) at `window_end` (epoch ms):
    (ad_id, clicks), best first."""
    window_end: int
    minutes: int
    ranking: tuple


class Aggregates(NamedTuple):
    """The DAG's results, one PCollection per sink table: what `AggregateClicks` makes and every sink
    (a PTransform over this value) takes. In a stream their elements are AdCount, FilterCount, TopAds
    and SlidingTopAds rows; in a replay per_ad and per_filter carry Arrow tables of them (`rows` reads
    either). `top_ads_sliding` is () where no sliding top is made: Beam takes a tuple of PCollections
    as an input, and skips an empty one, but not None."""
    per_ad: Any
    per_filter: Any
    top_ads: Any
    top_ads_sliding: Any = ()

    def made(self) -> List[Tuple[str, Any]]:
        """(name, PCollection) of each aggregate made, in this order."""
        return [(name, rows) for name, rows in zip(self._fields, self) if not isinstance(rows, tuple)]

    @staticmethod
    def label(name: str) -> str:
        """`top_ads_sliding` -> `TopAdsSliding`: how a sink's step labels name an aggregate."""
        return "".join(part.title() for part in name.split("_"))


# The row type of each aggregate, by its name in `Aggregates` (and its table's in the SQLite sink).
AGGREGATE_ROWS = {"per_ad": AdCount, "per_filter": FilterCount, "top_ads": TopAds, "top_ads_sliding": SlidingTopAds}


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
        numbers: Sequence[int] = range(self.first_line, self.first_line + len(lines))
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


# Filters: a click's values of a combination of dimensions, as text (`country=US,user_id=u1`).
FILTER_DIMENSIONS = ("country", "ip", "user_id")
UNKNOWN = "unknown"  # the value of a dimension a click does not have
SET_JOIN = "+"  # dimensions of one combination ("dimension set"), as --filters joins them


def filter_text(values: Mapping[str, str]) -> str:
    """The filter text of {dimension: value}: `dimension=value` parts in the dimensions' order, joined by ','."""
    return ",".join(f"{name}={values[name]}" for name in sorted(values))


def filter_text_column(clicks: pa.Table, dimensions: Sequence[str]) -> pa.ChunkedArray:
    """`filter_text` of every row of a batch (`UNKNOWN` for a dimension it has no value of), in Arrow."""
    parts = [pc.binary_join_element_wise(f"{name}=", pc.fill_null(clicks[name], UNKNOWN), "")
             for name in sorted(dimensions)]
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, ",")


def dimension_set(dimensions: Iterable[str]) -> str:
    return SET_JOIN.join(sorted(dimensions))


def dimension_set_of(text: str) -> str:
    """`country=US,user_id=u1` -> `country+user_id`. Dimensions are sorted in a filter text and only
    the last one, user_id, takes free text (which may hold ',' or '='), so a part starts a dimension
    only if it names a known one later than the last."""
    names: List[str] = []
    for part in text.split(","):
        name, equals, _ = part.partition("=")
        if equals and name in FILTER_DIMENSIONS and (not names or name > names[-1]):
            names.append(name)
    return SET_JOIN.join(names)


# Times: epoch milliseconds (UTC) everywhere; ISO-8601 with a zone where people read or write them.
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MS = datetime.timedelta(milliseconds=1)
MAX_ISO_LENGTH = 64  # a longer text is no timestamp (and is not parsed)


class NoTimeZone(ValueError):
    """An ISO-8601 time without a zone: it names no moment."""


def iso_to_epoch_ms(text: str) -> int:
    """Epoch ms of an ISO-8601 time with a zone, truncated like epoch ms (59.9996 s is still second 59).
    Raises NoTimeZone for a time without a zone, ValueError for any other text."""
    if len(text) > MAX_ISO_LENGTH:
        raise ValueError(f"longer than {MAX_ISO_LENGTH} characters")
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise NoTimeZone("no time zone")
    return (moment - EPOCH) // ONE_MS


# The forms most ISO-8601 click times have (the generator's, a logger's), by their length in bytes:
# `2026-01-01T00:00:00Z`, `...00.123Z`, `...00+05:30`, `...00.123+05:30`. `iso_to_epoch_ms_column` reads them
# in numpy, `iso_to_epoch_ms` every text.
COMMON_ISO_LENGTHS = (20, 24, 25, 29)
_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_SEPARATORS = {4: b"-", 7: b"-", 10: b"T", 13: b":", 16: b":"}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def iso_to_epoch_ms_column(texts: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """`iso_to_epoch_ms` of many texts at once, for those in a common form (COMMON_ISO_LENGTHS):
    (epoch ms, a mask of the texts read). A text outside the mask (another form, a field out of its
    range: month 13, 30 February, 24:00, an offset of 24 hours or of 60 minutes) is left to
    `iso_to_epoch_ms`, which says why; inside it, the two agree (tests/test_iso_column.py)."""
    texts = pc.cast(texts, pa.binary())
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset:texts.offset + len(texts) + 1]
    lengths = np.diff(offsets)
    read = np.isin(lengths, COMMON_ISO_LENGTHS)
    if texts.null_count:
        read &= texts.is_valid().to_numpy(zero_copy_only=False)
    epoch_ms = np.zeros(len(texts), dtype=np.int64)
    at = np.flatnonzero(read)
    if not len(at):
        return epoch_ms, read
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    # Byte i of each text (past its end: whatever follows, never read as part of it), then digits as numbers.
    chars = data[np.minimum(offsets[at] + np.arange(29)[:, None], len(data) - 1)]
    digits = chars - np.uint8(ord("0"))  # a byte that is no digit wraps around to 10 or more
    lengths = lengths[at]
    fraction, zoned = np.isin(lengths, (24, 29)), np.isin(lengths, (25, 29))
    zone = np.where(fraction, chars[23:29], chars[19:25])  # `Z`, or `±HH:MM`
    zone_digits = zone - np.uint8(ord("0"))
    form = (digits[list(_DIGITS)] <= 9).all(axis=0)
    for position, separator in _SEPARATORS.items():
        form &= chars[position] == ord(separator)
    form &= ~fraction | ((chars[19] == ord(".")) & (digits[20:23] <= 9).all(axis=0))
    form &= np.where(zoned, ((zone[0] == ord("+")) | (zone[0] == ord("-"))) & (zone[3] == ord(":"))
                     & (zone_digits[[1, 2, 4, 5]] <= 9).all(axis=0), zone[0] == ord("Z"))

    def number(first: int, last: int, of=digits) -> np.ndarray:  # the digits at [first, last)
        result = of[first].astype(np.int64)
        for row in of[first + 1:last]:
            result = result * 10 + row
        return result

    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    hour, minute, second = number(11, 13), number(14, 16), number(17, 19)
    millis = np.where(fraction, number(20, 23), 0)
    offset_hour = np.where(zoned, number(1, 3, zone_digits), 0)
    offset_minute = np.where(zoned, number(4, 6, zone_digits), 0)
    sign = np.where(zone[0] == ord("-"), -1, 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + (leap & (month == 2))
    form &= ((year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days) & (hour <= 23)
             & (minute <= 59) & (second <= 59) & (offset_hour <= 23) & (offset_minute <= 59))
    # Days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant's days_from_civil).
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146_097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719_468
    local_ms = days * 86_400_000 + hour * 3_600_000 + minute * MINUTE_MS + second * 1_000 + millis
    epoch_ms[at] = np.where(form, local_ms - sign * (offset_hour * 3_600_000 + offset_minute * MINUTE_MS), 0)
    read[at] = form
    return epoch_ms, read


def epoch_ms_to_iso(epoch_ms: int) -> str:
    """`2026-01-01T00:00:00.000Z`: the UTC text of an epoch-ms time, to the millisecond."""
    return (EPOCH + epoch_ms * ONE_MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The event-id hash: which shard a click's event_id goes to, the same in every process and run
# (Python's hash() is salted per process), per Arrow column: a stream's batches and a replay's.
_TAIL_BYTES = 16
_MIX = (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31)  # splitmix64's finalizer


def _mix_array(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(_MIX[0]))) * np.uint64(_MIX[1])
    h = (h ^ (h >> np.uint64(_MIX[2]))) * np.uint64(_MIX[3])
    return h ^ (h >> np.uint64(_MIX[4]))


def event_id_hashes(event_ids) -> np.ndarray:
    """A 64-bit hash of each string of an Arrow array or chunked array (no nulls), in Arrow and numpy:
    its UTF-8 length and its last 16 bytes (where ids differ: sequence numbers, random suffixes),
    mixed so that every input bit moves every output bit. Equal ids always hash equal, which is all
    that correctness needs; the rest is balance."""
    if isinstance(event_ids, pa.ChunkedArray):
        event_ids = event_ids.combine_chunks()
    data = pc.cast(event_ids, pa.binary())
    tail = pc.binary_slice(data, -_TAIL_BYTES)
    padded = pc.binary_slice(pc.binary_join_element_wise(tail, pa.scalar(bytes(_TAIL_BYTES)), b""), 0, _TAIL_BYTES)
    fixed = pc.cast(padded, pa.binary(_TAIL_BYTES))
    words = np.frombuffer(fixed.buffers()[1], dtype="<u8")[fixed.offset * 2:(fixed.offset + len(fixed)) * 2]
    words = words.reshape(-1, 2)
    lengths = pc.binary_length(data).to_numpy(zero_copy_only=False).astype(np.uint64)
    return _mix_array(_mix_array(words[:, 0] ^ lengths) ^ words[:, 1])
