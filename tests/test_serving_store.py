"""The store interface answers the same on SQLite and Bigtable, and what plain Python counts."""

import sqlite3

import pytest

from serving.store import open_store
from sinks.sqlite import SCHEMA, write_rows
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


def test_the_sqlite_store_only_reads_its_database(tmp_path):
    """No schema, no journal mode, no file of the API's own: a database in rollback-journal mode stays so."""
    path = tmp_path / "sink.db"
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    write_rows(connection, per_ad=[("ad-1", T0, 3)])
    connection.close()
    before = path.read_bytes()
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.clicks("ad-1", T0, T0 + MINUTE, None) == 3 and store.latest_minute() is None
        with pytest.raises(Exception, match="readonly"):
            store._connection().execute("DELETE FROM clicks_per_minute")
    finally:
        store.close()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["sink.db"]


def test_a_database_without_the_sinks_tables_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE clicks_per_minute (ad_id, window_start, clicks)")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="lacks clicks_per_minute_by_filter, top_ads, top_ads_sliding, sink_meta"):
        open_store(f"sqlite:///{path}")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    with pytest.raises(ValueError, match="is not an adclick SQLite database: file is not a database"):
        open_store(f"sqlite:///{junk}")
    assert path.read_bytes() == before and junk.read_text() == "not a database"
