"""SQLite, the embedded default sink, with idempotent upserts keyed by the window.

Every pane carries the window's full (accumulated) count, so a row is replaced,
never incremented: writing the same results twice leaves the tables unchanged.
"""

import contextlib
import os
import re
import signal
import sqlite3
import threading
from pathlib import Path
from typing import List, Optional, Set

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from sinks.local_paths import temporary_path_next_to
from sinks.restatement import Restatement, count_restatement
from transforms.records import Aggregates, dimension_set_of

TABLES_SCHEMA = """
CREATE TABLE IF NOT EXISTS clicks_per_minute (
    ad_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (ad_id, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clicks_per_minute_by_filter (
    ad_id TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    filter TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    PRIMARY KEY (ad_id, window_start, filter)
) WITHOUT ROWID;
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
# The readers' indexes (the API asks by window): a replay's staging database gets them only when all its
# rows are in, before the swap (`swap_in`).
INDEXES = """
CREATE INDEX IF NOT EXISTS clicks_per_minute_by_window ON clicks_per_minute (window_start);
CREATE INDEX IF NOT EXISTS clicks_per_minute_by_filter_by_window
    ON clicks_per_minute_by_filter (window_start, filter);
"""
SCHEMA = TABLES_SCHEMA + INDEXES

TABLES = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding", "sink_meta")  # SCHEMA's

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


def connect(path: str, staging: bool = False) -> sqlite3.Connection:
    """A connection with the schema in place; WAL so readers (the API) never block the writer.

    A replay's `staging` database is thrown away unless complete, and no one reads it while it is
    written: no journal, no syncs, and no indexes yet (half the time of its writes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Runners may tear a DoFn down on another thread than the one that set it up.
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    # 16 KiB pages (a new database only): fewer B-tree pages per upsert than the default 4 KiB.
    connection.execute("PRAGMA page_size=16384")
    connection.execute(f"PRAGMA journal_mode={'OFF' if staging else 'WAL'}")
    connection.execute(f"PRAGMA synchronous={'OFF' if staging else 'NORMAL'}")
    connection.execute("PRAGMA cache_size=-262144")  # 256 MiB: a replay upserts 100k+ rows per bundle
    connection.executescript(TABLES_SCHEMA if staging else SCHEMA)
    return connection


def check_writable(path: str) -> None:
    """Fails now, with one line, rather than after a whole run, on a file that is no SQLite database,
    a database that cannot be written, or a directory (ValueError)."""
    if os.path.isdir(path):
        raise ValueError(f"the sink {path} is a directory, not a SQLite database")
    try:
        connection = connect(path)
        try:
            with connection:  # a statement that writes (nothing): refused on a read-only database
                connection.execute("DELETE FROM top_ads WHERE 0")
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise ValueError(f"cannot write the sink {path}: {error}") from None
    if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise ValueError(f"cannot write beside the sink {path}: a replay stages its results in the same directory")


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
    upserts them in one transaction when the bundle ends. Staging a replay, it outputs
    the bundle's row count when done, so that the swap waits for every write."""

    def __init__(self, path: str, table: str, sink_path: Optional[str] = None):
        self._path = path  # the sink's, or a replay's staging database (then sink_path is the sink's)
        self._table = table
        self._staging, self._sink_path = sink_path is not None, sink_path

    def setup(self):
        if self._staging:  # before this replay stages anything: free the space killed replays' staging holds
            remove_stale_staging(self._sink_path)
        self._connection = connect(self._path, staging=self._staging)
        # A worker shutting down (a cancelled job) tears a DoFn down while its bundle may still write on another
        # thread: closing the connection under a running statement crashed the process inside SQLite.
        self._in_use = threading.Lock()

    def start_bundle(self):
        self._rows, self._tables, self._table_rows, self._written = [], [], 0, 0

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
        if self._staging:
            yield GlobalWindows.windowed_value(self._written)

    def _flush(self):
        if self._tables:
            # In primary-key order, each upsert lands next to the last one in the B-tree.
            rows = pa.concat_tables(self._tables)
            rows = rows.sort_by([(name, "ascending") for name in rows.column_names if name != "clicks"])
            self._rows.extend(zip(*(column.to_pylist() for column in rows.columns)))
        if self._rows:
            with self._in_use:
                if self._connection is None:
                    raise RuntimeError(f"the sink {self._path} was closed while a bundle was writing (a cancel)")
                write_rows(self._connection, **{self._table: self._rows})
            self._written += len(self._rows)
        self._rows, self._tables, self._table_rows = [], [], 0

    def teardown(self):
        with self._in_use:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()


# Summed in the staging database before its indexes exist, in one scan of its rows: once the index by window
# is there, SQLite sums by it, looking up each row's count in the table (0.8 s of a 10M-click replay's swap).
STAGED_TOTALS = """
DROP TABLE IF EXISTS staged_totals;
CREATE TABLE staged_totals AS SELECT window_start, SUM(clicks) AS clicks FROM clicks_per_minute GROUP BY window_start;
"""
RESTATED = "CREATE TEMP TABLE restated AS SELECT window_start, clicks FROM staged.staged_totals"
RESTATEMENT = """
SELECT COUNT(*), MIN(restated.window_start), MAX(restated.window_start),
       COALESCE(SUM(restated.clicks < before.clicks), 0)
FROM temp.restated LEFT JOIN (
    SELECT window_start, SUM(clicks) AS clicks FROM main.clicks_per_minute
    WHERE window_start IN (SELECT window_start FROM temp.restated) GROUP BY window_start
) AS before USING (window_start)
"""
SWAP = (
    "DELETE FROM main.clicks_per_minute WHERE window_start IN (SELECT window_start FROM temp.restated)",
    "INSERT INTO main.clicks_per_minute SELECT * FROM staged.clicks_per_minute",
    """DELETE FROM main.clicks_per_minute_by_filter
       WHERE window_start IN (SELECT DISTINCT window_start FROM staged.clicks_per_minute_by_filter)
         AND dimension_set_of(filter) IN (
             SELECT DISTINCT dimension_set_of(filter) FROM staged.clicks_per_minute_by_filter)""",
    "INSERT INTO main.clicks_per_minute_by_filter SELECT * FROM staged.clicks_per_minute_by_filter",
    "DELETE FROM main.top_ads WHERE window_start IN (SELECT DISTINCT window_start FROM staged.top_ads)",
    "INSERT INTO main.top_ads SELECT * FROM staged.top_ads",
    """DELETE FROM main.top_ads_sliding
       WHERE (window_end, minutes) IN (SELECT DISTINCT window_end, minutes FROM staged.top_ads_sliding)""",
    "INSERT INTO main.top_ads_sliding SELECT * FROM staged.top_ads_sliding",
    "DROP TABLE temp.restated",
)


def swap_in(path: str, staging_path: str) -> Restatement:
    """Moves a replay's staged rows into the database at `path` in one transaction, so that a reader
    sees either none of the run or all of it. Each minute the replay holds is restated whole: its
    old rows go (per filter, only the filter dimension sets the replay aggregated), the replay's
    come in. A second identical replay leaves the tables as they were."""
    staged = connect(staging_path, staging=True)  # a run without clicks staged nothing: an empty schema
    try:
        # Indexed alike, each table moves into an empty sink's as its pages (SQLite's transfer optimization);
        # an index built from the whole table at once costs less than one kept up row by row.
        staged.executescript(STAGED_TOTALS + INDEXES)
    finally:
        staged.close()
    connection = connect(path)
    connection.create_function("dimension_set_of", 1, dimension_set_of, deterministic=True)
    try:
        connection.execute("ATTACH DATABASE ? AS staged", (staging_path,))
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(RESTATED)
        restatement = Restatement(*connection.execute(RESTATEMENT).fetchone())
        for statement in SWAP:
            connection.execute(statement)
        connection.commit()
        connection.execute("DETACH DATABASE staged")
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()
    remove_database(staging_path)
    return restatement


STAGING = "staging"


def staging_path_for(path: str) -> str:
    """`.NAME.staging-PID-RANDOM` beside the sink: the PID is the launcher's, which lives as long as the replay."""
    return temporary_path_next_to(path, f"{STAGING}-{os.getpid()}")


def _staging_pattern(path: str) -> "re.Pattern":
    name = re.escape(os.path.basename(os.path.abspath(path)))
    return re.compile(rf"\.{name}\.{STAGING}-(\d+)-[0-9a-f]{{32}}(?:-wal|-shm|-journal)?")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(path: str) -> List[str]:
    """Removes the staging databases a replay killed before its clean-up (SIGKILL, a crash, a power cut) left
    beside the sink at `path`: those whose launcher's PID no longer runs on this machine. Never one of a
    running replay, so two replays into the same sink leave each other alone; a PID reused since is left
    for a later run. Returns the files removed. The sink itself was never touched by them: a replay writes
    it only in `swap_in`'s one transaction."""
    directory = os.path.dirname(os.path.abspath(path))
    pattern = _staging_pattern(path)
    removed: List[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match and not _running(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def remove_database(path: str) -> None:
    """Removes a database file and its WAL and journal files, wherever they exist."""
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


@contextlib.contextmanager
def _signals_held():
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _SwapInFn(beam.DoFn):
    """The replay's last write: the staged rows into the sink, counted as Beam metrics for the summary."""

    def __init__(self, path: str, staging_path: str):
        self._path = path
        self._staging_path = staging_path

    def process(self, _rows_staged):
        with _signals_held():  # a signal waits until the swap is done and recorded, or not begun
            restatement = swap_in(self._path, self._staging_path)
            _SWAPPED.add(self._staging_path)
        count_restatement(restatement)


_SWAPPED: Set[str] = set()  # staging paths swapped in by this process: a launcher asks after an interrupt


class WriteToSqlite(beam.PTransform):
    """Writes `Aggregates` to the SQLite database at `path`, each to its table.

    A stream upserts each pane as it fires. A replay (bounded input) writes into a staging database
    next to the sink and swaps it in at the end, in one transaction (`swap_in`); an interrupted
    replay leaves the sink as it was (`discard` removes the staging database; one killed before it could
    is removed by the next replay into the sink, `remove_stale_staging`). Building it touches
    nothing: the launcher checks the database first (`sinks.meta.check_sink`), the DoFns connect in
    `setup()`.
    """

    def __init__(self, path: str):
        super().__init__()
        self._path = path
        self._staging_path = staging_path_for(path)

    def expand(self, aggregates: Aggregates):
        if not aggregates.per_ad.is_bounded:
            return {table: rows | f"Upsert{Aggregates.label(table)}" >> beam.ParDo(_UpsertFn(self._path, table))
                    for table, rows in aggregates.made()}
        staged = [rows | f"Upsert{Aggregates.label(table)}"
                  >> beam.ParDo(_UpsertFn(self._staging_path, table, sink_path=self._path))
                  for table, rows in aggregates.made()]
        return (staged
                | "AllStaged" >> beam.Flatten()
                | "RowsStaged" >> beam.CombineGlobally(sum)
                | "SwapIn" >> beam.ParDo(_SwapInFn(self._path, self._staging_path)))

    @property
    def swapped(self) -> bool:
        """Whether this replay's results are in the sink (in this process)."""
        return self._staging_path in _SWAPPED

    def discard(self) -> None:
        """Removes what an interrupted replay staged; the sink is as it was."""
        remove_database(self._staging_path)
