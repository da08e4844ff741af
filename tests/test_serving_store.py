"""The store interface answers the same on SQLite and Bigtable, and what plain Python counts."""

import pytest

from serving.store import open_store
from tests.serving_cases import (
    ADS,
    MINUTE,
    SLIDING_MINUTES,
    T0,
    TOP_N,
    expected_clicks,
    expected_per_minute,
    expected_top,
)

RANGES = [(T0, T0 + MINUTE), (T0 + MINUTE, T0 + 2 * MINUTE), (T0, T0 + 5 * MINUTE), (T0 + 2 * MINUTE, T0 + 3 * MINUTE),
          (T0 - 10 * MINUTE, T0 + 10 * MINUTE), (T0, T0)]
FILTERS = [None, "country=US", "country=JP", "country=unknown", "country=DE,user_id=u1", "country=US,user_id=unknown"]


@pytest.fixture(scope="module")
def store(loaded_sink):
    opened = open_store(loaded_sink)
    yield opened
    opened.close()


def test_clicks_of_one_ad(store):
    for ad_id in ADS:
        for start, end in RANGES:
            for filter_text in FILTERS:
                assert store.clicks_per_minute(ad_id, start, end, filter_text) == \
                    expected_per_minute(ad_id, start, end, filter_text), (ad_id, start, end, filter_text)
                assert store.clicks(ad_id, start, end, filter_text) == expected_clicks(ad_id, start, end, filter_text)


def test_top_ads_over_windows_filters_and_counts(store):
    for start, end in RANGES:
        for filter_text in FILTERS:
            for count in (1, 2, TOP_N, TOP_N + 1, 100):
                assert store.top_ads(start, end, filter_text, count) == expected_top(start, end, filter_text, count), \
                    (start, end, filter_text, count)


def test_the_stored_top_n_of_a_minute_and_of_the_sliding_minutes(store):
    assert store.top_of_minute(T0) == expected_top(T0, T0 + MINUTE, count=TOP_N)
    assert store.top_of_minute(T0 + 2 * MINUTE) is None
    for end in range(T0 + MINUTE, T0 + 9 * MINUTE, MINUTE):  # none is stored for windows without clicks
        expected = expected_top(end - SLIDING_MINUTES * MINUTE, end, count=TOP_N) or None
        assert store.top_of_window(end, SLIDING_MINUTES) == expected, end
    assert store.top_of_window(T0 + 5 * MINUTE, SLIDING_MINUTES + 1) is None
    assert store.latest_minute() == T0 + 3 * MINUTE


def test_a_missing_sqlite_database_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SQLite database"):
        open_store(f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(ValueError, match="unknown sink"):
        open_store("mysql://x")
