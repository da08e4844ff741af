"""The Bigtable row-key design: round trips, the ranges the two reads scan, salting, idempotent versions."""

import collections
import datetime

import pytest
from hypothesis import given, strategies as st

from sinks import bigtable_table
from sinks.bigtable import (
    SALT_BUCKETS,
    TableRef,
    ad_key,
    ad_range,
    decode_count,
    decode_ranking,
    encode_count,
    encode_ranking,
    minute_key,
    minute_ranges,
    parse_ad_key,
    parse_minute_key,
    parse_top_key,
    top_key,
    top_sliding_key,
    window_version,
)

T0 = 1_767_225_600_000
MINUTE = 60_000
ad_ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256)
minutes = st.integers(946_684_800_000 // MINUTE, 4_102_444_800_000 // MINUTE - 1).map(lambda m: m * MINUTE)


@given(ad_ids, minutes)
def test_keys_round_trip_for_any_ad_id(ad_id, minute):
    assert parse_ad_key(ad_key(ad_id, minute)) == (ad_id, minute)
    assert parse_minute_key(minute_key(minute, ad_id)) == (minute, ad_id)
    assert parse_top_key(top_key(minute)) == minute


@given(st.lists(st.tuples(st.sampled_from(["a", "a#1", "a#1767225600000", "ab", "b", "ad-1", "ad-10"]),
                          st.integers(0, 9)), min_size=1, max_size=40),
       st.integers(0, 9), st.integers(0, 9))
def test_an_ads_range_holds_its_minutes_in_order_and_parsing_tells_extensions_apart(rows, first, last):
    keys = sorted({ad_key(ad_id, T0 + m * MINUTE) for ad_id, m in rows})
    low, high = ad_range("a", T0 + first * MINUTE, T0 + last * MINUTE)
    scanned = [parse_ad_key(key) for key in keys if low <= key < high]
    found = [minute for ad_id, minute in scanned if ad_id == "a"]
    assert found == sorted({T0 + m * MINUTE for ad_id, m in rows if ad_id == "a" and first <= m < last})


@given(st.lists(st.tuples(ad_ids, st.integers(0, 9)), max_size=30), st.integers(0, 9), st.integers(0, 9))
def test_minute_ranges_cover_every_ad_of_the_minutes_and_nothing_else(rows, first, last):
    keys = {minute_key(T0 + m * MINUTE, ad_id) for ad_id, m in rows}
    ranges = minute_ranges(T0 + first * MINUTE, T0 + last * MINUTE)
    scanned = {parse_minute_key(key) for key in keys if any(low <= key < high for low, high in ranges)}
    assert scanned == {(T0 + m * MINUTE, ad_id) for ad_id, m in rows if first <= m < last}


def test_newest_top_row_sorts_first_and_sliding_rankings_sort_apart():
    assert sorted(top_key(T0 + m * MINUTE) for m in range(5)) == [top_key(T0 + m * MINUTE) for m in range(4, -1, -1)]
    sliding = [top_sliding_key(T0 + m * MINUTE, minutes) for m in range(5) for minutes in (1, 5, 60)]
    assert not [key for key in sliding if b"top#" <= key < b"top$"]  # the newest-minute scan never sees them
    assert len(set(sliding)) == len(sliding)


def test_sequential_ad_ids_and_a_minute_spread_over_every_salt_bucket():
    """A monotonically increasing key would put every write of a minute on one tablet."""
    per_ad = collections.Counter(ad_key(f"ad-{n:07d}", T0)[:4] for n in range(16_000))
    per_minute = collections.Counter(minute_key(T0, f"ad-{n:07d}")[:6] for n in range(16_000))
    for spread in (per_ad, per_minute):
        assert len(spread) == SALT_BUCKETS
        assert max(spread.values()) < 1.25 * 16_000 / SALT_BUCKETS
    assert not ad_key("x", T0).startswith(str(T0).encode()) and not minute_key(T0, "x")[4:].startswith(b"17")


@given(st.integers(0, (1 << 63) - 1))
def test_counts_are_8_byte_big_endian(clicks):
    assert len(encode_count(clicks)) == 8 and decode_count(encode_count(clicks)) == clicks


def test_ranking_round_trips_and_every_cell_version_is_its_window():
    ranking = (("ad-2", 9), ("广告", 9), ("ad-1", 1))
    assert decode_ranking(encode_ranking(ranking)) == list(ranking)
    assert window_version(T0) == datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("url, ref", [
    ("bigtable://p/i/t", TableRef("p", "i", "t")),
    ("bigtable://example.com:proj/my-instance/clicks_v2", TableRef("example.com:proj", "my-instance", "clicks_v2")),
])
def test_table_urls(url, ref):
    assert bigtable_table(url) == ref and ref.url == url


@pytest.mark.parametrize("url", ["bigtable://p/i", "bigtable://p/i/t/x", "bigtable:///i/t", "bigtable://p//t",
                                 "bigtable://p/i/t?x=1", "sqlite:///x.db", "bigtable://p/i/t t"])
def test_bad_table_urls(url):
    with pytest.raises(ValueError, match="bigtable://PROJECT/INSTANCE/TABLE"):
        bigtable_table(url)
