"""Nasty inputs for parsing: each gets the right verdict and reason, and nothing ever raises.

A fixed corpus pins the reason codes; hypothesis then throws random bytes, random
JSON and click-shaped records of mixed types at `validate` and at the DoFns, and
checks the verdicts against `spec_click`, the plain reading of SPEC.md in
tests/test_generator.py.
"""

import collections
import datetime
import json

import apache_beam as beam
import pyarrow as pa
import pycountry
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.windowed_value import WindowedValue
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.spec_reading import spec_click
from transforms import parse
from transforms.parse import DEAD_LETTER, ParseBatchFn, ParseClicks, start_workers
from transforms.records import Click, DeadLetter, RawBatch, RawLines, RawRecord, rows
from transforms.validation import DEAD_LETTER_PREFIX_BYTES, Malformed, validate

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FIRST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, the first valid instant
END_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z, the first invalid one
BASE = {"event_id": "evt-1", "ad_id": "ad-1", "click_ts": T0}
ABSENT = object()
REASONS = {"not_utf8", "invalid_json", "not_an_object", "missing_field", "wrong_type", "out_of_range",
           "bad_timestamp", "invalid_ip", "invalid_country", "too_long"}
BIG = "x" * 300_000
UTC = datetime.timezone.utc


def line(**fields) -> bytes:
    """BASE with `fields` replaced, as a JSON line; ABSENT leaves a field out."""
    record = {**BASE, **fields}
    return json.dumps({k: v for k, v in record.items() if v is not ABSENT}).encode()


def raw_ts(literal: str) -> bytes:
    """BASE with click_ts written as a raw JSON literal (NaN, 1e400, a 70-bit integer)."""
    return b'{"event_id":"evt-1","ad_id":"ad-1","click_ts":' + literal.encode() + b"}"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


MALFORMED = [
    # Not UTF-8, or not text at all.
    pytest.param(b"\xff", "not_utf8", id="lone-ff"),
    pytest.param(line(event_id="caf\u00e9").replace(b"\\u00e9", b"\xe9"), "not_utf8", id="latin-1-in-value"),
    pytest.param(line(event_id="\u00e9").replace(b"\\u00e9", b"\xc3"), "not_utf8", id="cut-multibyte"),
    pytest.param(line(event_id="/").replace(b'"/"', b'"\xc0\xaf"'), "not_utf8", id="overlong-encoding"),
    pytest.param(line(event_id="s").replace(b'"s"', b'"\xed\xa0\x80"'), "not_utf8", id="encoded-surrogate"),
    pytest.param(b"\xff\xfe{\x00}\x00", "not_utf8", id="utf-16"),
    pytest.param('{"event_id":"\ud800","ad_id":"a","click_ts":1767225600000}', "not_utf8", id="str-lone-surrogate"),
    # Not JSON.
    pytest.param(b"", "invalid_json", id="empty-line"),
    pytest.param(b" \t  ", "invalid_json", id="whitespace-only"),
    pytest.param(b"\x00", "invalid_json", id="nul"),
    pytest.param(b"click evt-1 ad-1", "invalid_json", id="plain-text"),
    pytest.param(line()[:-1], "invalid_json", id="truncated"),
    pytest.param(line() + b" x", "invalid_json", id="trailing-garbage"),
    pytest.param(line() + line(), "invalid_json", id="two-objects"),
    pytest.param(line()[:-1] + b",}", "invalid_json", id="trailing-comma"),
    pytest.param(line().replace(b'"', b"'"), "invalid_json", id="single-quotes"),
    pytest.param(raw_ts("NaN"), "invalid_json", id="nan"),
    pytest.param(raw_ts("Infinity"), "invalid_json", id="infinity"),
    pytest.param(raw_ts("-Infinity"), "invalid_json", id="minus-infinity"),
    pytest.param(raw_ts("1e400"), "invalid_json", id="1e400"),
    pytest.param(b"NaN", "invalid_json", id="bare-nan"),
    pytest.param(nested(10_000).encode(), "invalid_json", id="nested-10k-array"),
    pytest.param(line(event_id=ABSENT)[:-1] + b',"event_id":' + nested(10_000).encode() + b"}", "invalid_json",
                 id="nested-10k-in-field"),
    pytest.param(line(event_id="\ud800"), "invalid_json", id="lone-high-surrogate-escape"),
    pytest.param(line(event_id="\udc00x"), "invalid_json", id="lone-low-surrogate-escape"),
    pytest.param(line(extra="\ud800"), "invalid_json", id="lone-surrogate-in-ignored-field"),
    pytest.param(line()[:-1] + b',"extra":' + nested(2_000).encode() + b"}", "invalid_json",
                 id="nested-2k-in-ignored-field"),
    pytest.param(line()[:-1] + b',"extra":"caf\xe9"}', "not_utf8", id="latin-1-in-ignored-field"),
    pytest.param(line(event_id="a\x01b").replace(b"\\u0001", b"\x01"), "invalid_json", id="raw-control-char"),
    pytest.param(line(event_id="a\nb").replace(b"\\n", b"\n"), "invalid_json", id="raw-newline-in-string"),
    # JSON, but not an object.
    pytest.param(b"[]", "not_an_object", id="array"),
    pytest.param(b"[" + line() + b"]", "not_an_object", id="click-in-array"),
    pytest.param(b'"str"', "not_an_object", id="string"),
    pytest.param(b'""', "not_an_object", id="empty-string"),
    pytest.param(b"1", "not_an_object", id="number"),
    pytest.param(b"1.5", "not_an_object", id="float"),
    pytest.param(b"true", "not_an_object", id="true"),
    pytest.param(b"false", "not_an_object", id="false"),
    pytest.param(b"null", "not_an_object", id="null"),
    # Required fields missing.
    pytest.param(b"{}", "missing_field", id="empty-object"),
    pytest.param(line(event_id=ABSENT), "missing_field", id="no-event-id"),
    pytest.param(line(event_id=None), "missing_field", id="null-event-id"),
    pytest.param(line(ad_id=ABSENT), "missing_field", id="no-ad-id"),
    pytest.param(line(click_ts=ABSENT), "missing_field", id="no-click-ts"),
    pytest.param(line(click_ts=None), "missing_field", id="null-click-ts"),
    pytest.param(b'{"EVENT_ID":"evt-1","ad_id":"ad-1","click_ts":1767225600000}', "missing_field",
                 id="keys-are-case-sensitive"),
    # Wrong types.
    pytest.param(line(event_id=123), "wrong_type", id="numeric-event-id"),
    pytest.param(line(event_id=["evt-1"]), "wrong_type", id="array-event-id"),
    pytest.param(line(event_id={"id": "evt-1"}), "wrong_type", id="object-event-id"),
    pytest.param(line(event_id=True), "wrong_type", id="bool-event-id"),
    pytest.param(line(ad_id=1.5), "wrong_type", id="float-ad-id"),
    pytest.param(line(ad_id=json.loads(nested(500))), "wrong_type", id="nested-500-ad-id"),
    pytest.param(line(click_ts=True), "wrong_type", id="click-ts-true"),
    pytest.param(line(click_ts=False), "wrong_type", id="click-ts-false"),
    pytest.param(line(click_ts=float(T0)), "wrong_type", id="click-ts-float"),
    pytest.param(raw_ts("1.7672256e12"), "wrong_type", id="click-ts-exponent"),
    pytest.param(line(click_ts=[T0]), "wrong_type", id="click-ts-array"),
    pytest.param(line(click_ts={"$date": T0}), "wrong_type", id="click-ts-object"),
    pytest.param(line(user_id=5), "wrong_type", id="numeric-user-id"),
    pytest.param(line(user_id=["u"]), "wrong_type", id="array-user-id"),
    pytest.param(line(ip=16_909_060), "wrong_type", id="numeric-ip"),
    pytest.param(line(country=1), "wrong_type", id="numeric-country"),
    pytest.param(line(country=["US"]), "wrong_type", id="array-country"),
    pytest.param(line(country={"code": "US"}), "wrong_type", id="object-country"),
    # Out of range.
    pytest.param(line(event_id=""), "out_of_range", id="empty-event-id"),
    pytest.param(line(event_id="e" * 257), "out_of_range", id="event-id-257"),
    pytest.param(line(event_id=BIG), "out_of_range", id="event-id-300kb"),
    pytest.param(line(ad_id=""), "out_of_range", id="empty-ad-id"),
    pytest.param(line(ad_id="\u00e9" * 257), "out_of_range", id="ad-id-257-chars"),
    pytest.param(line(user_id="u" * 257), "out_of_range", id="user-id-257"),
    pytest.param(line(user_id=BIG), "out_of_range", id="user-id-300kb"),
    pytest.param(line(ip="1" * 300), "out_of_range", id="ip-300"),
    pytest.param(line(country=BIG), "out_of_range", id="country-300kb"),
    pytest.param(line(click_ts=-1), "out_of_range", id="click-ts-negative"),
    pytest.param(line(click_ts=0), "out_of_range", id="click-ts-zero"),
    pytest.param(line(click_ts=FIRST_MS - 1), "out_of_range", id="click-ts-1999"),
    pytest.param(line(click_ts=END_MS), "out_of_range", id="click-ts-2100"),
    pytest.param(line(click_ts=T0 // 1000), "out_of_range", id="click-ts-in-seconds"),
    pytest.param(line(click_ts=T0 * 1000), "out_of_range", id="click-ts-in-microseconds"),
    pytest.param(line(click_ts=2 ** 63 - 1), "out_of_range", id="click-ts-int64-max"),
    pytest.param(line(click_ts=-2 ** 63), "out_of_range", id="click-ts-int64-min"),
    pytest.param(line(click_ts=2 ** 64 - 1), "out_of_range", id="click-ts-uint64-max"),
    pytest.param(line(click_ts="1999-12-31T23:59:59.999Z"), "out_of_range", id="iso-1999"),
    pytest.param(line(click_ts="2100-01-01T00:00:00Z"), "out_of_range", id="iso-2100"),
    pytest.param(line(click_ts="2100-01-01T00:00:00+00:00"), "out_of_range", id="iso-2100-offset"),
    pytest.param(line(click_ts="9999-12-31T23:59:59-23:59"), "out_of_range", id="iso-beyond-year-9999"),
    pytest.param(line(click_ts="0001-01-01T00:00:00+23:59"), "out_of_range", id="iso-before-year-1"),
    # Timestamps that are not ISO-8601 with a zone.
    pytest.param(line(click_ts="2026-01-01T00:00:00"), "bad_timestamp", id="iso-without-zone"),
    pytest.param(line(click_ts="2026-01-01"), "bad_timestamp", id="date-only"),
    pytest.param(line(click_ts="2026-13-45T99:00Z"), "bad_timestamp", id="iso-garbage"),
    pytest.param(line(click_ts="2026-01-01T24:00:00Z"), "bad_timestamp", id="hour-24"),
    pytest.param(line(click_ts="2026-01-01T00:00:00+24:00"), "bad_timestamp", id="offset-24h"),
    pytest.param(line(click_ts="2026-01-01T00:00:00 UTC"), "bad_timestamp", id="zone-name"),
    pytest.param(line(click_ts="\uff12\uff10\uff12\uff16-01-01T00:00:00Z"), "bad_timestamp", id="fullwidth-digits"),
    pytest.param(line(click_ts=""), "bad_timestamp", id="empty-string"),
    pytest.param(line(click_ts="now"), "bad_timestamp", id="now"),
    pytest.param(line(click_ts=str(T0)), "bad_timestamp", id="epoch-ms-as-string"),
    pytest.param(line(click_ts="2026-01-01T00:00:00Z" + " " * 60), "bad_timestamp", id="padded-65-chars"),
    pytest.param(line(click_ts="9" * 10_000), "bad_timestamp", id="10k-chars"),
    # Bad IP addresses and countries.
    pytest.param(line(ip="999.1.1.1"), "invalid_ip", id="ip-octet-999"),
    pytest.param(line(ip="1.2.3"), "invalid_ip", id="ip-three-octets"),
    pytest.param(line(ip="1.2.3.4.5"), "invalid_ip", id="ip-five-octets"),
    pytest.param(line(ip="01.2.3.4"), "invalid_ip", id="ip-leading-zero"),
    pytest.param(line(ip=" 1.2.3.4"), "invalid_ip", id="ip-leading-space"),
    pytest.param(line(ip="1.2.3.4/32"), "invalid_ip", id="ip-network"),
    pytest.param(line(ip="2001:db8::g"), "invalid_ip", id="ipv6-bad-hex"),
    pytest.param(line(ip="1::2::3"), "invalid_ip", id="ipv6-two-gaps"),
    pytest.param(line(ip="localhost"), "invalid_ip", id="hostname"),
    pytest.param(line(ip=""), "invalid_ip", id="empty-ip"),
    pytest.param(line(country="usa"), "invalid_country", id="alpha-3-lower"),
    pytest.param(line(country="USA"), "invalid_country", id="alpha-3"),
    pytest.param(line(country="U1"), "invalid_country", id="digit"),
    pytest.param(line(country="UK"), "invalid_country", id="uk-is-not-iso"),
    pytest.param(line(country="XX"), "invalid_country", id="xx"),
    pytest.param(line(country="EU"), "invalid_country", id="eu"),
    pytest.param(line(country="u"), "invalid_country", id="one-letter"),
    pytest.param(line(country=" US"), "invalid_country", id="padded"),
    pytest.param(line(country=""), "invalid_country", id="empty-country"),
    # Typed timestamps (Avro timestamp-millis, Parquet timestamp), as their readers decode them.
    pytest.param({**BASE, "click_ts": datetime.datetime(1999, 12, 31, 23, 59, 59, 999_999, UTC)}, "out_of_range",
                 id="typed-timestamp-1999"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2100, 1, 1, tzinfo=UTC)}, "out_of_range",
                 id="typed-timestamp-2100"),
    pytest.param({**BASE, "click_ts": datetime.date(2026, 1, 1)}, "wrong_type", id="typed-date"),
]


@pytest.mark.parametrize("payload, reason", MALFORMED)
def test_malformed_input_gets_its_reason(payload, reason):
    result = validate(payload)
    assert isinstance(result, Malformed), result
    assert result.reason == reason, result
    assert result.detail and len(result.detail) < 300
    if isinstance(payload, bytes):
        assert spec_click(payload) is None


VALID = [
    pytest.param(line(click_ts="2026-01-01T05:30:00+05:30"), {}, id="iso-plus-0530"),
    pytest.param(line(click_ts="2025-12-31T19:00:00-05:00"), {}, id="iso-minus-0500"),
    pytest.param(line(click_ts="2026-01-01T00:00:00Z"), {}, id="iso-z"),
    pytest.param(line(click_ts="2026-01-01T00:00:00.123Z"), {"click_ts": T0 + 123}, id="iso-millis"),
    pytest.param(line(click_ts="2026-01-01T00:00:00.123456+00:00"), {"click_ts": T0 + 123}, id="iso-micros"),
    pytest.param(line(click_ts="2000-01-01T00:00:00Z"), {"click_ts": FIRST_MS}, id="iso-first-instant"),
    pytest.param(line(click_ts="1999-12-31T20:00:00-04:00"), {"click_ts": FIRST_MS}, id="iso-first-by-offset"),
    pytest.param(line(click_ts="2100-01-01T01:00:00+02:00"), {"click_ts": END_MS - 3_600_000},
                 id="iso-2100-local-is-2099-utc"),
    pytest.param(line(click_ts=FIRST_MS), {"click_ts": FIRST_MS}, id="epoch-first-ms"),
    pytest.param(line(click_ts=END_MS - 1), {"click_ts": END_MS - 1}, id="epoch-last-ms"),
    pytest.param(line(country="us"), {"country": "US"}, id="lowercase-country"),
    pytest.param(line(country="De"), {"country": "DE"}, id="mixed-case-country"),
    pytest.param(line(ip="2001:DB8::1"), {"ip": "2001:db8::1"}, id="ipv6-normalised"),
    pytest.param(line(ip="::1"), {"ip": "::1"}, id="ipv6-loopback"),
    pytest.param(line(ip="::ffff:1.2.3.4"), {"ip": "::ffff:102:304"}, id="ipv4-mapped-ipv6"),
    pytest.param(line(ip="192.168.0.1"), {"ip": "192.168.0.1"}, id="ipv4"),
    pytest.param(line(user_id=None, ip=None, country=None), {}, id="null-optionals"),
    pytest.param(line(user_id=ABSENT, ip=ABSENT, country=ABSENT), {}, id="absent-optionals"),
    pytest.param(line(user_id=""), {"user_id": ""}, id="empty-user-id"),
    pytest.param(line(user_id="u" * 256), {"user_id": "u" * 256}, id="user-id-256"),
    pytest.param(line(event_id="e" * 256), {"event_id": "e" * 256}, id="event-id-256"),
    pytest.param(line(event_id="\u00e9" * 256), {"event_id": "\u00e9" * 256}, id="256-chars-512-bytes"),
    pytest.param(line(event_id="\u00e9\u4e2d"), {"event_id": "\u00e9\u4e2d"}, id="unicode-escapes"),
    pytest.param(line(event_id="\U0001f600"), {"event_id": "\U0001f600"}, id="surrogate-pair-escape"),
    pytest.param(json.dumps({**BASE, "event_id": "\U0001f600\u4e2d"}, ensure_ascii=False).encode(),
                 {"event_id": "\U0001f600\u4e2d"}, id="raw-utf8"),
    pytest.param(b'{"event_id":"first","event_id":"evt-1","ad_id":"ad-1","click_ts":1767225600000}', {},
                 id="duplicate-key-last-wins"),
    pytest.param(line(extra={"deep": [1, 2, {"x": None}]}, more=1e300), {}, id="unknown-fields-ignored"),
    pytest.param(line(extra=BIG), {}, id="300kb-unknown-field"),
    pytest.param(b" \t" + line() + b"\r\n", {}, id="whitespace-around"),
    pytest.param(line().decode(), {}, id="str-payload"),
    pytest.param(dict(BASE), {}, id="dict-payload"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2026, 1, 1, tzinfo=UTC)}, {}, id="typed-timestamp"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2026, 1, 1, 5, 30, tzinfo=datetime.timezone(
        datetime.timedelta(hours=5, minutes=30)))}, {}, id="typed-timestamp-with-offset"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2026, 1, 1)}, {}, id="typed-timestamp-without-zone-is-utc"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2026, 1, 1, 0, 0, 0, 123_999, UTC)}, {"click_ts": T0 + 123},
                 id="typed-timestamp-truncates-to-the-ms"),
    pytest.param({**BASE, "click_ts": datetime.datetime(2000, 1, 1, tzinfo=UTC)}, {"click_ts": FIRST_MS},
                 id="typed-timestamp-first-instant"),
]


@pytest.mark.parametrize("payload, fields", VALID)
def test_valid_edge_case_is_a_click(payload, fields):
    expected = Click(**{**BASE, "user_id": None, "ip": None, "country": None, **fields}, receive_ts=42)
    assert validate(payload, receive_ts=42) == expected


# Genuine bugs in transforms/parse.py, kept strict so that a fix turns them into failures to clean up.
EDGE_VERDICTS = [
    pytest.param(line(country="\u00df"), "invalid_country", id="sharp-s-upper-is-SS"),
    pytest.param(line(country="\ufb06"), "invalid_country", id="st-ligature-upper-is-ST"),
    pytest.param(line(country="\u0131t"), "invalid_country", id="dotless-i-upper-is-IT"),
    pytest.param(line(click_ts="1999-12-31T23:59:59.9996Z"), "out_of_range", id="1999-rounded-into-2000"),
    pytest.param(raw_ts(str(2 ** 64)), "out_of_range", id="int-2**64-read-as-float"),
    pytest.param(raw_ts(str(2 ** 70)), "out_of_range", id="int-2**70-read-as-float"),
    pytest.param(raw_ts(str(-2 ** 63 - 1)), "out_of_range", id="int-below-int64-read-as-float"),
    pytest.param(b"\xef\xbb\xbf" + line(), "invalid_json", id="utf8-bom-is-valid-utf8"),
]


@pytest.mark.parametrize("payload, reason", EDGE_VERDICTS)
def test_edge_verdicts(payload, reason):
    """Non-ASCII text that upper-cases into a code, ISO fractions across 2000-01-01,
    integers beyond 64 bits (which orjson reads as floats), a BOM (valid UTF-8)."""
    result = validate(payload)
    assert isinstance(result, Malformed) and result.reason == reason


@pytest.mark.parametrize("stamp, click_ts", [
    ("2099-12-31T23:59:59.9999Z", END_MS - 1),
    ("2026-01-01T00:00:59.9996Z", T0 + 59_999),
])
def test_iso_fractions_truncate_to_the_millisecond(stamp, click_ts):
    result = validate(line(click_ts=stamp))
    assert isinstance(result, Click) and result.click_ts == click_ts


@pytest.mark.parametrize("payload", [
    pytest.param({**BASE, "click_ts": 2 ** 70}, id="int-beyond-64-bits"),
    pytest.param({**BASE, "event_id": None, "ad_id": "\ud800"}, id="lone-surrogate"),
])
def test_dead_letter_of_an_unserialisable_dict_does_not_raise(payload):
    clicks, [letter] = process([payload])
    assert not clicks and letter.source == "corpus"


def process(payloads, receive_ts=None):
    """Run ParseBatchFn on a bundle of a RawRecord per payload, as a stream's: (clicks in any order,
    dead letters in input order)."""
    fn = ParseBatchFn()
    fn.setup()
    fn.start_bundle()
    for offset, payload in enumerate(payloads, 1):
        assert not list(fn.process(RawRecord(payload, "corpus", offset, receive_ts)))  # judged when the bundle ends
    clicks, dead = collections.Counter(), []
    for output in fn.finish_bundle():
        if isinstance(output, beam.pvalue.TaggedOutput):
            assert output.tag == DEAD_LETTER and isinstance(output.value.value, DeadLetter)
            dead.append(output.value.value)
        else:
            clicks.update(rows(output.value, Click))
    return clicks, dead


def check_dead_letter(letter: DeadLetter, data: bytes):
    assert letter.reason in REASONS
    assert letter.length == len(data)
    assert letter.payload == data[:DEAD_LETTER_PREFIX_BYTES].decode("utf-8", "backslashreplace")
    letter.payload.encode("utf-8")  # storable as text: no surrogates


def check_partition(payloads):
    """Each payload is exactly one click or one dead letter, with validate's verdict."""
    clicks, dead = process(payloads, receive_ts=7)
    verdicts = [validate(payload, 7) for payload in payloads]
    assert clicks == collections.Counter(v for v in verdicts if isinstance(v, Click))
    assert [d.reason for d in dead] == [v.reason for v in verdicts if isinstance(v, Malformed)]
    malformed = [(offset, p) for offset, (p, v) in enumerate(zip(payloads, verdicts), 1) if isinstance(v, Malformed)]
    for letter, (offset, payload) in zip(dead, malformed):
        assert (letter.source, letter.offset) == ("corpus", offset)
        if isinstance(payload, bytes):
            check_dead_letter(letter, payload)
    return clicks, dead


def test_corpus_through_parse_click_fn():
    payloads = [p.values[0] for p in MALFORMED + VALID]
    clicks, dead = check_partition(payloads)
    assert (clicks.total(), len(dead)) == (len(VALID), len(MALFORMED))
    cut = next(d for d in dead if d.length == len(line(event_id=BIG)))
    assert len(cut.payload) == DEAD_LETTER_PREFIX_BYTES


def test_a_dead_letter_cut_inside_a_multibyte_character_stays_printable():
    # 13 bytes of prefix, then 2-byte characters: byte 1024 is the first half of an é.
    data = b'{"event_id":"' + ("\u00e9" * 600).encode() + b'","ad_id":"ad-1","click_ts":1767225600000}'
    _, [letter] = process([data])
    assert letter.reason == "out_of_range"
    check_dead_letter(letter, data)
    assert letter.payload.endswith("\u00e9\\xc3")


def test_oversize_record_is_too_long_with_its_full_length():
    fn = ParseBatchFn()
    fn.setup()
    fn.start_bundle()
    list(fn.process(RawRecord(b'{"event_id":"' + b"x" * 2000, "big.jsonl", 3, oversize=5_000_000)))
    [output] = fn.finish_bundle()
    letter = output.value.value
    assert (letter.reason, letter.length, letter.offset) == ("too_long", 5_000_000, 3)
    assert len(letter.payload) == DEAD_LETTER_PREFIX_BYTES


@pytest.mark.parametrize("processes", [0, 2])
def test_corpus_through_parse_clicks_in_a_pipeline(processes):
    """The bounded path (ParseBatchFn, Arrow tables), in this process or in worker processes,
    gives the same verdicts and counts."""
    payloads = [p.values[0] for p in MALFORMED + VALID if not isinstance(p.values[0], dict)]
    verdicts = [validate(payload) for payload in payloads]
    pipeline = TestPipeline()
    records = [RawRecord(payload, "corpus", offset) for offset, payload in enumerate(payloads, 1)]
    parsed = pipeline | beam.Create(records, reshuffle=False) | ParseClicks(processes)
    clicks = parsed.valid | "Rows" >> beam.FlatMap(rows, Click)
    assert_that(clicks, equal_to([v for v in verdicts if isinstance(v, Click)]), label="Clicks")
    reasons = parsed[DEAD_LETTER] | beam.Map(lambda letter: (letter.offset, letter.reason, letter.length))
    expected = [(offset, v.reason, len(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p))
                for offset, (p, v) in enumerate(zip(payloads, verdicts), 1) if isinstance(v, Malformed)]
    assert_that(reasons, equal_to(expected), label="DeadLetters")
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["read"] == len(payloads) == counters["valid"] + counters["malformed"]
    assert counters["malformed"] == len(expected)
    assert counters["malformed.invalid_json"] == sum(v.reason == "invalid_json" for v in verdicts
                                                     if isinstance(v, Malformed))


# --- property tests -------------------------------------------------------------------------------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # includes lone surrogates
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=20,
)


def as_json(value, ascii_only: bool) -> bytes:
    """Python's json.dumps: writes NaN/Infinity, any int, and lone surrogates (escaped or as raw bytes)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def assert_verdict(result):
    assert type(result) in (Click, Malformed)
    if isinstance(result, Malformed):
        assert result.reason in REASONS and isinstance(result.detail, str)


@SETTINGS
@given(st.binary(max_size=300) | st.binary(min_size=900, max_size=2_000))
def test_random_bytes_never_raise(payload):
    assert_verdict(validate(payload))


@SETTINGS
@given(ANY_TEXT)
def test_random_str_payloads_never_raise(payload):
    assert_verdict(validate(payload))


@SETTINGS
@given(JSON_VALUES, st.booleans())
def test_random_json_never_raises(value, ascii_only):
    data = as_json(value, ascii_only)
    result = validate(data)
    assert_verdict(result)
    if not isinstance(value, dict):
        assert isinstance(result, Malformed)


CODES = sorted(country.alpha_2 for country in pycountry.countries)
ODD_TYPES = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(st.integers(), max_size=2) \
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
IDS = st.text(max_size=300) | st.text(min_size=250, max_size=260) | ODD_TYPES
ZONES = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m)))
ISO_STAMPS = st.builds(
    lambda moment, zone, z: (moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=zone)
                             .isoformat().replace("+00:00", "Z" if z else "+00:00")),
    st.datetimes(min_value=datetime.datetime(1999, 12, 30), max_value=datetime.datetime(2100, 1, 2)),
    ZONES, st.booleans())
TIMESTAMPS = (
    st.integers(FIRST_MS - 5, FIRST_MS + 5) | st.integers(END_MS - 5, END_MS + 5) | st.integers(T0, T0 + 10 ** 6)
    | st.integers() | ISO_STAMPS | ISO_STAMPS.map(lambda s: s[:19])
    | st.sampled_from(["", "now", "2026-13-45T99:00Z", str(T0), "9" * 100]) | ODD_TYPES
)
IPS = st.ip_addresses().map(str) | st.ip_addresses().map(lambda ip: str(ip).upper()) | st.text(max_size=20) \
    | st.sampled_from(["999.1.1.1", "1.2.3", "01.2.3.4", "::1", "::ffff:1.2.3.4"]) | ODD_TYPES
COUNTRIES = st.sampled_from(CODES) | st.sampled_from(CODES).map(str.lower) \
    | st.text("AZaz019 ", max_size=3) | st.sampled_from(["USA", "UK", "XX", "EU", ""]) | ODD_TYPES  # ASCII only
CLICK_LIKE = st.fixed_dictionaries({}, optional={
    "event_id": IDS, "ad_id": IDS, "click_ts": TIMESTAMPS, "user_id": st.text(max_size=300) | ODD_TYPES,
    "ip": IPS, "country": COUNTRIES, "extra": JSON_VALUES,
})


@SETTINGS
@given(CLICK_LIKE, st.booleans())
def test_click_like_records_get_the_spec_verdict(record, ascii_only):
    data = as_json(record, ascii_only)
    result = validate(data)
    assert_verdict(result)
    event = spec_click(data)
    expected = None if event is None else Click(**event)
    if expected is None:
        assert isinstance(result, Malformed), (record, result)
    else:
        assert result == expected
        if "extra" not in record:
            assert validate(record) == expected  # the same dict as a typed source delivers it


def through_batch(payloads) -> tuple:
    """(clicks in any order, dead letters in input order) of one RawBatch through ParseBatchFn, the replay's path."""
    batch = ParseBatchFn()
    batch.setup()
    outputs = list(batch.process(RawBatch("corpus", list(range(1, len(payloads) + 1)), payloads, {})))
    clicks = [c for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput) for c in rows(o, Click)]
    return collections.Counter(clicks), [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]


def per_record(payloads) -> tuple:
    """(clicks in any order, reasons) as `validate` judges the payloads one by one."""
    verdicts = [validate(payload) for payload in payloads]
    return (collections.Counter(v for v in verdicts if isinstance(v, Click)),
            [v.reason for v in verdicts if isinstance(v, Malformed)])


@SETTINGS
@given(st.lists(CLICK_LIKE.map(lambda r: as_json(r, True)) | st.binary(max_size=200)
                | st.binary(min_size=1_000, max_size=1_500) | JSON_VALUES.map(lambda v: as_json(v, False)),
                max_size=15))
def test_every_record_is_exactly_one_click_or_dead_letter(payloads):
    clicks, dead = check_partition(payloads)
    assert clicks.total() + len(dead) == len(payloads)

    batch_clicks, letters = through_batch(payloads)
    assert batch_clicks == collections.Counter(c._replace(receive_ts=None) for c in clicks.elements())
    assert letters == dead


@SETTINGS
@given(st.lists(CLICK_LIKE, max_size=15))
def test_typed_records_in_a_batch_get_the_per_record_verdict(records):
    """Avro and Parquet deliver dicts: the batch path judges them as `validate` does one by one."""
    clicks, letters = through_batch(records)
    assert (clicks, [letter.reason for letter in letters]) == per_record(records)


def test_ignored_fields_get_the_same_verdict_in_a_batch():
    """The batch path skips nothing the per-record path reads: one JSON parser decides for both."""
    payloads = [line()[:-1] + b',"extra":' + value + b"}"
                for value in (b"1e400", b"-1e999", b'"caf\xe9"', nested(2_000).encode(), b"[1, {}]")]
    clicks, letters = through_batch(payloads)
    assert (clicks, [letter.reason for letter in letters]) == per_record(payloads) and clicks.total() == 1


TEXT_OR_NONE = st.none() | st.text(max_size=300) | st.text(min_size=250, max_size=260)
TYPED_ROWS = st.fixed_dictionaries({
    "event_id": TEXT_OR_NONE, "ad_id": TEXT_OR_NONE, "user_id": TEXT_OR_NONE,
    "ip": st.none() | st.ip_addresses().map(str) | st.text(max_size=20),
    "country": st.none() | st.sampled_from(CODES) | st.sampled_from(CODES).map(str.lower) | st.text(max_size=3)})


@SETTINGS
@given(st.lists(TYPED_ROWS, max_size=15), st.lists(st.none() | st.integers(-2 ** 63, 2 ** 63 - 1)
                                                   | st.integers(FIRST_MS - 5, FIRST_MS + 5), min_size=15, max_size=15),
       st.lists(st.none() | ISO_STAMPS | st.text(max_size=30), min_size=15, max_size=15), st.booleans())
def test_parquet_rows_in_a_batch_get_the_per_record_verdict(typed_rows, epoch_ms, iso, as_text):
    """Parquet batches are judged column by column: the verdicts are still those of `validate`."""
    records = [{**row, "click_ts": (iso if as_text else epoch_ms)[i]} for i, row in enumerate(typed_rows)]
    check_as_a_parquet_batch(records, pa.string() if as_text else pa.int64())


def check_as_a_parquet_batch(records, click_ts_type):
    """The records as one Parquet batch (click_ts of `click_ts_type`) through ParseBatchFn get the
    verdicts `validate` gives them one by one."""
    schema = pa.schema([(name, pa.string()) for name in ("event_id", "ad_id", "user_id", "ip", "country")]
                       + [("click_ts", click_ts_type)])
    try:
        table = pa.Table.from_pylist(records, schema=schema)
    except UnicodeError:
        return  # Parquet cannot hold a lone surrogate
    batch = ParseBatchFn()
    batch.setup()
    outputs = list(batch.process(RawBatch("corpus", [-1] * len(records), table, {})))
    clicks = collections.Counter(c for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)
                                 for c in rows(o, Click))
    reasons = [o.value.reason for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert (clicks, reasons) == per_record(records)


MOMENTS = st.none() | st.datetimes(datetime.datetime(1990, 1, 1), datetime.datetime(2110, 1, 1)) | st.sampled_from(
    [datetime.datetime(2000, 1, 1), datetime.datetime(2100, 1, 1)]).flatmap(
    lambda edge: st.integers(-2_000, 2_000).map(lambda us: edge + datetime.timedelta(microseconds=us)))


@SETTINGS
@given(st.lists(st.tuples(TYPED_ROWS, MOMENTS), max_size=15), st.sampled_from(["ms", "us", "ns"]),
       st.sampled_from([None, "UTC", "-07:00"]))
def test_parquet_timestamp_rows_in_a_batch_get_the_per_record_verdict(rows_and_moments, unit, tz):
    """A Parquet timestamp click_ts (any unit, zoned or not: then UTC) gets the verdict `validate`
    gives the datetime a reader would decode, batch or one by one."""
    if unit == "ms":  # a Python datetime holds microseconds; a millisecond column does not
        rows_and_moments = [(row, m and m.replace(microsecond=m.microsecond // 1000 * 1000))
                            for row, m in rows_and_moments]
    records = [{**row, "click_ts": moment if moment is None or tz is None else moment.replace(tzinfo=UTC)}
               for row, moment in rows_and_moments]
    check_as_a_parquet_batch(records, pa.timestamp(unit, tz))


def plain(output):
    """An output as `process` yields it (`finish_bundle` wraps values in a WindowedValue)."""
    if isinstance(output, beam.pvalue.TaggedOutput) and isinstance(output.value, WindowedValue):
        return beam.pvalue.TaggedOutput(output.tag, output.value.value)
    return output.value if isinstance(output, WindowedValue) else output


def records_of(lines: RawLines) -> list:
    """The records of a run of lines: its lines but those of only spaces, tabs and CRs (empty lines)."""
    return [line for line in lines.lines()[1] if line.strip(b" \t\r")]


def test_batches_judged_by_workers_and_here_give_every_verdict_once():
    """With one worker and more batches than it keeps in flight, some are judged in this process
    while it is busy: each record still gets exactly its verdict."""
    payloads = [p.values[0] for p in MALFORMED + VALID if not isinstance(p.values[0], (dict, str))]
    lines = [RawLines("corpus", 1, b"\n".join(payloads[i::6]) + b"\n", {}) for i in range(6)]
    batch = ParseBatchFn(processes=1)
    batch.setup()
    batch.start_bundle()
    outputs = [plain(o) for o in [o for line in lines for o in batch.process(line)] + list(batch.finish_bundle())]
    clicks = collections.Counter(c for o in outputs if isinstance(o, pa.Table) for c in rows(o, Click))
    reasons = sorted(o.value.reason for o in outputs if isinstance(o, beam.pvalue.TaggedOutput))
    expected = [per_record(records_of(line)) for line in lines]
    assert clicks == sum((clicks for clicks, _ in expected), collections.Counter())
    assert reasons == sorted(reason for _, line_reasons in expected for reason in line_reasons)


def test_workers_started_ahead_judge_the_first_bundle_and_stop_with_it():
    """`start_workers` (what the replay launcher calls before building the pipeline) leaves a
    started pool that the first bundle takes and shuts down at its end."""
    payloads = [p.values[0] for p in MALFORMED + VALID if not isinstance(p.values[0], (dict, str))]
    line = RawLines("corpus", 1, b"\n".join(payloads) + b"\n", {})
    start_workers(2)
    started = parse._started_pools[2]
    batch = ParseBatchFn(processes=2)
    batch.setup()
    batch.start_bundle()
    outputs = [plain(o) for o in list(batch.process(line))]
    assert batch._pool is started and 2 not in parse._started_pools
    outputs += [plain(o) for o in batch.finish_bundle()]
    assert batch._pool is None and started._shutdown_thread
    clicks = collections.Counter(c for o in outputs if isinstance(o, pa.Table) for c in rows(o, Click))
    reasons = sorted(o.value.reason for o in outputs if isinstance(o, beam.pvalue.TaggedOutput))
    expected_clicks, expected_reasons = per_record(records_of(line))
    assert clicks == expected_clicks and reasons == sorted(expected_reasons)
