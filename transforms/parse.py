"""Parse and validate raw click records; anything that is not a click is a dead letter.

Validation follows the event table of SPEC.md. It never raises on input: every
record leaves as exactly one valid `Click` or one `DeadLetter`, and each is
counted, so read = valid + malformed holds for every bundle.
"""

import datetime
import ipaddress
from typing import NamedTuple, Optional, Union

import apache_beam as beam
import orjson
import pycountry
from apache_beam.metrics.metric import Metrics

from transforms.records import Click, DeadLetter, RawRecord

VALID = "valid"
DEAD_LETTER = "dead_letter"

MAX_ID_LENGTH = 256
MAX_OPTIONAL_LENGTH = 256
MIN_CLICK_TS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_CLICK_TS = 4_102_444_800_000  # 2100-01-01T00:00:00Z (exclusive)
DEAD_LETTER_PREFIX_BYTES = 1024
MAX_RECORD_BYTES = 1 << 20

COUNTRY_CODES = frozenset(c.alpha_2 for c in pycountry.countries)


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
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid("wrong_type", f"click_ts must be epoch ms (integer) or ISO-8601, got {type(value).__name__}")
    if isinstance(value, str):
        if len(value) > 64:
            raise _Invalid("bad_timestamp", "click_ts is not an ISO-8601 timestamp")
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("bad_timestamp", "click_ts is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise _Invalid("bad_timestamp", "click_ts has no time zone")
        try:
            value = round(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise _Invalid("out_of_range", "click_ts is out of range") from None
    if not MIN_CLICK_TS <= value < MAX_CLICK_TS:
        raise _Invalid("out_of_range", "click_ts must be from 2000-01-01 to 2100-01-01 UTC")
    return value


def _ip(record: dict) -> Optional[str]:
    value = _optional_string(record, "ip")
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Invalid("invalid_ip", "ip is not an IPv4 or IPv6 address") from None


def _country(record: dict) -> Optional[str]:
    value = _optional_string(record, "country")
    if value is None:
        return None
    code = value.upper()
    if code not in COUNTRY_CODES:
        raise _Invalid("invalid_country", "country is not an ISO 3166-1 alpha-2 code")
    return code


def decode(payload: Union[bytes, str, dict]) -> Union[dict, Malformed]:
    """The JSON object in a payload, or why there is none."""
    if isinstance(payload, dict):
        return payload
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        message = str(error)
        if "UTF-8" in message:
            return Malformed("not_utf8", "the record is not valid UTF-8")
        return Malformed("invalid_json", f"not valid JSON: {message[:200]}")
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        return Malformed("not_an_object", f"a click is a JSON object, got {kind}")
    return record


def validate(payload: Union[bytes, str, dict], receive_ts: Optional[int] = None) -> Union[Click, Malformed]:
    """A `Click` if the payload meets SPEC.md's event table, else the first rule it breaks."""
    record = decode(payload)
    if isinstance(record, Malformed):
        return record
    try:
        return Click(
            event_id=_required_string(record, "event_id"),
            ad_id=_required_string(record, "ad_id"),
            click_ts=_click_ts(record),
            user_id=_optional_string(record, "user_id"),
            ip=_ip(record),
            country=_country(record),
            receive_ts=receive_ts,
        )
    except _Invalid as invalid:
        return invalid.malformed


def payload_bytes(payload: Union[bytes, str, dict]) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    return orjson.dumps(payload, default=repr, option=orjson.OPT_NON_STR_KEYS)


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


class ParseClickFn(beam.DoFn):
    """Validates each raw record; clicks go to the main output, the rest to `dead_letter`."""

    def __init__(self):
        self.read = Metrics.counter("adclick", "read")
        self.valid = Metrics.counter("adclick", "valid")
        self.malformed = Metrics.counter("adclick", "malformed")
        self._by_reason = {}

    def _count_malformed(self, reason: str):
        counter = self._by_reason.get(reason)
        if counter is None:
            counter = self._by_reason[reason] = Metrics.counter("adclick", f"malformed.{reason}")
        counter.inc()
        self.malformed.inc()

    def process(self, raw: RawRecord):
        self.read.inc()
        if raw.oversize is not None:
            result = Malformed("too_long", f"record of {raw.oversize} bytes exceeds {MAX_RECORD_BYTES}")
        else:
            result = validate(raw.payload, raw.receive_ts)
        if isinstance(result, Click):
            self.valid.inc()
            yield result
        else:
            self._count_malformed(result.reason)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(raw, result))


class ParseClicks(beam.PTransform):
    """RawRecord -> Click (main output `valid`) and DeadLetter (output `dead_letter`)."""

    def expand(self, raw_records):
        return raw_records | "Validate" >> beam.ParDo(ParseClickFn()).with_outputs(DEAD_LETTER, main=VALID)
