"""The Bigtable sink on the emulator: table set-up, the check before a run, idempotent cells, retries."""

import datetime
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest

from runners import bigtable as bigtable_cli
from sinks import bigtable_table
from sinks.bigtable import (
    ALL_CLICKS,
    COUNTS,
    FAMILIES,
    RANKING,
    TOP,
    BigtableNotReady,
    WriteToBigtable,
    ad_key,
    check_table,
    client,
    create_table,
    decode_count,
    decode_ranking,
    minute_key,
    top_key,
    top_sliding_key,
)
from tests.servers import free_port
from tests.servers.bigtable import PROJECT, all_cells, new_table_url, start_emulator, stop_emulator
from transforms.records import AdCount, Aggregates, FilterCount, SlidingTopAds, TopAds

pytestmark = pytest.mark.bigtable
T0 = 1_767_225_600_000
MINUTE = 60_000


def write(url, per_ad=(), per_filter=(), top_ads=(), top_ads_sliding=()):
    """Runs a pipeline that hands these aggregates to the sink, as the DAG would."""
    with beam.Pipeline() as pipeline:
        aggregates = Aggregates(
            per_ad=pipeline | "PerAd" >> beam.Create(list(per_ad), reshuffle=False),
            per_filter=pipeline | "PerFilter" >> beam.Create(list(per_filter), reshuffle=False),
            top_ads=pipeline | "TopAds" >> beam.Create(list(top_ads), reshuffle=False),
            top_ads_sliding=pipeline | "TopAdsSliding" >> beam.Create(list(top_ads_sliding), reshuffle=False),
        )
        aggregates | WriteToBigtable(bigtable_table(url))


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "runners.cli", *argv], capture_output=True, text=True, timeout=120)


def test_create_table_is_idempotent_and_adds_missing_families(bigtable_emulator, capsys):
    url = new_table_url()
    bigtable_cli.run(["create-table", "--sink", url])
    assert "created table" in capsys.readouterr().out
    bigtable_cli.run(["create-table", "--sink", url])
    assert "nothing to do" in capsys.readouterr().out
    ref = bigtable_table(url)
    table = client(ref.project, admin=True).instance(ref.instance).table(ref.table)
    families = table.list_column_families()
    assert set(families) == set(FAMILIES)
    assert all(family.gc_rule.max_num_versions == 1 for family in families.values())

    table.column_family(TOP).delete()
    with pytest.raises(BigtableNotReady, match="lacks column families t"):
        check_table(ref)
    bigtable_cli.run(["create-table", "--sink", url])
    assert "created column family t" in capsys.readouterr().out
    check_table(ref)


def test_replay_and_serve_on_a_missing_table_exit_with_one_clear_line(bigtable_emulator, tmp_path):
    log = tmp_path / "clicks.jsonl"
    log.write_text('{"event_id": "e1", "ad_id": "a", "click_ts": 1767225600000}\n')
    missing = f"bigtable://{PROJECT}/test-instance/no-such-table"
    for argv in (["replay", "--input", str(log), "--sink", missing, "--dead-letter", str(tmp_path / "dead")],
                 ["serve", "--sink", missing, "--port", str(free_port())]):
        result = run_cli(*argv)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith(
            f"Bigtable table {missing} does not exist; create it with: adclick bigtable create-table --sink {missing}")
        assert len([line for line in result.stderr.splitlines() if "adclick" in line and "table" in line]) == 1


def test_unreachable_bigtable_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    log = tmp_path / "clicks.jsonl"
    log.write_text('{"event_id": "e1", "ad_id": "a", "click_ts": 1767225600000}\n')
    url = f"bigtable://{PROJECT}/test-instance/t"
    result = run_cli("replay", "--input", str(log), "--sink", url, "--dead-letter", str(tmp_path / "dead"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"cannot reach Bigtable table {url}" in result.stderr.strip().splitlines()[-1]


def test_cells_hold_the_latest_full_value_at_the_windows_version_however_often_written(bigtable_url):
    early = [AdCount("a", T0, 3), AdCount("b", T0 + MINUTE, 1)]
    final = [AdCount("a", T0, 5), AdCount("b", T0 + MINUTE, 1)]
    per_filter = [FilterCount("a", T0, "country=US", 4)]
    top = [TopAds(T0, (("a", 5),)), TopAds(T0 + MINUTE, (("b", 1),))]
    sliding = [SlidingTopAds(T0 + 2 * MINUTE, 2, (("a", 5), ("b", 1)))]
    write(bigtable_url, early, per_filter, top, sliding)  # an early pane
    write(bigtable_url, final, per_filter, top, sliding)  # the final pane
    first = all_cells(bigtable_url)
    write(bigtable_url, final, per_filter, top, sliding)  # a retried bundle, a replay
    assert all_cells(bigtable_url) == first

    version = {T0: datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc),
               T0 + MINUTE: datetime.datetime(2026, 1, 1, 0, 1, tzinfo=datetime.timezone.utc)}
    expected = {
        (ad_key("a", T0), COUNTS, ALL_CLICKS): (T0, 5), (minute_key(T0, "a"), COUNTS, ALL_CLICKS): (T0, 5),
        (ad_key("b", T0 + MINUTE), COUNTS, ALL_CLICKS): (T0 + MINUTE, 1),
        (minute_key(T0 + MINUTE, "b"), COUNTS, ALL_CLICKS): (T0 + MINUTE, 1),
        (ad_key("a", T0), COUNTS, b"country=US"): (T0, 4), (minute_key(T0, "a"), COUNTS, b"country=US"): (T0, 4),
    }
    counts = {cell: (versions[0][0], decode_count(versions[0][1]))
              for cell, versions in first.items() if cell[1] == COUNTS and len(versions) == 1}
    assert counts == {cell: (version[window], clicks) for cell, (window, clicks) in expected.items()}
    assert decode_ranking(first[(top_key(T0), TOP, RANKING)][0][1]) == [("a", 5)]
    assert first[(top_sliding_key(T0 + 2 * MINUTE, 2), TOP, RANKING)] == [(version[T0], b'[["a",5],["b",1]]')]
    assert all(len(versions) == 1 for versions in first.values())


@pytest.mark.faults
def test_writes_retry_with_backoff_until_bigtable_answers(tmp_path, monkeypatch):
    """The emulator comes up 3 s after the pipeline starts writing: nothing is lost."""
    port = free_port()
    monkeypatch.setenv("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{port}")
    url = new_table_url("retry")
    started = {}

    def start_later():
        time.sleep(3)
        started["emulator"] = start_emulator(port)
        create_table(bigtable_table(url))

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        write(url, [AdCount(f"ad-{n}", T0, n) for n in range(1, 51)])
        starter.join()
        counts = {key: decode_count(versions[0][1]) for (key, family, _), versions in all_cells(url).items()}
        assert {key: n for key, n in counts.items() if key.startswith(b"ad#")} == \
            {ad_key(f"ad-{n}", T0): n for n in range(1, 51)}
    finally:
        starter.join()
        if "emulator" in started:
            stop_emulator(started["emulator"])
