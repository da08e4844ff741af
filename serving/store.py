"""What the query API reads, behind one interface with a SQLite and a Bigtable implementation.

Both answer the same questions from the sink's tables, so the API answers the same on both:
clicks of one ad per minute over a time range, clicks of every ad over a time range (for the
top N over several minutes or with a filter), the stored top N of one minute, and the newest
minute written. Times are epoch ms of minute starts; ranges are [start, end).

A sink may hold windows shorter than a minute (`--window-seconds 30`): the store sums each
minute's windows, and ranks from those sums, since the stored rankings are per window. What
the sink holds (its window size, its filters: sinks/meta.py) is read again every few seconds,
so that a run that starts while the API serves is seen.
"""

import abc
import contextlib
import heapq
import os
import sqlite3
import threading
import time
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlparse

from sinks import BIGTABLE_SCHEME, SQLITE_SCHEME, bigtable_table, meta, sqlite_path
from sinks.meta import SinkMeta
from transforms.records import MINUTE_MS, minute_start

Ranking = List[Tuple[str, int]]
META_REFRESH_SECONDS = 5.0


class StoreUnavailable(Exception):
    """The store cannot answer now (unreachable, timed out): the API answers 503."""


def rank(totals: Mapping[str, int], count: int) -> Ranking:
    """The `count` ads with most clicks, ties by ad_id: the order of the sink's top_ads."""
    return heapq.nsmallest(count, totals.items(), key=lambda item: (-item[1], item[0]))


class Store(abc.ABC):
    """Reads of the aggregates. Filters are normalized filter texts such as `country=US`."""

    kind: str
    reads_inline = False  # True where a read takes microseconds: the API reads on its event loop, not in threads
    _meta: Optional[Tuple[float, SinkMeta]] = None  # (when read, what the sink holds)
    _inferred: Optional[SinkMeta] = None

    @abc.abstractmethod
    def clicks_per_window(self, ad_id: str, start: int, end: int, filter_text: Optional[str]) -> Dict[int, int]:
        """{window start: clicks} of one ad, windows without clicks left out."""

    @abc.abstractmethod
    def clicks_by_ad(self, start: int, end: int, filter_text: Optional[str]) -> Dict[str, int]:
        """{ad_id: clicks summed over the windows in [start, end)} of every ad with clicks."""

    @abc.abstractmethod
    def top_of_minute(self, minute: int) -> Optional[Ranking]:
        """The top N the pipeline stored for one minute, best first; None if none was."""

    @abc.abstractmethod
    def top_of_window(self, end: int, minutes: int) -> Optional[Ranking]:
        """The top N the pipeline stored for the `minutes` minutes ending (exclusive) at `end`
        (its sliding top, `--top-sliding-minutes`); None if none was."""

    @abc.abstractmethod
    def latest_window(self) -> Optional[int]:
        """The start of the newest window with any clicks; None for an empty store."""

    @abc.abstractmethod
    def recorded_meta(self) -> Optional[SinkMeta]:
        """The window size and filters the sink recorded; None if it has not (written before they were)."""

    @abc.abstractmethod
    def inferred_meta(self) -> SinkMeta:
        """What a sink that recorded nothing holds, from its rows (a scan)."""

    def data_version(self) -> Optional[int]:
        """A number that changes whenever another connection commits to the store, read on the calling thread
        (SQLite's PRAGMA data_version, comparable only on one thread); None where the store has none."""
        return None

    def close(self) -> None:  # noqa: B027 (not abstract: a store that holds no connection has nothing to do)
        """Releases connections."""

    def meta(self) -> SinkMeta:
        """What the sink holds, read again after META_REFRESH_SECONDS; inferred once if it recorded nothing."""
        now = time.monotonic()
        if self._meta is None or now - self._meta[0] > META_REFRESH_SECONDS:
            held = self.recorded_meta()
            if held is None:
                if self._inferred is None:
                    self._inferred = self.inferred_meta()
                held = self._inferred
            self._meta = (now, held)
        return self._meta[1]

    def clicks_per_minute(self, ad_id: str, start: int, end: int, filter_text: Optional[str]) -> Dict[int, int]:
        """{minute: clicks} of one ad, minutes without clicks left out."""
        by_minute = {}
        for window, clicks in self.clicks_per_window(ad_id, start, end, filter_text).items():
            by_minute[minute_start(window)] = by_minute.get(minute_start(window), 0) + clicks
        return by_minute

    def latest_minute(self) -> Optional[int]:
        """The newest minute with any clicks; None for an empty store."""
        latest = self.latest_window()
        return None if latest is None else minute_start(latest)

    def clicks(self, ad_id: str, start: int, end: int, filter_text: Optional[str]) -> int:
        return sum(self.clicks_per_window(ad_id, start, end, filter_text).values())

    def ranked(self, start: int, end: int, filter_text: Optional[str], count: int) -> Ranking:
        """The top `count` ads summed over [start, end): reads every ad of every minute."""
        return rank(self.clicks_by_ad(start, end, filter_text), count)

    def stored_top(self, start: int, end: int, filter_text: Optional[str], count: int) -> Optional[Ranking]:
        """The top `count` ads over [start, end) from a ranking the pipeline stored for exactly these minutes,
        where there is one with enough ads (a sink of one-minute windows); else None: `ranked` must sum."""
        if filter_text is None and self.meta().window_seconds in (None, MINUTE_MS // 1000):
            minutes = (end - start) // MINUTE_MS
            stored = self.top_of_minute(start) if minutes == 1 else self.top_of_window(end, minutes)
            if stored is not None and len(stored) >= count:
                return stored[:count]
        return None

    def top_ads(self, start: int, end: int, filter_text: Optional[str], count: int) -> Ranking:
        """The top `count` ads over [start, end): the stored ranking if there is one, else the sum of the
        per-window rows."""
        stored = self.stored_top(start, end, filter_text, count)
        return stored if stored is not None else self.ranked(start, end, filter_text, count)


class SqliteStore(Store):
    """The SQLite sink's tables, read with one read-only connection per thread: the API never writes to
    the database, its schema or its settings. `open_store` checks the database first."""

    kind = "sqlite"
    reads_inline = True  # indexed reads of a local file; the API sends the sums of `ranked` to a thread

    def __init__(self, path: str):
        self._path = path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = read_only(self._path)
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _unavailable_on_error(self):
        try:
            yield
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite: {error}") from None

    def _query(self, sql: str, parameters: tuple) -> list:
        with self._unavailable_on_error():
            return self._connection().execute(sql, parameters).fetchall()

    def clicks_per_window(self, ad_id, start, end, filter_text):
        if filter_text is None:
            rows = self._query(
                "SELECT window_start, clicks FROM clicks_per_minute"
                " WHERE ad_id = ? AND window_start >= ? AND window_start < ?", (ad_id, start, end))
        else:
            rows = self._query(
                "SELECT window_start, clicks FROM clicks_per_minute_by_filter"
                " WHERE ad_id = ? AND window_start >= ? AND window_start < ? AND filter = ?",
                (ad_id, start, end, filter_text))
        return dict(rows)

    def _totals_sql(self, filter_text):
        if filter_text is None:
            return ("SELECT ad_id, SUM(clicks) AS total FROM clicks_per_minute"
                    " WHERE window_start >= ? AND window_start < ? GROUP BY ad_id", ())
        return ("SELECT ad_id, SUM(clicks) AS total FROM clicks_per_minute_by_filter"
                " WHERE window_start >= ? AND window_start < ? AND filter = ? GROUP BY ad_id", (filter_text,))

    def clicks_by_ad(self, start, end, filter_text):
        sql, extra = self._totals_sql(filter_text)
        return dict(self._query(sql, (start, end) + extra))

    def ranked(self, start, end, filter_text, count):
        sql, extra = self._totals_sql(filter_text)
        return [tuple(row) for row in self._query(
            sql + " ORDER BY total DESC, ad_id LIMIT ?", (start, end) + extra + (count,))]

    def top_of_minute(self, minute):
        rows = self._query("SELECT ad_id, clicks FROM top_ads WHERE window_start = ? ORDER BY rank", (minute,))
        return [tuple(row) for row in rows] or None

    def top_of_window(self, end, minutes):
        rows = self._query("SELECT ad_id, clicks FROM top_ads_sliding WHERE window_end = ? AND minutes = ?"
                           " ORDER BY rank", (end, minutes))
        return [tuple(row) for row in rows] or None

    def latest_window(self):
        return self._query("SELECT MAX(window_start) FROM top_ads", ())[0][0]

    def data_version(self):
        return self._query("PRAGMA data_version", ())[0][0]

    def recorded_meta(self):
        with self._unavailable_on_error():
            return meta.recorded_sqlite(self._connection())

    def inferred_meta(self):
        with self._unavailable_on_error():
            return meta.inferred_sqlite(self._connection())


class BigtableStore(Store):
    """The Bigtable sink's rows (see sinks/bigtable.py for the key design).

    Every read has a deadline, so an unreachable Bigtable makes a 503, never a hung request.
    `open_store` checks the table first.
    """

    kind = "bigtable"
    READ_DEADLINE_SECONDS = 10.0

    def __init__(self, ref):
        from google.cloud.bigtable.table import DEFAULT_RETRY_READ_ROWS

        from sinks import bigtable
        self._bt = bigtable
        self._table = bigtable.client(ref.project).instance(ref.instance).table(ref.table)
        self._retry = DEFAULT_RETRY_READ_ROWS.with_deadline(self.READ_DEADLINE_SECONDS)

    def _counts_filter(self, filter_text):
        from google.cloud.bigtable import row_filters
        qualifier = self._bt.ALL_CLICKS if filter_text is None else filter_text.encode()
        return row_filters.RowFilterChain([
            row_filters.ColumnRangeFilter(self._bt.COUNTS, qualifier, qualifier),
            row_filters.CellsColumnLimitFilter(1),
        ])

    @contextlib.contextmanager
    def _unavailable_on_error(self):
        from google.api_core import exceptions
        try:
            yield
        except (exceptions.GoogleAPICallError, exceptions.RetryError) as error:
            raise StoreUnavailable(f"Bigtable: {' '.join(str(error).split())[:200]}") from None

    def _read(self, **kwargs):
        with self._unavailable_on_error():
            return list(self._table.read_rows(retry=self._retry, **kwargs))

    def _count(self, row) -> int:
        cells = next(iter(row.cells[self._bt.COUNTS].values()))
        return self._bt.decode_count(cells[0].value)

    def clicks_per_window(self, ad_id, start, end, filter_text):
        first, last = self._bt.ad_range(ad_id, start, end)
        counts = {}
        for row in self._read(start_key=first, end_key=last, filter_=self._counts_filter(filter_text)):
            row_ad, minute = self._bt.parse_ad_key(row.row_key)
            if row_ad == ad_id:  # an ad_id that extends this one with '#' can sort inside the range
                counts[minute] = self._count(row)
        return counts

    def clicks_by_ad(self, start, end, filter_text):
        from google.cloud.bigtable.row_set import RowSet
        row_set = RowSet()
        for first, last in self._bt.minute_ranges(start, end):
            row_set.add_row_range_from_keys(first, last)
        totals = {}
        for row in self._read(row_set=row_set, filter_=self._counts_filter(filter_text)):
            _, ad_id = self._bt.parse_minute_key(row.row_key)
            totals[ad_id] = totals.get(ad_id, 0) + self._count(row)
        return totals

    def _ranking(self, key: bytes) -> Optional[Ranking]:
        from google.cloud.bigtable import row_filters
        rows = self._read(start_key=key, end_key=key, end_inclusive=True,
                          filter_=row_filters.CellsColumnLimitFilter(1))
        if not rows:
            return None
        return self._bt.decode_ranking(rows[0].cells[self._bt.TOP][self._bt.RANKING][0].value)

    def top_of_minute(self, minute):
        return self._ranking(self._bt.top_key(minute))

    def top_of_window(self, end, minutes):
        return self._ranking(self._bt.top_sliding_key(end, minutes))

    def latest_window(self):
        from google.cloud.bigtable import row_filters
        prefix = self._bt.TOP_PREFIX.encode()
        rows = self._read(start_key=prefix, end_key=prefix[:-1] + b"$", limit=1,
                          filter_=row_filters.RowFilterChain([
                              row_filters.CellsRowLimitFilter(1), row_filters.StripValueTransformerFilter(True)]))
        return self._bt.parse_top_key(rows[0].row_key) if rows else None

    def recorded_meta(self):
        with self._unavailable_on_error():
            return meta.recorded_bigtable(self._table, retry=self._retry)

    def inferred_meta(self):
        with self._unavailable_on_error():
            # A scan of the whole table, once: the client's retry, not the short deadline of a query's reads.
            return meta.inferred_bigtable(self._table)


def read_only(path: str) -> sqlite3.Connection:
    """A connection that can only read the database at `path` (a `mode=ro` URI): it creates no file and no table."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)


def check_sqlite_store(path: str) -> None:
    """Raises FileNotFoundError or ValueError, with one line, unless `path` is an adclick SQLite database
    with every table the API reads (a database the sink wrote, or checked before a run)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no SQLite database at {path}: run `adclick replay --sink sqlite:///{path}` first")
    try:
        connection = read_only(path)
        try:
            tables = {name for name, in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path} is not an adclick SQLite database: {error}") from None
    from sinks.sqlite import TABLES
    missing = [table for table in TABLES if table not in tables]
    if missing:
        raise ValueError(f"{path} is not an adclick SQLite database, or one an older adclick wrote: it lacks "
                         f"{', '.join(missing)} (a replay or a stream into it adds them)")


def open_store(url: str) -> Store:
    """The store a sink URL names, once it is known to answer; raises ValueError / FileNotFoundError with a
    one-line reason (`adclick serve` says it and stops before it listens)."""
    scheme = urlparse(url).scheme
    if scheme == SQLITE_SCHEME:
        path = sqlite_path(url)
        check_sqlite_store(path)
        return SqliteStore(path)
    if scheme == BIGTABLE_SCHEME:
        from sinks.bigtable import check_table
        ref = bigtable_table(url)
        check_table(ref)
        return BigtableStore(ref)
    raise ValueError(f"unknown sink {url!r}: expected sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")
