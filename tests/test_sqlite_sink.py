import sqlite3
import threading

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from sinks import sink_for, sqlite as sqlite_sink, sqlite_path
from sinks.meta import check_sink
from sinks.sqlite import connect, write_rows
from transforms.records import AdCount, Aggregates, FilterCount, TopAds

PER_AD = [AdCount("a1", 0, 5), AdCount("a2", 0, 3), AdCount("a1", 60_000, 1)]
PER_FILTER = [FilterCount("a1", 0, "country=US", 4), FilterCount("a1", 0, "country=unknown", 1)]
TOP = [TopAds(0, (("a1", 5), ("a2", 3))), TopAds(60_000, (("a1", 1),))]


def dump(path):
    connection = sqlite3.connect(path)
    return {table: sorted(connection.execute(f"SELECT * FROM {table}"))
            for table in ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads")}


def test_writing_the_same_results_twice_leaves_the_tables_unchanged(tmp_path):
    path = str(tmp_path / "a.db")
    write_rows(connect(path), PER_AD, PER_FILTER, TOP)
    first = dump(path)
    write_rows(connect(path), PER_AD, PER_FILTER, TOP)
    assert dump(path) == first
    assert first["clicks_per_minute"] == [("a1", 0, 5), ("a1", 60_000, 1), ("a2", 0, 3)]
    assert first["top_ads"] == [(0, 1, "a1", 5), (0, 2, "a2", 3), (60_000, 1, "a1", 1)]


def test_a_later_pane_replaces_the_count_and_the_ranking(tmp_path):
    path = str(tmp_path / "a.db")
    write_rows(connect(path), PER_AD, PER_FILTER, TOP)
    write_rows(connect(path), [AdCount("a2", 0, 9)], [], [TopAds(0, (("a2", 9), ("a1", 5)))])
    tables = dump(path)
    assert ("a2", 0, 9) in tables["clicks_per_minute"]
    assert [row for row in tables["top_ads"] if row[0] == 0] == [(0, 1, "a2", 9), (0, 2, "a1", 5)]


def test_the_beam_sink_writes_every_table(tmp_path):
    path = str(tmp_path / "beam.db")
    pipeline = TestPipeline()
    aggregates = Aggregates(
        per_ad=pipeline | "PerAd" >> beam.Create(PER_AD),
        per_filter=pipeline | "PerFilter" >> beam.Create(PER_FILTER),
        top_ads=pipeline | "Top" >> beam.Create(TOP),
    )
    aggregates | sink_for(f"sqlite:///{path}")
    pipeline.run()
    write_rows(connect(str(tmp_path / "direct.db")), PER_AD, PER_FILTER, TOP)
    assert dump(path) == dump(str(tmp_path / "direct.db"))


def test_building_the_sink_touches_nothing_and_the_launchers_check_refuses_what_cannot_be_written(tmp_path):
    new = tmp_path / "not" / "yet" / "there.db"
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    for path in (new, junk, tmp_path):
        sink_for(f"sqlite:///{path}")  # a sink is built before any check, and builds no file or directory
    assert not (tmp_path / "not").exists() and junk.read_text() == "not a database"
    with pytest.raises(ValueError, match="not a database"):
        check_sink(f"sqlite:///{junk}", 60, [("country",)])
    with pytest.raises(ValueError, match="is a directory"):
        check_sink(f"sqlite:///{tmp_path}", 60, [("country",)])
    assert check_sink(f"sqlite:///{new}", 60, [("country",)]).window_seconds == 60
    assert dump(str(new)) == {"clicks_per_minute": [], "clicks_per_minute_by_filter": [], "top_ads": []}


@pytest.mark.parametrize("url", ["sqlite://host/x.db", "sqlite:///", "postgres:///x", "x.db"])
def test_bad_sink_urls_are_clear_errors(url):
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        sink_for(url)


def test_sqlite_url_paths():
    assert sqlite_path("sqlite:///rel/a.db") == "rel/a.db"
    assert sqlite_path("sqlite:////abs/a.db") == "/abs/a.db"


def test_a_new_database_gets_16_kib_pages_and_an_older_one_keeps_its_own(tmp_path):
    new, older = str(tmp_path / "new.db"), str(tmp_path / "older.db")
    assert connect(new).execute("PRAGMA page_size").fetchone() == (16384,)
    sqlite3.connect(older).execute("CREATE TABLE other (x)")  # a database made before: 4 KiB pages
    write_rows(connect(older), PER_AD, PER_FILTER, TOP)
    assert sqlite3.connect(older).execute("PRAGMA page_size").fetchone() == (4096,)
    write_rows(connect(new), PER_AD, PER_FILTER, TOP)
    assert dump(older) == dump(new)


def _indexes(path) -> set:
    connection = sqlite3.connect(path)
    try:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                       "AND name NOT LIKE 'sqlite_autoindex_%'")}
    finally:
        connection.close()


def test_a_staging_database_is_written_without_journal_or_indexes_and_swapped_in_with_them(tmp_path):
    from sinks.sqlite import swap_in
    sink, staging = tmp_path / "sink.db", tmp_path / "staging.db"
    write_rows(connect(str(sink)), per_ad=[("ad-1", 0, 5)], per_filter=[("ad-1", 0, "country=US", 5)])
    connection = connect(str(staging), staging=True)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "off"
    write_rows(connection, per_ad=[("ad-1", 60_000, 2), ("ad-2", 60_000, 3)],
               per_filter=[("ad-1", 60_000, "country=US", 2), ("ad-2", 60_000, "country=FR", 3)])
    connection.close()
    assert _indexes(staging) == set(), "a staging database keeps no index while it is written"
    swap_in(str(sink), str(staging))
    assert _indexes(sink) == {"clicks_per_minute_by_window", "clicks_per_minute_by_filter_by_window"}
    rows = sqlite3.connect(sink).execute("SELECT * FROM clicks_per_minute ORDER BY 1, 2").fetchall()
    assert rows == [("ad-1", 0, 5), ("ad-1", 60_000, 2), ("ad-2", 60_000, 3)]
    by_filter = sqlite3.connect(sink).execute("SELECT * FROM clicks_per_minute_by_filter ORDER BY 1, 2").fetchall()
    assert by_filter == [("ad-1", 0, "country=US", 5), ("ad-1", 60_000, "country=US", 2),
                         ("ad-2", 60_000, "country=FR", 3)]
    assert not staging.exists()


def test_a_replay_into_an_empty_sink_leaves_it_indexed_as_a_new_one(tmp_path):
    from sinks.sqlite import swap_in
    sink, staging = tmp_path / "sink.db", tmp_path / "staging.db"
    connect(str(sink)).close()
    write_rows(connect(str(staging), staging=True), per_ad=[("ad-1", 0, 1)], per_filter=[("ad-1", 0, "ip=x", 1)])
    swap_in(str(sink), str(staging))
    assert _indexes(sink) == {"clicks_per_minute_by_window", "clicks_per_minute_by_filter_by_window"}
    assert sqlite3.connect(sink).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sqlite3.connect(sink).execute("SELECT * FROM clicks_per_minute_by_filter").fetchall() == [
        ("ad-1", 0, "ip=x", 1)]


def test_a_teardown_waits_for_the_write_under_way_and_a_write_after_it_is_a_clear_error(tmp_path, monkeypatch):
    """A cancelled job's worker tears the sink's DoFn down while a bundle may still write on another thread: the
    connection must not close under a running statement (that crashed the process inside SQLite)."""
    path = str(tmp_path / "a.db")
    write_rows(connect(path))  # the tables
    writing, release = threading.Event(), threading.Event()

    def slow_write(connection, **rows):
        writing.set()
        release.wait(10)
        write_rows(connection, **rows)

    monkeypatch.setattr(sqlite_sink, "write_rows", slow_write)
    upsert = sqlite_sink._UpsertFn(path, "per_ad")
    upsert.setup()
    upsert.start_bundle()
    upsert.process(PER_AD[0])
    bundle = threading.Thread(target=lambda: list(upsert.finish_bundle()))
    bundle.start()
    assert writing.wait(10)
    torn_down = threading.Thread(target=upsert.teardown)
    torn_down.start()
    torn_down.join(0.5)
    assert torn_down.is_alive()  # waiting for the write
    release.set()
    bundle.join(10)
    torn_down.join(10)
    assert not torn_down.is_alive()
    assert dump(path)["clicks_per_minute"] == [tuple(PER_AD[0])]
    upsert.start_bundle()
    upsert.process(PER_AD[1])
    with pytest.raises(RuntimeError, match="closed while a bundle was writing"):
        list(upsert.finish_bundle())
