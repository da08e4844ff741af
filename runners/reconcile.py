"""`adclick reconcile`: a sink's tables over a time range, checked against a recompute from the raw archive.

The recompute is `adclick replay` itself (the one DAG, with the sink's window size and filters) into a
scratch SQLite database; its rows in [from, to) are what the sink should hold. Every table is compared
key by key, and each difference is reported. With `--restate` the windows that differ are rewritten
whole, so that a row or a filter cell the recompute does not have is deleted too: a replay into
Bigtable cannot delete one. Without `--restate` the sink is only read. This is also how clicks that
came later than a stream's allowed lateness get counted: the raw archive holds them.
"""

import argparse
import contextlib
import io
import json
import re
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

from pipelines.config import AggregateConfig
from runners import options as cli_options, replay
from sinks import BIGTABLE_SCHEME, SQLITE_SCHEME, bigtable_table, sqlite_path
from sinks.local_paths import replace_file
from sinks.meta import LEGACY_WINDOW_SECONDS, SinkMeta
from transforms.records import MINUTE_MS, dimension_set_of, epoch_ms_to_iso, iso_to_epoch_ms

PROG = "adclick reconcile"
TABLES = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding")
RANKINGS = TABLES[2:]
SHOWN_DIFFERENCES = 20  # on the terminal; --report has them all
ADS_PER_READ = 1_000  # row ranges in one ReadRows request
_EPOCH_MS = re.compile(r"\d{1,15}")


@dataclass
class Tables:
    """Rows of the four aggregate tables by their SQLite primary key: a count, or a ranked (ad_id, clicks)."""
    clicks_per_minute: Dict[tuple, int] = field(default_factory=dict)  # (ad_id, window_start)
    clicks_per_minute_by_filter: Dict[tuple, int] = field(default_factory=dict)  # (ad_id, window_start, filter)
    top_ads: Dict[tuple, tuple] = field(default_factory=dict)  # (window_start, rank)
    top_ads_sliding: Dict[tuple, tuple] = field(default_factory=dict)  # (window_end, minutes, rank)


@dataclass(frozen=True)
class Range:
    """[start, end) in epoch ms, whole minutes; sliding rankings of `minutes` windows of `window_ms` count only
    if all their windows lie in it."""
    start: int
    end: int
    window_ms: int
    minutes: int

    def holds_sliding(self, window_end: int, minutes: int) -> bool:
        return self.start <= window_end - minutes * self.window_ms and window_end <= self.end


def window_of(table: str, key: tuple) -> tuple:
    """What a restatement rewrites whole for a row: its window (window_start), or a sliding (window_end, minutes)."""
    if table == "top_ads_sliding":
        return key[:2]
    return (key[0],) if table == "top_ads" else (key[1],)


def parser() -> argparse.ArgumentParser:
    aggregates = AggregateConfig()
    parser = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s --raw GLOB [--raw GLOB ...] --sink URL --from T --to T [--report PATH] "
                         "[--restate] [options]",
        description="Recompute [from, to) from raw logs (the raw archive) and compare every table the sink holds; "
                    "exit 1 if they differ. --restate rewrites the windows that differ.",
        epilog="Times are epoch ms or ISO-8601 with a zone, on minute boundaries. Other options go to the replay "
               "that recomputes (Beam options such as --runner prism).")
    parser.add_argument("--raw", action="append", required=True, metavar="GLOB",
                        help="raw log files or the raw archive ('archive/*/*.parquet'); repeatable")
    parser.add_argument("--sink", required=True, help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")
    parser.add_argument("--from", dest="start", required=True, type=epoch_ms, metavar="T",
                        help="first minute of the range (inclusive)")
    parser.add_argument("--to", dest="end", required=True, type=epoch_ms, metavar="T",
                        help="end of the range (exclusive)")
    parser.add_argument("--report", metavar="PATH", help="write every difference and the totals as JSON here")
    parser.add_argument("--restate", action="store_true",
                        help="rewrite the windows that differ with the recompute's rows (deleting the ones it lacks)")
    parser.add_argument("--top-n", type=cli_options.at_least(1), default=aggregates.top_n,
                        help="ads ranked per window, as the sink was written (default: %(default)s)")
    parser.add_argument("--top-sliding-minutes", type=cli_options.at_least(0), default=aggregates.sliding_minutes,
                        help="windows of the sliding rankings, as the sink was written; 0 for none "
                             "(default: %(default)s)")
    return parser


def epoch_ms(text: str) -> int:
    """An argparse type: epoch ms, or ISO-8601 with a zone (transforms.records' parsing)."""
    text = text.strip()
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        return iso_to_epoch_ms(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not epoch ms or ISO-8601 with a zone: {text[:64]!r} ({error})") from None


def check_range(start: int, end: int) -> None:
    if start >= end:
        raise ValueError(f"--from ({epoch_ms_to_iso(start)}) must be before --to ({epoch_ms_to_iso(end)})")
    for name, moment in (("--from", start), ("--to", end)):
        if moment % MINUTE_MS:
            raise ValueError(f"{name} {epoch_ms_to_iso(moment)} is not on a minute boundary")


# --- reading a sink: never a write -------------------------------------------------------------------------

def read_sqlite(connection: sqlite3.Connection, span: Range) -> Tables:
    tables = Tables()
    window = (span.start, span.end)
    tables.clicks_per_minute = {(ad, start): n for ad, start, n in connection.execute(
        "SELECT ad_id, window_start, clicks FROM clicks_per_minute WHERE window_start >= ? AND window_start < ?",
        window)}
    tables.clicks_per_minute_by_filter = {(ad, start, text): n for ad, start, text, n in connection.execute(
        "SELECT ad_id, window_start, filter, clicks FROM clicks_per_minute_by_filter "
        "WHERE window_start >= ? AND window_start < ?", window)}
    tables.top_ads = {(start, rank): (ad, n) for start, rank, ad, n in connection.execute(
        "SELECT window_start, rank, ad_id, clicks FROM top_ads WHERE window_start >= ? AND window_start < ?", window)}
    tables.top_ads_sliding = {(end, minutes, rank): (ad, n) for end, minutes, rank, ad, n in connection.execute(
        "SELECT window_end, minutes, rank, ad_id, clicks FROM top_ads_sliding WHERE minutes = ? "
        "AND window_end - minutes * ? >= ? AND window_end <= ?", (span.minutes, span.window_ms, *window))
        if span.minutes}
    return tables


def sqlite_meta(path: str) -> SinkMeta:
    from serving.store import check_sqlite_store, read_only
    from sinks.meta import inferred_sqlite, recorded_sqlite
    check_sqlite_store(path)
    connection = read_only(path)
    try:
        return recorded_sqlite(connection) or inferred_sqlite(connection)
    finally:
        connection.close()


class BigtableSink:
    """A Bigtable sink's rows in a range. Each count is held twice (an `ad#` row per ad, a `min#` row per
    minute): both copies are read and compared, each reported by its row."""

    def __init__(self, url: str):
        from sinks import bigtable
        from sinks.bigtable import check_table, client
        self._bt = bigtable
        self.ref = bigtable_table(url)
        check_table(self.ref)
        self.table = client(self.ref.project).instance(self.ref.instance).table(self.ref.table)

    def meta(self) -> SinkMeta:
        from sinks.meta import inferred_bigtable, recorded_bigtable
        return recorded_bigtable(self.table) or inferred_bigtable(self.table)

    def _rows(self, ranges, inclusive_end=False):
        from google.cloud.bigtable import row_filters
        from google.cloud.bigtable.row_set import RowSet
        row_set = RowSet()
        for first, last in ranges:
            row_set.add_row_range_from_keys(first, last, end_inclusive=inclusive_end)
        return self.table.read_rows(row_set=row_set, filter_=row_filters.CellsColumnLimitFilter(1))

    def _counts(self, row, ad_id: str, window_start: int, into: Tables) -> None:
        bt = self._bt
        for qualifier, cells in row.cells.get(bt.COUNTS, {}).items():
            clicks = bt.decode_count(cells[0].value)
            if qualifier == bt.ALL_CLICKS:
                into.clicks_per_minute[(ad_id, window_start)] = clicks
            else:
                into.clicks_per_minute_by_filter[(ad_id, window_start, qualifier.decode("utf-8", "surrogatepass"))] = \
                    clicks

    def read(self, span: Range, ads) -> Dict[str, Tables]:
        """{row kind: Tables}: `min#` (counts) with the rankings, and `ad#` (counts) of `ads` and of every ad the
        `min#` rows name. An `ad#` row of any other ad is not seen: the `ad#` rows of a range are one scan per ad."""
        bt = self._bt
        by_minute = Tables()
        for row in self._rows(bt.minute_ranges(span.start, span.end)):
            window_start, ad_id = bt.parse_minute_key(row.row_key)
            self._counts(row, ad_id, window_start, by_minute)
        for row in self._rows([(bt.top_key(span.end - 1), bt.top_key(span.start))], inclusive_end=True):
            self._ranking(row, (bt.parse_top_key(row.row_key),), by_minute.top_ads)
        first, last = span.start + span.minutes * span.window_ms, span.end
        if span.minutes and first <= last:
            for row in self._rows([(bt.top_sliding_key(last, span.minutes), bt.top_sliding_key(first, span.minutes))],
                                  inclusive_end=True):
                end = bt.MAX_MINUTE - int(row.row_key.decode().rsplit("#", 1)[1])
                self._ranking(row, (end, span.minutes), by_minute.top_ads_sliding)
        by_ad = Tables()
        ads = sorted(set(ads) | {ad_id for ad_id, _ in by_minute.clicks_per_minute}
                     | {ad_id for ad_id, _, _ in by_minute.clicks_per_minute_by_filter})
        for first in range(0, len(ads), ADS_PER_READ):
            ranges = [bt.ad_range(ad_id, span.start, span.end) for ad_id in ads[first:first + ADS_PER_READ]]
            for row in self._rows(ranges):
                ad_id, window_start = bt.parse_ad_key(row.row_key)
                self._counts(row, ad_id, window_start, by_ad)
        return {"min#": by_minute, "ad#": by_ad}

    def _ranking(self, row, window: tuple, into: dict) -> None:
        cells = row.cells.get(self._bt.TOP, {}).get(self._bt.RANKING)
        if cells:
            for rank, (ad_id, clicks) in enumerate(self._bt.decode_ranking(cells[0].value), 1):
                into[window + (rank,)] = (ad_id, clicks)

    def row_key(self, kind: str, table: str, key: tuple) -> bytes:
        bt = self._bt
        if table == "top_ads":
            return bt.top_key(key[0])
        if table == "top_ads_sliding":
            return bt.top_sliding_key(key[0], key[1])
        return bt.minute_key(key[1], key[0]) if kind == "min#" else bt.ad_key(key[0], key[1])

    def restate(self, windows, expected: Tables, found: Dict[str, Tables]) -> int:
        """Rewrites every row of the differing windows whose cells are not the expected ones: its cells are
        deleted and the expected ones written, in one mutation of the row (a row without any is deleted).
        Returns the rows rewritten."""
        from google.cloud.bigtable.row import DirectRow
        bt = self._bt
        wanted: Dict[bytes, dict] = {}
        held: Dict[bytes, dict] = {}
        families: Dict[bytes, str] = {}
        for tables, into, kinds in ((expected, wanted, found), (found["min#"], held, ["min#"]),
                                    (found["ad#"], held, ["ad#"])):
            for kind in kinds:  # counts are in both kinds of rows, rankings in rows of their own (read with min#)
                for table in TABLES if kind == "min#" else TABLES[:2]:
                    for key, value in getattr(tables, table).items():
                        if window_of(table, key) in windows:
                            row_key = self.row_key(kind, table, key)
                            cells = into.setdefault(row_key, {})
                            if table in RANKINGS:
                                families[row_key] = bt.TOP
                                cells.setdefault(bt.RANKING, []).append((key[-1], value))
                            else:
                                families[row_key] = bt.COUNTS
                                cells[self._qualifier(table, key)] = value
        for cells in (*wanted.values(), *held.values()):
            for qualifier, value in cells.items():
                cells[qualifier] = bt.encode_count(value) if qualifier != bt.RANKING else bt.encode_ranking(
                    ranked for _, ranked in sorted(value))
        rows = []
        for row_key in sorted(set(wanted) | set(held)):
            if wanted.get(row_key) == held.get(row_key):
                continue
            row = DirectRow(row_key)
            if row_key not in wanted:
                row.delete()
            else:
                family = families[row_key]
                row.delete_cells(family, DirectRow.ALL_COLUMNS)
                version = bt.window_version(self._version_ms(row_key))
                for qualifier, value in wanted[row_key].items():
                    row.set_cell(family, qualifier, value, timestamp=version)
            rows.append(row)
        for first in range(0, len(rows), 1000):
            for status in self.table.mutate_rows(rows[first:first + 1000]):
                if status.code:
                    raise ValueError(f"Bigtable refused a restated row: {status.message}")
        return len(rows)

    def _qualifier(self, table: str, key: tuple) -> bytes:
        """A count's cell in its row: all clicks, or a filter."""
        return self._bt.ALL_CLICKS if table == "clicks_per_minute" else key[2].encode("utf-8", "surrogatepass")

    def _version_ms(self, row_key: bytes) -> int:
        """The cell version the sink writes a row's cells with (sinks/bigtable.py): its window's start."""
        bt, text = self._bt, row_key.decode("utf-8", "surrogatepass")
        if text.startswith(bt.SLIDING_PREFIX):
            minutes, reversed_end = text[len(bt.SLIDING_PREFIX):].split("#")
            return bt.MAX_MINUTE - int(reversed_end) - int(minutes) * MINUTE_MS
        if text.startswith(bt.TOP_PREFIX):
            return bt.parse_top_key(row_key)
        if text.startswith(bt.MINUTE_PREFIX):
            return bt.parse_minute_key(row_key)[0]
        return bt.parse_ad_key(row_key)[1]


# --- recomputing and comparing -----------------------------------------------------------------------------

def recompute(args, meta: SinkMeta, span: Range, scratch: Path) -> Tuple[Tables, dict]:
    """The range's rows as `adclick replay` of the raw logs makes them, into a scratch database."""
    db = scratch / "recomputed.db"
    filters = ";".join(sorted(meta.filters)) or ";".join("+".join(dims) for dims in AggregateConfig().filter_dimensions)
    argv = [part for pattern in args.raw for part in ("--input", pattern)] + [
        "--sink", f"sqlite:///{db}", "--dead-letter", str(scratch / "dead-letters.jsonl"),
        "--window-seconds", str(meta.window_seconds or LEGACY_WINDOW_SECONDS), "--filters", filters,
        "--top-n", str(args.top_n), "--top-sliding-minutes", str(args.top_sliding_minutes), *args.beam_args]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            summary = replay.run(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):  # the replay's one-line refusal or failure: said as ours
            raise SystemExit(stop.code.replace("adclick replay:", f"{PROG}:", 1)) from None
        raise
    connection = sqlite3.connect(db)
    try:
        return read_sqlite(connection, span), summary
    finally:
        connection.close()


def differences(expected: Tables, found: Tables, row=None) -> List[dict]:
    """Each key whose value differs: (table, key, expected, found), None where a side has no row."""
    listed = []
    for table in TABLES:
        want, have = getattr(expected, table), getattr(found, table)
        for key in sorted(set(want) | set(have), key=repr):
            if want.get(key) != have.get(key):
                difference = {"table": table, "key": list(key), "expected": _plain(want.get(key)),
                              "found": _plain(have.get(key))}
                if row is not None:
                    difference["row"] = row(table, key).decode("utf-8", "backslashreplace")
                listed.append(difference)
    return listed


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def compare(expected: Tables, found: Dict[str, Tables], sink: Optional[BigtableSink]) -> List[dict]:
    if sink is None:
        return differences(expected, found["sqlite"])
    listed = differences(expected, found["min#"], lambda table, key: sink.row_key("min#", table, key))
    counts_only = Tables(expected.clicks_per_minute, expected.clicks_per_minute_by_filter)
    return listed + differences(counts_only, found["ad#"], lambda table, key: sink.row_key("ad#", table, key))


def totals(expected: Tables, found: Tables, listed: List[dict]) -> dict:
    by_table = {}
    for table in TABLES:
        mine = [difference for difference in listed if difference["table"] == table]
        by_table[table] = {
            "expected_rows": len(getattr(expected, table)), "found_rows": len(getattr(found, table)),
            "missing": sum(1 for d in mine if d["found"] is None),
            "extra": sum(1 for d in mine if d["expected"] is None),
            "changed": sum(1 for d in mine if None not in (d["found"], d["expected"]))}
    return {"differences": len(listed), "tables": by_table,
            "clicks": {"expected": sum(expected.clicks_per_minute.values()),
                       "found": sum(found.clicks_per_minute.values())},
            "windows": len({tuple(window_of(d["table"], tuple(d["key"]))) for d in listed})}


def _key_text(table: str, key: list) -> str:
    parts = [epoch_ms_to_iso(part) if isinstance(part, int) and part > 10 ** 11 else str(part) for part in key]
    return " ".join(parts)


def _value_text(value) -> str:
    return "no row" if value is None else str(value)


def short_report(report: dict) -> str:
    span, summary, recomputed = report["range"], report["totals"], report["recomputed"]
    lines = [f"{report['sink']} from {span['from_iso']} to {span['to_iso']}: "
             + (f"{summary['differences']:,} differences in {summary['windows']:,} windows"
                if summary["differences"] else "no differences"),
             f"recomputed from {recomputed['read']:,} raw records: {recomputed['unique']:,} unique, "
             f"{recomputed['duplicates']:,} duplicates, {recomputed['malformed']:,} malformed",
             f"clicks      expected {summary['clicks']['expected']:>10,}   found {summary['clicks']['found']:>10,}"]
    lines += [f"WARNING: {incomplete['file']} was not read whole, stopped at {incomplete['offset']}: "
              f"{incomplete['detail']}" for incomplete in recomputed["incomplete_files"]]
    for table, counts in summary["tables"].items():
        lines.append(f"{table:<28} rows {counts['expected_rows']:>8,} expected {counts['found_rows']:>8,} found   "
                     f"{counts['missing']:,} missing, {counts['extra']:,} extra, {counts['changed']:,} changed")
    for difference in report["differences"][:SHOWN_DIFFERENCES]:
        where = f" ({difference['row']})" if "row" in difference else ""
        lines.append(f"  {difference['table']} {_key_text(difference['table'], difference['key'])}{where}: "
                     f"expected {_value_text(difference['expected'])}, found {_value_text(difference['found'])}")
    if len(report["differences"]) > SHOWN_DIFFERENCES:
        lines.append(f"  ... {len(report['differences']) - SHOWN_DIFFERENCES:,} more (--report PATH lists them all)")
    if "restated" in report:
        restated = report["restated"]
        lines.append(f"restated {restated['windows']:,} windows ({restated['rows']:,} rows rewritten); "
                     + ("the sink now matches the recompute" if not restated["remaining"]
                        else f"{restated['remaining']:,} differences remain"))
    return "\n".join(lines)


# --- restating ---------------------------------------------------------------------------------------------

def restate_sqlite(path: str, windows, expected: Tables) -> int:
    """Rewrites the differing windows of a SQLite sink in one transaction: their rows go, the recompute's come."""
    from sinks.sqlite import connect
    starts = sorted(window[0] for window in windows if len(window) == 1)
    sliding = sorted(window for window in windows if len(window) == 2)
    connection = connect(path)
    connection.create_function("dimension_set_of", 1, dimension_set_of, deterministic=True)
    rows = 0
    try:
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            for start in starts:
                for table in ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads"):
                    rows += connection.execute(f"DELETE FROM {table} WHERE window_start = ?", (start,)).rowcount
            for end, minutes in sliding:
                rows += connection.execute("DELETE FROM top_ads_sliding WHERE window_end = ? AND minutes = ?",
                                           (end, minutes)).rowcount
            inserts = {
                "clicks_per_minute": ("INSERT INTO clicks_per_minute VALUES (?, ?, ?)", lambda k, v: (*k, v)),
                "clicks_per_minute_by_filter": ("INSERT INTO clicks_per_minute_by_filter VALUES (?, ?, ?, ?)",
                                                lambda k, v: (*k, v)),
                "top_ads": ("INSERT INTO top_ads VALUES (?, ?, ?, ?)", lambda k, v: (*k, *v)),
                "top_ads_sliding": ("INSERT INTO top_ads_sliding VALUES (?, ?, ?, ?, ?)", lambda k, v: (*k, *v)),
            }
            for table, (sql, values) in inserts.items():
                chosen = [values(key, value) for key, value in getattr(expected, table).items()
                          if window_of(table, key) in windows]
                connection.executemany(sql, chosen)
                rows += len(chosen)
    finally:
        connection.close()
    return rows


# --- the command -------------------------------------------------------------------------------------------

def open_sink(url: str):
    """(meta, Bigtable sink or None): refuses a missing sink with one line, writing nothing."""
    scheme = urlparse(url).scheme
    if scheme == SQLITE_SCHEME:
        return sqlite_meta(sqlite_path(url)), None
    if scheme == BIGTABLE_SCHEME:
        sink = BigtableSink(url)
        return sink.meta(), sink
    raise ValueError(f"unknown sink {url!r}: expected sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")


def read_sink(url: str, sink: Optional[BigtableSink], span: Range, ads) -> Dict[str, Tables]:
    if sink is not None:
        return sink.read(span, ads)
    from serving.store import read_only
    connection = read_only(sqlite_path(url))
    try:
        return {"sqlite": read_sqlite(connection, span)}
    finally:
        connection.close()


def reconcile(args) -> dict:
    """The report: the range, the recompute's summary, every difference, the totals (and what was restated)."""
    from google.api_core import exceptions
    started = time.monotonic()
    try:
        check_range(args.start, args.end)
        meta, sink = open_sink(args.sink)
        from sources import check_inputs
        check_inputs(args.raw)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"{PROG}: {error}") from None
    window_ms = (meta.window_seconds or LEGACY_WINDOW_SECONDS) * 1000
    span = Range(args.start, args.end, window_ms, args.top_sliding_minutes)
    with tempfile.TemporaryDirectory(prefix="adclick-reconcile-") as scratch:
        expected, recomputed = recompute(args, meta, span, Path(scratch))
    ads = {ad_id for ad_id, _ in expected.clicks_per_minute}
    try:
        found = read_sink(args.sink, sink, span, ads)
        listed = compare(expected, found, sink)
        report = {"sink": args.sink, "range": {"from": span.start, "to": span.end,
                                               "from_iso": epoch_ms_to_iso(span.start),
                                               "to_iso": epoch_ms_to_iso(span.end)},
                  "raw": args.raw, "recomputed": {key: recomputed[key] for key in (
                      "read", "unique", "duplicates", "malformed", "skewed", "incomplete_files")},
                  "totals": totals(expected, next(iter(found.values())), listed), "differences": listed}
        if args.restate and listed:
            windows = {window_of(d["table"], tuple(d["key"])) for d in listed}
            rows = (restate_sqlite(sqlite_path(args.sink), windows, expected) if sink is None
                    else sink.restate(windows, expected, found))
            remaining = compare(expected, read_sink(args.sink, sink, span, ads), sink)
            report["restated"] = {"windows": len(windows), "rows": rows, "remaining": len(remaining)}
            if remaining:
                report["remaining_differences"] = remaining
    except (exceptions.GoogleAPICallError, exceptions.RetryError) as error:
        raise SystemExit(f"{PROG}: Bigtable: {' '.join(str(error).split())[:300]}") from None
    except sqlite3.Error as error:
        raise SystemExit(f"{PROG}: {args.sink}: {error}") from None
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def run(argv=None) -> int:
    args, beam_args = parser().parse_known_args(argv)
    args.beam_args = beam_args
    report = reconcile(args)
    print(short_report(report))
    if args.report:
        replace_file(args.report, json.dumps(report, indent=2))
    clean = not report["differences"] or (args.restate and not report["restated"]["remaining"])
    if not clean:
        sys.exit(1)
    return 0
