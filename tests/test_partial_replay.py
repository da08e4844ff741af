"""A replay restates each minute it holds, and says so: a partial one (one file of three) warns of the
minutes it lowered. Expected counts come from the generator's truth and the raw lines alone."""

import json
import sqlite3

import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from tests.replay_truth import assert_partial_restatement, events_in, per_minute

CONFIG = GeneratorConfig(events=6_000, seed=41, ads=60, minutes=12, duplicate_rate=0.05, malformed_rate=0.01)


def clicks_per_ad_and_minute(db) -> dict:
    return {(ad, minute): clicks for ad, minute, clicks in sqlite3.connect(db).execute(
        "SELECT ad_id, window_start, clicks FROM clicks_per_minute")}


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("log")
    write_log(CONFIG, out, files=3)
    return out


def run(log, db, tmp_path, pattern):
    return replay.run(["--input", str(log / pattern), "--sink", f"sqlite:///{db}",
                       "--dead-letter", str(tmp_path / "dead.jsonl"), "--summary", str(tmp_path / "summary.json")])


@pytest.mark.slow
def test_a_partial_replay_restates_its_minutes_and_warns_of_those_it_lowered(log, tmp_path, capsys):
    truth = [json.loads(line) for line in (log / "truth.jsonl").read_text().splitlines()]
    truth_by_id = {event["event_id"]: event for event in truth}
    full, part = per_minute(truth), per_minute(events_in(log / "clicks-00001.jsonl", truth_by_id))
    lowered = {minute for minute in part if part[minute] < full[minute]}
    assert lowered and set(part) < set(full)  # the case at hand: the middle file covers some minutes in part

    db = tmp_path / "a.db"
    summary = run(log, db, tmp_path, "clicks-*")
    assert (summary["restated_windows"], summary["lowered_windows"]) == (len(full), 0)
    assert (summary["restated_from"], summary["restated_to"]) == (min(full), max(full))
    full_rows = clicks_per_ad_and_minute(db)
    capsys.readouterr()

    summary = run(log, db, tmp_path, "clicks-00001.jsonl")
    assert_partial_restatement(summary, tmp_path / "summary.json", capsys.readouterr().out, part, lowered)

    # Each restated minute is the partial replay's whole answer; the others are as the full replay left them.
    rows = clicks_per_ad_and_minute(db)
    assert {minute: sum(n for (_, m), n in rows.items() if m == minute) for minute in full} == \
        {minute: part[minute] if minute in part else full[minute] for minute in full}
    assert {key: n for key, n in rows.items() if key[1] not in part} == \
        {key: n for key, n in full_rows.items() if key[1] not in part}

    summary = run(log, db, tmp_path, "clicks-*")  # the full replay again restores every minute
    assert summary["lowered_windows"] == 0 and clicks_per_ad_and_minute(db) == full_rows
    assert "fewer clicks" not in capsys.readouterr().out
