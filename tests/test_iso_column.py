"""The ISO-8601 times of a batch read all at once (`iso_to_epoch_ms_column`) agree with `iso_to_epoch_ms`,
the one parser of a time, on every text the column reader reads; the rest it leaves to it."""

import datetime

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from transforms.records import COMMON_ISO_LENGTHS, iso_to_epoch_ms, iso_to_epoch_ms_column


def one_by_one(text: str):
    try:
        return iso_to_epoch_ms(text)
    except ValueError:
        return None


def assert_agrees(texts: list) -> list:
    """The texts the column reader read; on each it agrees with `iso_to_epoch_ms`."""
    values, read = iso_to_epoch_ms_column(pa.array(texts, pa.string()))
    for text, value, was_read in zip(texts, values.tolist(), read.tolist()):
        if was_read:
            assert value == one_by_one(text), text
    return [text for text, was_read in zip(texts, read.tolist()) if was_read]


def test_the_common_forms_are_read_and_agree():
    texts = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.999Z", "2025-12-31T19:00:01.030-05:00",
             "2026-01-01T05:30:00.236+05:30", "2024-02-29T23:59:59.999+23:59", "2000-01-01T00:00:00-00:00",
             "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"]
    assert assert_agrees(texts) == texts


def test_texts_outside_the_common_forms_or_ranges_are_left_to_the_one_by_one_parser():
    texts = ["2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
             "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z",
             "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+05:60", "0000-01-01T00:00:00Z",
             "2026-01-01 00:00:00Z", "2026-01-01t00:00:00Z", "2026-01-01T00:00:00z", "2026-01-01T00:00:00",
             "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.123456Z", "2026-01-01T00:00:00+0530",
             "2026-01-01T00:00:00.12aZ", "2026-01-01T00:00:00*05:30", "2026-01-01T00:00:00+05-30",
             "２026-01-01T00:00:00Z", "2026-01-01T00:00:0１Z", "", "Z" * 24, "not a time at all, honestly"]
    assert assert_agrees(texts) == []


def test_nulls_and_sliced_arrays_are_left_alone():
    column = pa.array([None, "x", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"], pa.string()).slice(1)
    values, read = iso_to_epoch_ms_column(column)
    assert read.tolist() == [False, True, True]
    assert values.tolist()[1:] == [iso_to_epoch_ms("2026-01-01T00:00:00Z"), iso_to_epoch_ms("2026-01-01T00:00:01Z")]
    values, read = iso_to_epoch_ms_column(pa.array([None, None], pa.string()))
    assert not read.any()


# Texts near the common forms: digits anywhere, any separator, offsets and fields out of range.
_DIGIT = st.sampled_from("0123456789")
_CHAR = st.one_of(_DIGIT, st.sampled_from("-:T.Z+ zt/٣"))
_NEAR_ISO = st.lists(_CHAR, min_size=min(COMMON_ISO_LENGTHS) - 1, max_size=max(COMMON_ISO_LENGTHS) + 1).map("".join)
_MOMENTS = st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30),
                        timezones=st.sampled_from([datetime.timezone.utc, datetime.timezone(datetime.timedelta(
                            hours=5, minutes=30)), datetime.timezone(-datetime.timedelta(hours=23, minutes=59))]))


@st.composite
def iso_texts(draw):
    moment = draw(_MOMENTS)
    text = moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds"])))
    text = text.replace("+00:00", "Z") if draw(st.booleans()) else text
    if draw(st.booleans()):  # one character changed
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(_CHAR) + text[at + 1:]
    return text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(iso_texts(), _NEAR_ISO), min_size=1, max_size=50))
def test_any_batch_of_texts_is_read_as_the_one_by_one_parser_reads_it(texts):
    assert_agrees(texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(_MOMENTS, min_size=1, max_size=20))
def test_every_moment_in_a_common_form_is_read(moments):
    texts = [moment.isoformat(timespec="milliseconds") for moment in moments]
    assert assert_agrees(texts) == texts
