"""What a sink holds besides its rows: the window size it was written with and the filters it has
aggregated (the union over runs). A second window size in one sink would add its windows to the
first's in every sum, and a filter never aggregated would answer 0 for clicks that happened.

SQLite keeps both in `sink_meta (key, value)`: `window_seconds` ("60") and `filters`, a JSON list
of dimension sets (["country", "country+user_id"]). Bigtable keeps them in one row of the sink's
table (`sinks.bigtable.META_ROW`): cell `window_seconds` and one cell per dimension set, so two
runs that add sets at once both keep theirs. A sink written before they were recorded holds
one-minute windows (no run had another size) and the filters its rows show; the first launcher
that checks it records both.
"""

import datetime
import json
import sqlite3
from dataclasses import dataclass
from typing import FrozenSet, Optional, Sequence, Set
from urllib.parse import urlparse

from sinks import BIGTABLE_SCHEME, SQLITE_SCHEME, bigtable_table, sqlite_path
from transforms.records import FILTER_DIMENSIONS, MINUTE_MS, SET_JOIN, dimension_set, dimension_set_of

LEGACY_WINDOW_SECONDS = MINUTE_MS // 1000
WINDOW_KEY, FILTERS_KEY = "window_seconds", "filters"
BIGTABLE_WINDOW = WINDOW_KEY.encode()
BIGTABLE_FILTER_PREFIX = b"filter:"
# One fixed version for every metadata cell, so that recording the same facts again changes no cell.
BIGTABLE_VERSION = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


@dataclass(frozen=True)
class SinkMeta:
    window_seconds: Optional[int]  # None: nothing written yet, any size may start the sink
    filters: FrozenSet[str]  # dimension sets, each sorted and joined by '+': "country+user_id"

    @property
    def dimensions(self):
        """Every dimension some held set names, in FILTER_DIMENSIONS' order."""
        named = {name for dimension_set in self.filters for name in dimension_set.split(SET_JOIN)}
        return [name for name in FILTER_DIMENSIONS if name in named]


def check_sink(url: str, window_seconds: int, filter_dimensions: Sequence[Sequence[str]]) -> SinkMeta:
    """Before a run (the launchers call it; the sinks' constructors touch nothing): refuses (ValueError,
    one line) a sink that cannot be written (no SQLite database, read-only, a directory; a Bigtable
    table that is missing, lacks its families or cannot be reached) or a window size other than the
    sink's, else records the size and adds the run's filters to the sink's. Returns what the sink holds now."""
    wanted = frozenset(dimension_set(dimensions) for dimensions in filter_dimensions)
    scheme = urlparse(url).scheme
    if scheme == SQLITE_SCHEME:
        return _record_sqlite(url, window_seconds, wanted)
    if scheme == BIGTABLE_SCHEME:
        return _record_bigtable(url, window_seconds, wanted)
    raise ValueError(f"unknown sink {url!r}: expected sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")


def _refuse_another_window(url: str, held: SinkMeta, window_seconds: int) -> None:
    if held.window_seconds not in (None, window_seconds):
        raise ValueError(
            f"{url} holds {held.window_seconds}-second windows; --window-seconds {window_seconds} would add "
            f"other windows to the same sums: use --window-seconds {held.window_seconds} or a new sink")


def recorded_sqlite(connection: sqlite3.Connection) -> Optional[SinkMeta]:
    """The recorded metadata; None for a database written before it was recorded (or never)."""
    recorded = dict(connection.execute("SELECT key, value FROM sink_meta").fetchall())
    if WINDOW_KEY not in recorded:
        return None
    return SinkMeta(int(recorded[WINDOW_KEY]), frozenset(json.loads(recorded.get(FILTERS_KEY, "[]"))))


def inferred_sqlite(connection: sqlite3.Connection) -> SinkMeta:
    """What a database without metadata holds, from its rows (a scan of the filter texts)."""
    written = connection.execute("SELECT EXISTS (SELECT 1 FROM clicks_per_minute)").fetchone()[0]
    texts = connection.execute("SELECT DISTINCT filter FROM clicks_per_minute_by_filter")
    return SinkMeta(LEGACY_WINDOW_SECONDS if written else None, frozenset(dimension_set_of(text) for text, in texts))


def _record_sqlite(url: str, window_seconds: int, wanted: FrozenSet[str]) -> SinkMeta:
    from sinks.sqlite import check_writable, connect
    path = sqlite_path(url)
    check_writable(path)
    try:
        connection = connect(path)
        try:
            connection.execute("BEGIN IMMEDIATE")  # two launchers at once: one checks and records, then the other
            held = recorded_sqlite(connection) or inferred_sqlite(connection)
            _refuse_another_window(url, held, window_seconds)
            now = SinkMeta(window_seconds, held.filters | wanted)
            connection.executemany(
                "INSERT OR REPLACE INTO sink_meta (key, value) VALUES (?, ?)",
                [(WINDOW_KEY, str(now.window_seconds)), (FILTERS_KEY, json.dumps(sorted(now.filters)))])
            connection.commit()
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise ValueError(f"cannot use {path} as an adclick SQLite database: {error}") from None
    return now


def recorded_bigtable(table, **read) -> Optional[SinkMeta]:
    """The recorded metadata of a Bigtable sink; None if there is none. `read`: the reads' retry."""
    from google.cloud.bigtable import row_filters

    from sinks.bigtable import META_ROW, TOP
    row = table.read_row(META_ROW, filter_=row_filters.CellsColumnLimitFilter(1), **read)
    cells = row.cells.get(TOP, {}) if row else {}
    if BIGTABLE_WINDOW not in cells:
        return None
    return SinkMeta(int(cells[BIGTABLE_WINDOW][0].value),
                    frozenset(qualifier[len(BIGTABLE_FILTER_PREFIX):].decode()
                              for qualifier in cells if qualifier.startswith(BIGTABLE_FILTER_PREFIX)))


def inferred_bigtable(table, **read) -> SinkMeta:
    """What a table without metadata holds, from its rows: a scan of every per-ad row's qualifiers."""
    from google.cloud.bigtable import row_filters

    from sinks.bigtable import AD_PREFIX, ALL_CLICKS, COUNTS
    prefix = AD_PREFIX.encode()
    filters: Set[str] = set()
    written = False
    for row in table.read_rows(start_key=prefix, end_key=prefix[:-1] + b"$", filter_=row_filters.RowFilterChain([
            row_filters.FamilyNameRegexFilter(COUNTS), row_filters.CellsColumnLimitFilter(1),
            row_filters.StripValueTransformerFilter(True)]), **read):
        written = True
        filters.update(dimension_set_of(qualifier.decode("utf-8", "surrogatepass"))
                       for qualifier in row.cells.get(COUNTS, {}) if qualifier != ALL_CLICKS)
    return SinkMeta(LEGACY_WINDOW_SECONDS if written else None, frozenset(filters))


def _record_bigtable(url: str, window_seconds: int, wanted: FrozenSet[str]) -> SinkMeta:
    from google.api_core import exceptions
    from google.cloud.bigtable import row_filters

    from sinks.bigtable import META_ROW, TOP, BigtableNotReady, check_table, client, describe_error
    ref = bigtable_table(url)
    check_table(ref)
    table = client(ref.project).instance(ref.instance).table(ref.table)
    try:
        held = recorded_bigtable(table) or inferred_bigtable(table)
        _refuse_another_window(url, held, window_seconds)
        # The size is set only where none is: of two first runs at once, the second finds the first's below.
        row = table.conditional_row(META_ROW, filter_=row_filters.RowFilterChain([
            row_filters.FamilyNameRegexFilter(TOP), row_filters.ColumnQualifierRegexFilter(BIGTABLE_WINDOW)]))
        row.set_cell(TOP, BIGTABLE_WINDOW, str(window_seconds).encode(), timestamp=BIGTABLE_VERSION, state=False)
        for name in sorted(held.filters | wanted):
            for state in (True, False):
                row.set_cell(TOP, BIGTABLE_FILTER_PREFIX + name.encode(), b"", timestamp=BIGTABLE_VERSION, state=state)
        row.commit()
        now = recorded_bigtable(table)
    except (exceptions.GoogleAPICallError, exceptions.RetryError) as error:
        raise BigtableNotReady(f"cannot record the window size and filters in {url}: {describe_error(error)}") from None
    if now is None:
        raise BigtableNotReady(f"{url} did not keep the window size and filters just recorded in it")
    _refuse_another_window(url, now, window_seconds)
    return now
