"""The rules of SPEC.md's event table, and the verdicts on whole batches of raw records.

Plain Python, Arrow and msgspec, no Beam: the parse DoFns run it in their own
process or hand batches to worker processes, which then import only this. Every
record gets exactly one verdict: a click, or the first rule it breaks.
"""

import contextlib
import datetime
import functools
import gc
import ipaddress
import itertools
from typing import Annotated, List, NamedTuple, Optional, Union

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pycountry

from transforms.records import (
    CLICK_SCHEMA,
    EPOCH,
    MAX_RECORD_BYTES,
    ONE_MS,
    Click,
    DeadLetter,
    NoTimeZone,
    RawBatch,
    RawLines,
    RawRecord,
    iso_to_epoch_ms,
    iso_to_epoch_ms_column,
)

MAX_ID_LENGTH = 256
MAX_OPTIONAL_LENGTH = 256
MIN_CLICK_TS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_CLICK_TS = 4_102_444_800_000  # 2100-01-01T00:00:00Z (exclusive)
DEAD_LETTER_PREFIX_BYTES = 1024

COUNTRY_CODES = frozenset(c.alpha_2 for c in pycountry.countries)
LARGEST_INT = 2 ** 63  # orjson reads integers beyond 64 bits as floats
JSON_WHITESPACE = b" \t\r"  # (and the newline that ends a line): a line of nothing else is an empty line
ARROW_UNIT_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}  # a Parquet timestamp's units in a millisecond

# Addresses already in Python's canonical text (dotted quads without leading zeros; eight
# lowercase IPv6 groups, none zero, none zero-padded); any other address is normalized row by row.
CANONICAL_IP = (r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                r"|([1-9a-f][0-9a-f]{0,3}:){7}[1-9a-f][0-9a-f]{0,3})$")

class Malformed(NamedTuple):
    """Why a record is not a click: a stable reason code and a readable detail."""
    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.malformed = Malformed(reason, detail)


def _required_string(record: dict, field: str) -> str:
    value = record.get(field)
    if value is None:
        raise _Invalid("missing_field", f"{field} is required")
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"{field} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise _Invalid("out_of_range", f"{field} must be 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    return value


def _optional_string(record: dict, field: str) -> Optional[str]:
    value = record.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid("wrong_type", f"{field} must be a string or null, got {type(value).__name__}")
    if len(value) > MAX_OPTIONAL_LENGTH:
        raise _Invalid("out_of_range", f"{field} must be at most {MAX_OPTIONAL_LENGTH} characters, got {len(value)}")
    return value


def _click_ts(record: dict) -> int:
    value = record.get("click_ts")
    if value is None:
        raise _Invalid("missing_field", "click_ts is required")
    if isinstance(value, float) and value == value and abs(value) >= LARGEST_INT:
        raise _Invalid("out_of_range", "click_ts must be from 2000-01-01 to 2100-01-01 UTC")
    if isinstance(value, datetime.datetime):  # a typed format's timestamp (Avro, Parquet); a zoneless one is UTC
        value = ((value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)) - EPOCH) // ONE_MS
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid("wrong_type", "click_ts must be epoch ms (integer), ISO-8601 or a timestamp, "
                                     f"got {type(value).__name__}")
    if isinstance(value, str):
        try:
            value = iso_to_epoch_ms(value)
        except NoTimeZone:
            raise _Invalid("bad_timestamp", "click_ts has no time zone") from None
        except ValueError:
            raise _Invalid("bad_timestamp", "click_ts is not an ISO-8601 timestamp") from None
    if not MIN_CLICK_TS <= value < MAX_CLICK_TS:
        raise _Invalid("out_of_range", "click_ts must be from 2000-01-01 to 2100-01-01 UTC")
    return value


@functools.lru_cache(maxsize=1 << 16)
def _normalized_ip(value: str) -> Optional[str]:
    """The canonical text of an IP address, None if it is not one (cached: clients click many times)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _ip(record: dict) -> Optional[str]:
    value = _optional_string(record, "ip")
    if value is None:
        return None
    normalized = _normalized_ip(value)
    if normalized is None:
        raise _Invalid("invalid_ip", "ip is not an IPv4 or IPv6 address")
    return normalized


def _country(record: dict) -> Optional[str]:
    value = _optional_string(record, "country")
    if value is None:
        return None
    code = value.upper() if len(value) == 2 and value.isascii() else None
    if code not in COUNTRY_CODES:
        raise _Invalid("invalid_country", "country is not an ISO 3166-1 alpha-2 code")
    return code


def _is_utf8(data: Union[bytes, str]) -> bool:
    try:
        data.decode("utf-8") if isinstance(data, bytes) else data.encode("utf-8")
    except UnicodeError:
        return False
    return True


NOT_UTF8 = Malformed("not_utf8", "the record is not valid UTF-8")


def decode(payload: Union[bytes, str, dict]) -> Union[dict, Malformed]:
    """The JSON object in a payload, or why there is none."""
    if isinstance(payload, dict):
        return payload
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        if not _is_utf8(payload):
            return NOT_UTF8
        return Malformed("invalid_json", f"not valid JSON: {str(error)[:200]}")
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        return Malformed("not_an_object", f"a click is a JSON object, got {kind}")
    return record


def _common_fields(record: dict) -> Optional[tuple]:
    """The click's fields when the record is valid the common way (epoch-ms click_ts,
    canonical country); None sends it to the full check, which also finds the reason."""
    get = record.get
    event_id, ad_id, click_ts = get("event_id"), get("ad_id"), get("click_ts")
    user_id, ip, country = get("user_id"), get("ip"), get("country")
    if (type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH
            or type(ad_id) is not str or not 0 < len(ad_id) <= MAX_ID_LENGTH
            or type(click_ts) is not int or not MIN_CLICK_TS <= click_ts < MAX_CLICK_TS
            or user_id is not None and (type(user_id) is not str or len(user_id) > MAX_OPTIONAL_LENGTH)
            or country is not None and (type(country) is not str or country not in COUNTRY_CODES)):
        return None
    if ip is not None:
        if type(ip) is not str or len(ip) > MAX_OPTIONAL_LENGTH:
            return None
        ip = _normalized_ip(ip)
        if ip is None:
            return None
    return event_id, ad_id, click_ts, user_id, ip, country


def click_fields(payload: Union[bytes, str, dict]) -> Union[tuple, Malformed]:
    """(event_id, ad_id, click_ts, user_id, ip, country) if the payload meets SPEC.md's
    event table, else the first rule it breaks."""
    record = decode(payload)
    if isinstance(record, Malformed):
        return record
    fields = _common_fields(record)
    if fields is None:
        try:
            fields = (
                _required_string(record, "event_id"),
                _required_string(record, "ad_id"),
                _click_ts(record),
                _optional_string(record, "user_id"),
                _ip(record),
                _country(record),
            )
        except _Invalid as invalid:
            return invalid.malformed
    if record is payload and not all(_is_utf8(value) for value in fields if type(value) is str):
        return NOT_UTF8  # a decoded record's text (a lone surrogate) that no sink, Arrow or JSON could hold
    return fields


def validate(payload: Union[bytes, str, dict], receive_ts: Optional[int] = None) -> Union[Click, Malformed]:
    """A `Click` if the payload meets SPEC.md's event table, else the first rule it breaks."""
    fields = click_fields(payload)
    if isinstance(fields, Malformed):
        return fields
    return Click._make((*fields, receive_ts))


def payload_bytes(payload: Union[bytes, str, dict]) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(payload, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits, lone surrogates: what JSON cannot hold, repr can
        return repr(payload).encode("utf-8", "backslashreplace")


def dead_letter(raw: RawRecord, malformed: Malformed) -> DeadLetter:
    """A dead letter that keeps a bounded, printable prefix of the original bytes."""
    data = payload_bytes(raw.payload)
    prefix = data[:DEAD_LETTER_PREFIX_BYTES]
    return DeadLetter(
        reason=malformed.reason,
        detail=malformed.detail,
        source=raw.source,
        offset=raw.offset,
        length=raw.oversize or len(data),
        payload=prefix.decode("utf-8", "backslashreplace"),
    )


def too_long(length: int) -> Malformed:
    return Malformed("too_long", f"record of {length} bytes exceeds {MAX_RECORD_BYTES}")


@contextlib.contextmanager
def _no_gc_pauses():
    """Parsing a batch allocates a million acyclic objects (dicts, tuples); letting the
    cycle collector rescan them all as they pile up costs more than the parse itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _ClickTypes(msgspec.Struct):
    """The JSON types of a click's fields (and click_ts's range), checked by msgspec in C;
    a batch's values are then checked column by column in Arrow."""
    event_id: str
    ad_id: str
    click_ts: Union[Annotated[int, msgspec.Meta(ge=MIN_CLICK_TS, lt=MAX_CLICK_TS)], str]
    user_id: Optional[str] = None
    ip: Optional[str] = None
    country: Optional[str] = None


_COUNTRY_CODES = pa.array(sorted(COUNTRY_CODES))


class _OnlyClickFields(_ClickTypes, forbid_unknown_fields=True):
    """A record with a click's fields and no other: msgspec may read it straight from JSON,
    since it then reads every byte that orjson would, and agrees (tests/test_parse_corpus.py).
    What it skips in other fields (huge numbers, bad UTF-8) orjson would refuse."""


_DECODE_ONLY_CLICK_FIELDS = msgspec.json.Decoder(_OnlyClickFields).decode


def _typed(payloads, oversize) -> tuple:
    """(the _ClickTypes of the payloads that are JSON objects with the right types, their indices).

    orjson decides what is JSON in both paths, except for records of a click's fields alone."""
    typed: List[_ClickTypes] = []
    indices: List[int] = []
    loads, convert, decode = orjson.loads, msgspec.convert, _DECODE_ONLY_CLICK_FIELDS
    for index, payload in enumerate(payloads):
        if index in oversize:
            continue
        try:
            typed.append(decode(payload))
        except (ValueError, TypeError, RecursionError):
            try:
                typed.append(convert(payload if type(payload) is dict else loads(payload), _ClickTypes))
            except (ValueError, TypeError, RecursionError):
                continue
        indices.append(index)
    return typed, indices


def _epoch_ms(stamps: list) -> list:
    """click_ts as epoch ms: ISO-8601 strings converted (those of a common form all at once), None where
    a string is not a valid one (the range is checked later, with the integers')."""
    strings = [i for i, stamp in enumerate(stamps) if type(stamp) is str]
    if not strings:
        return stamps
    texts = [stamps[i] for i in strings]
    try:
        values, read = iso_to_epoch_ms_column(pa.array(texts, pa.string()))
    except (UnicodeError, pa.ArrowException):  # text Arrow cannot hold (a lone surrogate): one by one
        values, read = np.zeros(len(texts), dtype=np.int64), np.zeros(len(texts), dtype=bool)
    for i, value in zip(itertools.compress(strings, read), values[read].tolist()):
        stamps[i] = value
    for i in itertools.compress(strings, ~read):
        try:
            stamps[i] = _click_ts({"click_ts": stamps[i]})
        except _Invalid:
            stamps[i] = None
    return stamps


def _common_clicks(typed: list) -> tuple:
    """(CLICK_SCHEMA columns but receive_ts, a mask of the rows valid the common way) of _ClickTypes."""
    return _with_common_mask([
        pa.array([t.event_id for t in typed], pa.string()), pa.array([t.ad_id for t in typed], pa.string()),
        pa.array(_epoch_ms([t.click_ts for t in typed]), pa.int64()),
        pa.array([t.user_id for t in typed], pa.string()), pa.array([t.ip for t in typed], pa.string()),
        pa.array([t.country for t in typed], pa.string())])


def _timestamps_in_ms(table: pa.Table) -> pa.Table:
    """A typed batch with a timestamp click_ts (ms, us or ns: Parquet has no seconds; with a zone or
    not) as the epoch ms `_click_ts` makes of one, and its other nanosecond timestamps cut to the
    microseconds a Python datetime holds, for the rows checked one by one."""
    for index, field in enumerate(table.schema):
        if field.name == "click_ts" and pa.types.is_timestamp(field.type):
            column = pc.divide(pc.cast(table.column(index), pa.int64()), ARROW_UNIT_MS[field.type.unit])
        elif pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            column = pc.cast(table.column(index), pa.timestamp("us", field.type.tz), safe=False)
        else:
            continue
        table = table.set_column(index, field.name, column)
    return table


def _as_dicts(table: pa.Table) -> list:
    """A typed batch's rows as dicts, for the rows checked one by one. A column no Python value can hold
    (a timestamp past year 9999, or one its zone moves there) is left out: only the click's fields, which
    every value of can be held, decide a verdict."""
    try:
        return table.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException):
        return table.select([name for name in table.column_names if _holdable(table[name])]).to_pylist()


def _holdable(column) -> bool:
    try:
        column.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException):
        return False
    return True


def _table_columns(table: pa.Table) -> Optional[list]:
    """A typed batch's (Parquet's) columns as CLICK_SCHEMA's first six, if their types allow it."""
    columns = []
    for field in list(CLICK_SCHEMA)[:6]:
        if field.name not in table.column_names:
            columns.append(pa.nulls(len(table), field.type))
            continue
        column = table[field.name].combine_chunks()
        if field.name == "click_ts" and pa.types.is_integer(column.type):
            column = pc.cast(column, pa.int64(), safe=False) if pa.types.is_signed_integer(column.type) else None
        elif field.name == "click_ts" and pa.types.is_string(column.type):
            column = pa.array(_epoch_ms(column.to_pylist()), pa.int64())
        elif not pa.types.is_string(column.type):
            column = None
        if column is None:
            return None
        columns.append(column)
    return columns


def _with_common_mask(columns: list) -> tuple:
    """(columns, a mask of the rows valid the common way): the checks of `_common_fields`,
    vectorized; a row outside the mask gets the full check one by one."""
    event_id, ad_id, click_ts, user_id, ip, country = columns
    checks = [pc.utf8_length(event_id), pc.utf8_length(ad_id)]
    ok = pc.and_(pc.and_(pc.greater(checks[0], 0), pc.less_equal(checks[0], MAX_ID_LENGTH)),
                 pc.and_(pc.greater(checks[1], 0), pc.less_equal(checks[1], MAX_ID_LENGTH)))
    ok = pc.and_(ok, pc.and_(pc.greater_equal(click_ts, MIN_CLICK_TS), pc.less(click_ts, MAX_CLICK_TS)))
    known_country = pc.if_else(pc.is_null(country), None, pc.is_in(country, _COUNTRY_CODES))  # null is no code
    for optional in (pc.less_equal(pc.utf8_length(user_id), MAX_OPTIONAL_LENGTH),
                     pc.match_substring_regex(ip, CANONICAL_IP), known_country):
        ok = pc.and_(ok, pc.fill_null(optional, True))  # an absent optional field is fine
    return columns, pc.fill_null(ok, False).to_numpy(zero_copy_only=False)  # a required one is not


class Verdicts(NamedTuple):
    """A batch judged: its clicks as one CLICK_SCHEMA table (None if there are none; the common
    ones first), its dead letters in input order, and how many records it held."""
    clicks: Optional[pa.Table]
    dead_letters: list
    read: int


def judge(work) -> Verdicts:
    """The verdicts on a RawLines, a RawBatch or a list of RawRecords (what a bounded source yields),
    or a DeadLetter a source made itself (a file it could not read whole: one record, malformed)."""
    if isinstance(work, DeadLetter):
        return Verdicts(None, [work], 1)
    if isinstance(work, RawLines):
        numbers, lines, oversize = work.lines()
        return judge_batch(work.source, numbers, lines, oversize, None, lines_of_a_file=True)
    if isinstance(work, RawBatch) and isinstance(work.payloads, pa.Table):
        return judge_table(work.source, work.offsets, work.payloads, work.receive_ts)
    if isinstance(work, RawBatch):
        return judge_batch(work.source, work.offsets, work.payloads, work.oversize, work.receive_ts)
    return judge_batch([r.source for r in work], [r.offset for r in work], [r.payload for r in work],
                       {i: r.oversize for i, r in enumerate(work) if r.oversize is not None},
                       [r.receive_ts for r in work])


def judge_batch(sources, offsets, payloads, oversize, receive_ts, lines_of_a_file: bool = False) -> Verdicts:
    """Validates many payloads at once. `sources` is one name or one per payload; `oversize` maps
    an index to the full length of a payload cut to its prefix. Payloads that are `lines_of_a_file`
    and only whitespace are empty lines, no records (a message of whitespace is one: invalid JSON)."""
    with _no_gc_pauses():
        typed, typed_rows = _typed(payloads, oversize)
        columns, common = _common_clicks_or_none(typed)
    common_rows = np.asarray(typed_rows, dtype=np.int64)[common]
    return _verdicts(sources, offsets, payloads, len(payloads), oversize, receive_ts, columns, common, common_rows,
                     lines_of_a_file)


def judge_table(source: str, offsets, table: pa.Table, receive_ts) -> Verdicts:
    """Validates a typed batch (Parquet rows) column by column; only the rows outside the
    common way become dicts, to be checked one by one."""
    table = _timestamps_in_ms(table)
    columns = _table_columns(table)
    if columns is None:
        return judge_batch(source, offsets, _as_dicts(table), {}, receive_ts)
    columns, common = _with_common_mask(columns)
    uncommon = np.flatnonzero(~common)
    payloads = dict(zip(uncommon.tolist(), _as_dicts(table.take(uncommon))))
    return _verdicts(source, offsets, payloads, len(table), {}, receive_ts, columns, common, np.flatnonzero(common))


def _is_empty_line(line: bytes, verdict) -> bool:
    """A line of only whitespace: no record, as an empty line (asked only of lines that failed)."""
    return isinstance(verdict, Malformed) and verdict.reason == "invalid_json" and not line.strip(JSON_WHITESPACE)


def _verdicts(sources, offsets, payloads, count, oversize, receive_ts, columns, common, common_rows,
              lines_of_a_file: bool = False) -> Verdicts:
    """The Verdicts of `count` payloads: those at `common_rows` are valid, their columns `columns`
    filtered by `common`; the rest get the full check one by one (payloads[i] of them)."""
    checked_alone = np.ones(count, dtype=bool)
    checked_alone[common_rows] = False
    valid, kept, dead_letters = [], [], []
    for index in np.flatnonzero(checked_alone).tolist():
        fields = too_long(oversize[index]) if index in oversize else click_fields(payloads[index])
        if lines_of_a_file and _is_empty_line(payloads[index], fields):
            count -= 1
        elif isinstance(fields, Malformed):
            source = sources if isinstance(sources, str) else sources[index]
            raw = RawRecord(payloads[index], source, offsets[index], None, oversize.get(index))
            dead_letters.append(dead_letter(raw, fields))
        else:
            valid.append(fields)
            kept.append(index)
    parts, row_parts = [], [common_rows]
    if len(common_rows):
        parts.append([column.filter(common) for column in columns])
    if valid:
        parts.append([pa.array(column, field.type) for column, field in zip(zip(*valid), CLICK_SCHEMA)])
        row_parts.append(np.asarray(kept, dtype=np.int64))
    if not parts:
        return Verdicts(None, dead_letters, count)
    rows = np.concatenate(row_parts)
    receive = (pa.array([receive_ts[i] for i in rows.tolist()], pa.int64()) if receive_ts
               else pa.nulls(len(rows), pa.int64()))
    clicks = pa.Table.from_arrays([pa.concat_arrays(list(column)) for column in zip(*parts)] + [receive],
                                  schema=CLICK_SCHEMA)
    return Verdicts(clicks, dead_letters, count)


def _common_clicks_or_none(typed):
    if not typed:
        return [], np.zeros(0, dtype=bool)
    try:
        return _common_clicks(typed)
    except (UnicodeError, pa.ArrowException):  # strings Arrow cannot hold (lone surrogates): check alone
        return [], np.zeros(len(typed), dtype=bool)
