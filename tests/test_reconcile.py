"""`adclick reconcile`: a generated log replayed into a sink, the sink damaged on purpose, and reconcile reports
exactly the damage and `--restate` repairs it. Expected tables and differences are computed in plain Python from
the generator's truth.jsonl (tests/stream_truth.py), never from adclick's output."""

import collections
import json
import sqlite3

import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import reconcile, replay
from sinks.archive import write_parquet
from tests.replay_truth import read_truth
from tests.sink_reading import bigtable_tables
from tests.stream_truth import expected_tables, sink_tables
from transforms.batches import table_of
from transforms.records import Click

pytestmark = pytest.mark.slow
MINUTE = 60_000
CONFIG = GeneratorConfig(events=4_000, seed=53, ads=40, minutes=8, duplicate_rate=0.05, malformed_rate=0.01)
TOP_N, SLIDING = 100, 5
START = CONFIG.start_ms
# Every minute, and every sliding ranking of them (those that start before the first minute, and end after the last).
FIRST, END = START - SLIDING * MINUTE, START + (CONFIG.minutes + SLIDING) * MINUTE
GHOST = "ad-ghost"


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("log")
    write_log(CONFIG, out, files=2)
    return out


def replay_log(log, url, tmp_path):
    replay.run(["--input", str(log / "clicks-*"), "--sink", url, "--dead-letter", str(tmp_path / "dead.jsonl")])


def run_reconcile(log, url, tmp_path, *extra, start=FIRST, end=END, raw=()):
    """(exit status, report) of `adclick reconcile` over [start, end)."""
    report = tmp_path / "report.json"
    argv = ["--raw", str(log / "clicks-*"), *[part for path in raw for part in ("--raw", str(path))], "--sink", url,
            "--from", str(start), "--to", str(end), "--report", str(report), *extra]
    try:
        status = reconcile.run(argv)
    except SystemExit as stop:
        status = stop.code
    return status, json.loads(report.read_text())


def tables_of(truth) -> dict:
    return expected_tables(truth, TOP_N, SLIDING)


def as_rows(tables) -> dict:
    """{table: {key: value}} of sink_tables()/expected_tables() rows (key: the table's primary key)."""
    split = {"clicks_per_minute": 2, "clicks_per_minute_by_filter": 3, "top_ads": 2, "top_ads_sliding": 3}
    return {table: {tuple(row[:split[table]]): (row[-1] if len(row) == split[table] + 1 else tuple(row[split[table]:]))
                    for row in rows} for table, rows in tables.items()}


def the_damage(truth):
    """What the tests do to a sink, and the differences it makes: [(table, key, expected, found)]."""
    rows = as_rows(tables_of(truth))
    per_ad, top = rows["clicks_per_minute"], rows["top_ads"]
    changed = min(key for key in per_ad if key[1] == START)
    deleted = max(key for key in per_ad if key[1] == START + 7 * MINUTE)
    changed_n, deleted_n = per_ad[changed], per_ad[deleted]
    extra_filter = (changed[0], changed[1], "country=ZZ")
    minute = START + 4 * MINUTE
    first, second = top[(minute, 1)], top[(minute, 2)]
    return {
        "changed": (changed, changed_n + 5), "deleted": deleted, "extra_filter": (extra_filter, 3),
        "extra_row": ((GHOST, minute), 2), "ranking": (minute, first, second),
        "differences": sorted([
            ("clicks_per_minute", changed, changed_n, changed_n + 5),
            ("clicks_per_minute", deleted, deleted_n, None),
            ("clicks_per_minute_by_filter", extra_filter, None, 3),
            ("clicks_per_minute", (GHOST, minute), None, 2),
            ("top_ads", (minute, 1), first, (second[0], first[1])),
            ("top_ads", (minute, 2), second, (first[0], second[1])),
        ], key=repr)}


def reported(report) -> list:
    """The report's differences as (table, key, expected, found), each once (Bigtable reports both copies)."""
    plain = {(d["table"], tuple(d["key"]), _tuple(d["expected"]), _tuple(d["found"])) for d in report["differences"]}
    return sorted(plain, key=repr)


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


# --- SQLite -------------------------------------------------------------------------------------------------

def damage_sqlite(db, damage) -> None:
    (changed, clicks), deleted = damage["changed"], damage["deleted"]
    minute, first, second = damage["ranking"]
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE clicks_per_minute SET clicks = ? WHERE ad_id = ? AND window_start = ?",
                           (clicks, *changed))
        connection.execute("DELETE FROM clicks_per_minute WHERE ad_id = ? AND window_start = ?", deleted)
        connection.execute("INSERT INTO clicks_per_minute_by_filter VALUES (?, ?, ?, ?)",
                           (*damage["extra_filter"][0], damage["extra_filter"][1]))
        connection.execute("INSERT INTO clicks_per_minute VALUES (?, ?, ?)", (*damage["extra_row"][0], 2))
        for rank, ad_id in ((1, second[0]), (2, first[0])):
            connection.execute("UPDATE top_ads SET ad_id = ? WHERE window_start = ? AND rank = ?",
                               (ad_id, minute, rank))


def test_a_clean_sink_reconciles_and_is_left_as_it_was(log, tmp_path):
    db, truth = tmp_path / "sink.db", read_truth(log)
    replay_log(log, f"sqlite:///{db}", tmp_path)
    before = db.read_bytes()
    status, report = run_reconcile(log, f"sqlite:///{db}", tmp_path)
    assert (status, report["differences"], report["totals"]["differences"]) == (0, [], 0)
    assert report["totals"]["clicks"] == {"expected": len(truth), "found": len(truth)}
    assert report["totals"]["tables"]["top_ads_sliding"]["expected_rows"] == len(tables_of(truth)["top_ads_sliding"])
    assert db.read_bytes() == before


def test_reconcile_reports_exactly_the_damage_and_restate_repairs_it(log, tmp_path, capsys):
    db, truth = tmp_path / "sink.db", read_truth(log)
    url = f"sqlite:///{db}"
    replay_log(log, url, tmp_path)
    damage = the_damage(truth)
    damage_sqlite(db, damage)
    damaged = sink_tables(db)
    capsys.readouterr()

    status, report = run_reconcile(log, url, tmp_path)
    assert status == 1 and reported(report) == damage["differences"]
    out = capsys.readouterr().out
    assert "6 differences in" in out and "clicks_per_minute_by_filter" in out and "expected no row, found 3" in out
    by_table = report["totals"]["tables"]
    assert (by_table["clicks_per_minute"]["missing"], by_table["clicks_per_minute"]["extra"],
            by_table["clicks_per_minute"]["changed"], by_table["top_ads"]["changed"]) == (1, 1, 1, 2)
    assert sink_tables(db) == damaged  # without --restate the sink is only read

    status, report = run_reconcile(log, url, tmp_path, "--restate")
    assert status == 0 and report["restated"]["remaining"] == 0 and reported(report) == damage["differences"]
    assert sink_tables(db) == tables_of(truth)
    status, report = run_reconcile(log, url, tmp_path)
    assert (status, report["differences"]) == (0, [])


def test_reconcile_sees_only_its_range(log, tmp_path):
    db, truth = tmp_path / "sink.db", read_truth(log)
    url = f"sqlite:///{db}"
    replay_log(log, url, tmp_path)
    damage_sqlite(db, the_damage(truth))  # minutes 0 (the changed count), 4 and 7
    status, report = run_reconcile(log, url, tmp_path, start=START + 5 * MINUTE, end=START + 7 * MINUTE)
    assert (status, report["differences"]) == (0, [])
    status, report = run_reconcile(log, url, tmp_path, start=START + 4 * MINUTE, end=START + 5 * MINUTE)
    assert status == 1 and {d["key"][0] if d["table"] == "top_ads" else d["key"][1]
                            for d in report["differences"]} == {START + 4 * MINUTE}


def test_restate_counts_a_click_that_only_the_raw_archive_holds(log, tmp_path):
    """A click that reached the stream after its window's allowed lateness: a dead letter there, kept in the raw
    archive (with the time it was received). Reconciling with the archive counts it."""
    db, truth = tmp_path / "sink.db", read_truth(log)
    url = f"sqlite:///{db}"
    replay_log(log, url, tmp_path)
    late = Click("too-late-1", truth[0]["ad_id"], START + 2 * MINUTE + 17_000, "u-late", None, "US",
                 receive_ts=START + 2 * MINUTE + 3 * 3600_000)
    archive = tmp_path / "archive" / "event_hour=2026-01-01T00"
    archive.mkdir(parents=True)
    with open(archive / "clicks-late.parquet", "wb") as handle:
        write_parquet(handle, [table_of([late])])
    late_event = {"event_id": late.event_id, "ad_id": late.ad_id, "click_ts": late.click_ts, "country": "US"}

    status, report = run_reconcile(log, url, tmp_path, raw=[tmp_path / "archive" / "*" / "*.parquet"])
    minute = late.click_ts - late.click_ts % MINUTE
    held = collections.Counter((e["ad_id"], e["click_ts"] // MINUTE * MINUTE) for e in truth)[(late.ad_id, minute)]
    assert status == 1 and ["clicks_per_minute", [late.ad_id, minute], held + 1, held] in [
        [d["table"], d["key"], d["expected"], d["found"]] for d in report["differences"]]
    status, _ = run_reconcile(log, url, tmp_path, "--restate", raw=[tmp_path / "archive" / "*" / "*.parquet"])
    assert status == 0 and sink_tables(db) == tables_of(truth + [late_event])


@pytest.mark.parametrize("arguments, message", [
    (["--from", "2026-01-01T00:05:00Z", "--to", "2026-01-01T00:05:00Z"], "must be before --to"),
    (["--from", "1767225600500", "--to", "2026-01-01T00:05:00Z"], "is not on a minute boundary"),
    (["--from", "2026-01-01T00:00:00", "--to", "2026-01-01T00:05:00Z"], "not epoch ms or ISO-8601 with a zone"),
])
def test_bad_times_are_one_line(tmp_path, capsys, arguments, message):
    db = tmp_path / "sink.db"
    sqlite3.connect(db).close()
    with pytest.raises(SystemExit) as stop:
        reconcile.run(["--raw", str(tmp_path / "*.jsonl"), "--sink", f"sqlite:///{db}", *arguments])
    text = stop.value.code if isinstance(stop.value.code, str) else capsys.readouterr().err
    assert message in text and "Traceback" not in text and len(text.strip().splitlines()) <= 3


def test_a_missing_sink_or_raw_log_is_one_line(log, tmp_path):
    times = ["--from", str(FIRST), "--to", str(END)]
    with pytest.raises(SystemExit) as stop:
        reconcile.run(["--raw", str(log / "clicks-*"), "--sink", f"sqlite:///{tmp_path / 'none.db'}", *times])
    assert stop.value.code.startswith("adclick reconcile: no SQLite database at")
    assert not (tmp_path / "none.db").exists()
    db = tmp_path / "sink.db"
    replay_log(log, f"sqlite:///{db}", tmp_path)
    with pytest.raises(SystemExit) as stop:
        reconcile.run(["--raw", str(tmp_path / "nothing-*.jsonl"), "--sink", f"sqlite:///{db}", *times])
    assert stop.value.code.startswith("adclick reconcile: no input file matches")


# --- Bigtable -----------------------------------------------------------------------------------------------

def damage_bigtable(url, damage) -> None:
    """The same damage as on SQLite, made with the sink's own cell layout (both copies of each count)."""
    from google.cloud.bigtable.row import DirectRow

    from sinks import bigtable as bt, bigtable_table
    from transforms.records import AdCount, FilterCount, TopAds
    ref = bigtable_table(url)
    table = bt.client(ref.project).instance(ref.instance).table(ref.table)
    (changed, clicks), deleted = damage["changed"], damage["deleted"]
    (extra_filter, filter_clicks), (extra_row, row_clicks) = damage["extra_filter"], damage["extra_row"]
    minute, first, second = damage["ranking"]
    ranking = [ranked for _, ranked in sorted(as_rows({"top_ads": [
        row for row in bigtable_tables(url)["top_ads"] if row[0] == minute]})["top_ads"].items())]
    ranking[:2] = [(second[0], first[1]), (first[0], second[1])]
    cells = [*bt.per_ad_cells(AdCount(*changed, clicks)), *bt.per_filter_cells(FilterCount(*extra_filter,
                                                                                              filter_clicks)),
             *bt.per_ad_cells(AdCount(*extra_row, row_clicks)), *bt.top_ads_cells(TopAds(minute, tuple(ranking)))]
    rows = list(bt.direct_rows(cells))
    for key in (bt.ad_key(*deleted), bt.minute_key(deleted[1], deleted[0])):
        row = DirectRow(key)
        row.delete_cell(bt.COUNTS, bt.ALL_CLICKS)
        rows.append(row)
    assert not [status for status in table.mutate_rows(rows) if status.code]


@pytest.mark.bigtable
def test_reconcile_on_bigtable_reports_the_damage_and_restate_deletes_what_the_recompute_lacks(
        log, tmp_path, bigtable_url):
    truth = read_truth(log)
    replay_log(log, bigtable_url, tmp_path)
    assert bigtable_tables(bigtable_url) == tables_of(truth)
    status, report = run_reconcile(log, bigtable_url, tmp_path)
    assert (status, report["differences"]) == (0, [])

    damage = the_damage(truth)
    damage_bigtable(bigtable_url, damage)
    damaged = bigtable_tables(bigtable_url)
    status, report = run_reconcile(log, bigtable_url, tmp_path)
    assert status == 1 and reported(report) == damage["differences"]
    rows = {d["row"].split("#")[0] for d in report["differences"] if d["table"] == "clicks_per_minute"}
    assert rows == {"ad", "min"}  # both copies of each count are compared
    assert bigtable_tables(bigtable_url) == damaged

    status, report = run_reconcile(log, bigtable_url, tmp_path, "--restate")
    assert status == 0 and report["restated"]["remaining"] == 0
    assert bigtable_tables(bigtable_url) == tables_of(truth)  # the extra row and filter cell are gone
    status, report = run_reconcile(log, bigtable_url, tmp_path)
    assert (status, report["differences"]) == (0, [])


@pytest.mark.bigtable
def test_restate_on_bigtable_counts_a_click_only_the_archive_holds(log, tmp_path, bigtable_url):
    truth = read_truth(log)
    replay_log(log, bigtable_url, tmp_path)
    late = Click("too-late-2", truth[1]["ad_id"], START + 6 * MINUTE + 1_000, None, None, None,
                 receive_ts=START + 6 * MINUTE + 2 * 3600_000)
    archive = tmp_path / "archive" / "event_hour=2026-01-01T00"
    archive.mkdir(parents=True)
    with open(archive / "clicks-late.parquet", "wb") as handle:
        write_parquet(handle, [table_of([late])])
    raw = [tmp_path / "archive" / "*" / "*.parquet"]
    status, _ = run_reconcile(log, bigtable_url, tmp_path, "--restate", raw=raw)
    late_event = {"event_id": late.event_id, "ad_id": late.ad_id, "click_ts": late.click_ts, "country": None}
    assert status == 0 and bigtable_tables(bigtable_url) == tables_of(truth + [late_event])
    status, report = run_reconcile(log, bigtable_url, tmp_path, raw=raw)
    assert (status, report["differences"]) == (0, [])


@pytest.mark.bigtable
def test_a_missing_bigtable_table_is_one_line(log, bigtable_emulator):
    from tests.servers.bigtable import new_table_url
    url = new_table_url("missing")
    with pytest.raises(SystemExit) as stop:
        reconcile.run(["--raw", str(log / "clicks-*"), "--sink", url, "--from", str(FIRST), "--to", str(END)])
    assert stop.value.code.startswith(f"adclick reconcile: Bigtable table {url} does not exist")
    assert "\n" not in stop.value.code
