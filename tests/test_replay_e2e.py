"""End to end: generated logs replayed into SQLite, every table checked against plain Python over the truth."""

import collections
import json
import os
import sqlite3

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.worker import statesampler

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from transforms import packed

CONFIG = GeneratorConfig(events=3_000, seed=11, ads=200, minutes=5, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.02)
TOP_N = 10


def expected_tables(out_dir):
    """The three public tables computed from truth.jsonl alone, without any adclick code."""
    truth = [json.loads(line) for line in (out_dir / "truth.jsonl").read_text().splitlines()]
    per_ad = collections.Counter((e["ad_id"], e["click_ts"] // 60_000 * 60_000) for e in truth)
    per_filter = collections.Counter(
        (e["ad_id"], e["click_ts"] // 60_000 * 60_000, f"country={e['country'] or 'unknown'}") for e in truth)
    by_minute = collections.defaultdict(list)
    for (ad_id, minute), clicks in per_ad.items():
        by_minute[minute].append((ad_id, clicks))
    top = []
    for minute, ads in by_minute.items():
        ranked = sorted(ads, key=lambda ad: (-ad[1], ad[0]))[:TOP_N]
        top += [(minute, rank, ad_id, clicks) for rank, (ad_id, clicks) in enumerate(ranked, 1)]
    return {
        "clicks_per_minute": sorted((ad, minute, n) for (ad, minute), n in per_ad.items()),
        "clicks_per_minute_by_filter": sorted((ad, minute, f, n) for (ad, minute, f), n in per_filter.items()),
        "top_ads": sorted(top),
    }


def tables(db):
    connection = sqlite3.connect(db)
    return {table: sorted(connection.execute(f"SELECT * FROM {table}"))
            for table in ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads")}


def run_replay(pattern, db, tmp_path, *extra):
    return replay.run(["--input", pattern, "--sink", f"sqlite:///{db}", "--top-n", str(TOP_N),
                       "--dead-letter", str(tmp_path / "dead.jsonl"), "--summary", str(tmp_path / "summary.json"),
                       *extra])


@pytest.fixture(scope="module")
def jsonl_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("jsonl")
    return out, write_log(CONFIG, out, "jsonl", files=3)


@pytest.mark.slow
def test_replay_matches_plain_python_and_accounts_for_every_line(jsonl_log, tmp_path):
    out, manifest = jsonl_log
    db = tmp_path / "a.db"
    summary = run_replay(str(out / "clicks-*"), db, tmp_path)

    assert tables(db) == expected_tables(out)
    assert {k: summary[k] for k in ("read", "unique", "duplicates", "malformed")} == \
        {k: manifest[k] for k in ("read", "unique", "duplicates", "malformed")}
    assert summary["read"] == summary["unique"] + summary["duplicates"] + summary["malformed"]
    assert sum(summary["malformed_by_reason"].values()) == summary["malformed"]
    assert json.loads((tmp_path / "summary.json").read_text())["read"] == manifest["read"]

    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == manifest["malformed"]
    lines = {(f"clicks-{k:05d}.jsonl", n): line
             for k in range(3)
             for n, line in enumerate((out / f"clicks-{k:05d}.jsonl").read_bytes().split(b"\n"), 1)}
    for letter in dead:
        original = lines[(letter["source"].rsplit("/", 1)[-1], letter["offset"])]
        assert letter["length"] == len(original)
        assert letter["reason"] and letter["detail"]

    run_replay(str(out / "clicks-*"), db, tmp_path)
    assert tables(db) == expected_tables(out), "a second replay of the same input changed the sink"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["avro", "parquet", "jsonl.gz"])
def test_avro_parquet_and_gzip_give_the_same_tables_as_json_lines(fmt, jsonl_log, tmp_path):
    jsonl_out, _ = jsonl_log
    out = tmp_path / "log"
    write_log(CONFIG, out, "jsonl" if fmt == "jsonl.gz" else fmt, files=2, gzip=fmt == "jsonl.gz")
    db = tmp_path / f"{fmt}.db"
    run_replay(str(out / "clicks-*"), db, tmp_path)
    assert tables(db) == expected_tables(jsonl_out)


def test_a_missing_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no input file matches"):
        run_replay(str(tmp_path / "nothing-*.jsonl"), tmp_path / "a.db", tmp_path)


def test_a_local_replay_spills_its_dedup_shuffle_and_removes_it(jsonl_log, tmp_path, monkeypatch):
    """The dedup shuffle waits in files in --spill-dir while the replay runs; none are left after it.
    The state sampler's fix (runners/beam_compat.py) lasts for the run only."""
    created = []
    create = FileSystems.create
    monkeypatch.setattr(packed.FileSystems, "create",
                        lambda path, *a, **k: created.append(path) or create(path, *a, **k))
    out, _ = jsonl_log
    summary = replay.run(["--input", str(out / "clicks-*"), "--sink", f"sqlite:///{tmp_path / 'a.db'}",
                          "--dead-letter", str(tmp_path / "dead.jsonl"), "--spill-dir", str(tmp_path / "spill")])
    assert summary["balanced"] and summary["unique"] == CONFIG.events
    spilled = [path for path in created if path.endswith(".packed")]
    assert spilled and all(path.startswith(str(tmp_path / "spill")) for path in spilled)
    assert os.listdir(tmp_path / "spill") == []
    assert statesampler.StateSampler("s", None).sampling_period_ms == statesampler.DEFAULT_SAMPLING_PERIOD_MS
