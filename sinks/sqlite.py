"""SQLite, the embedded default sink, with idempotent upserts keyed by the window.

Every pane carries the window's full (accumulated) count, so a row is replaced,
never incremented: writing the same results twice leaves the tables unchanged.
"""

import sqlite3
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

SCHEMA = """
CREATE TABLE IF NOT EXISTS clicks_per_minute (
    ad_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (ad_id, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clicks_per_minute_by_window ON clicks_per_minute (window_start);
CREATE TABLE IF NOT EXISTS clicks_per_minute_by_filter (
    ad_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    filter TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (ad_id, window_start, filter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clicks_per_minute_by_filter_by_window
    ON clicks_per_minute_by_filter (window_start, filter);
CREATE TABLE IF NOT EXISTS top_ads (
    window_start INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    ad_id TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (window_start, rank)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS top_ads_sliding (
    window_end INTEGER NOT NULL,
    minutes INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    ad_id TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (window_end, minutes, rank)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sink_meta (  -- the window size and filters the tables hold (sinks/meta.py)
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

UPSERT_PER_AD = """
INSERT INTO clicks_per_minute (ad_id, window_start, clicks) VALUES (?, ?, ?)
ON CONFLICT (ad_id, window_start) DO UPDATE SET clicks = excluded.clicks
"""
UPSERT_PER_FILTER = """
INSERT INTO clicks_per_minute_by_filter (ad_id, window_start, filter, clicks) VALUES (?, ?, ?, ?)
ON CONFLICT (ad_id, window_start, filter) DO UPDATE SET clicks = excluded.clicks
"""
MAX_BUFFERED_ROWS = 100_000
DELETE_TOP = "DELETE FROM top_ads WHERE window_start = ?"
INSERT_TOP = "INSERT INTO top_ads (window_start, rank, ad_id, clicks) VALUES (?, ?, ?, ?)"
DELETE_TOP_SLIDING = "DELETE FROM top_ads_sliding WHERE window_end = ? AND minutes = ?"
INSERT_TOP_SLIDING = "INSERT INTO top_ads_sliding (window_end, minutes, rank, ad_id, clicks) VALUES (?, ?, ?, ?, ?)"


def connect(path: str) -> sqlite3.Connection:
    """A connection with the schema in place; WAL so readers (the API) never block the writer."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Runners may tear a DoFn down on another thread than the one that set it up.
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    # 16 KiB pages (a new database only): fewer B-tree pages per upsert than the default 4 KiB.
    connection.execute("PRAGMA page_size=16384")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: a replay upserts 100k+ rows per bundle
    connection.executescript(SCHEMA)
    return connection


def write_rows(connection: sqlite3.Connection, per_ad=(), per_filter=(), top_ads=(), top_ads_sliding=()) -> None:
    """Upserts aggregate rows in one transaction; a ranking replaces its window's whole ranking."""
    with connection:
        connection.executemany(UPSERT_PER_AD, per_ad)
        connection.executemany(UPSERT_PER_FILTER, per_filter)
        for top in top_ads:
            connection.execute(DELETE_TOP, (top.window_start,))
            connection.executemany(
                INSERT_TOP,
                [(top.window_start, rank, ad_id, clicks) for rank, (ad_id, clicks) in enumerate(top.ranking, 1)])
        for top in top_ads_sliding:
            connection.execute(DELETE_TOP_SLIDING, (top.window_end, top.minutes))
            connection.executemany(
                INSERT_TOP_SLIDING,
                [(top.window_end, top.minutes, rank, ad_id, clicks)
                 for rank, (ad_id, clicks) in enumerate(top.ranking, 1)])


class _UpsertFn(beam.DoFn):
    """Buffers a bundle's rows of one table (or a replay's Arrow tables of rows) and
    upserts them in one transaction when the bundle ends."""

    def __init__(self, path: str, table: str):
        self._path = path
        self._table = table

    def setup(self):
        self._connection = connect(self._path)

    def start_bundle(self):
        self._rows, self._tables, self._table_rows = [], [], 0

    def process(self, row):
        if isinstance(row, pa.Table):
            self._tables.append(row)
            self._table_rows += len(row)
        else:
            self._rows.append(row)
        if len(self._rows) + self._table_rows >= MAX_BUFFERED_ROWS:  # a replay's bundle holds every window
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if self._tables:
            # In primary-key order, each upsert lands next to the last one in the B-tree.
            rows = pa.concat_tables(self._tables)
            rows = rows.sort_by([(name, "ascending") for name in rows.column_names if name != "clicks"])
            self._rows.extend(zip(*(column.to_pylist() for column in rows.columns)))
        if self._rows:
            write_rows(self._connection, **{self._table: self._rows})
        self._rows, self._tables, self._table_rows = [], [], 0

    def teardown(self):
        self._connection.close()


class WriteToSqlite(beam.PTransform):
    """Writes {"per_ad", "per_filter", "top_ads"[, "top_ads_sliding"]} to the SQLite database at `path`."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path
        connect(path).close()

    def expand(self, aggregates):
        labels = {"per_ad": "UpsertPerAd", "per_filter": "UpsertPerFilter", "top_ads": "ReplaceTopAds",
                  "top_ads_sliding": "ReplaceTopAdsSliding"}
        return {
            table: aggregates[table] | label >> beam.ParDo(_UpsertFn(self._path, table))
            for table, label in labels.items() if table in aggregates
        }
