"""A replay into Bigtable restates each minute it holds, and says so: a partial one (one file of three) warns of
the minutes whose total it lowered. Unlike SQLite it cannot restate a minute whole: an ad the partial replay did
not see in a minute keeps the full replay's cell. Expected values come from the generator's truth and the raw lines."""


import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from sinks.bigtable import ALL_CLICKS, COUNTS, decode_count, parse_minute_key
from tests.replay_truth import assert_partial_restatement, events_in, per_ad_and_minute, per_minute, read_truth
from tests.servers.bigtable import all_cells

pytestmark = [pytest.mark.bigtable, pytest.mark.slow]
CONFIG = GeneratorConfig(events=6_000, seed=41, ads=60, minutes=12, duplicate_rate=0.05, malformed_rate=0.01)


def clicks_per_ad_and_minute(url) -> dict:
    """{(ad_id, minute): clicks} of the table's `min#` rows."""
    return {tuple(reversed(parse_minute_key(key))): decode_count(versions[0][1])
            for (key, family, qualifier), versions in all_cells(url).items()
            if key.startswith(b"min#") and (family, qualifier) == (COUNTS, ALL_CLICKS)}


def run(log, url, tmp_path, pattern):
    return replay.run(["--input", str(log / pattern), "--sink", url,
                       "--dead-letter", str(tmp_path / "dead.jsonl"), "--summary", str(tmp_path / "summary.json")])


def test_a_partial_replay_into_bigtable_restates_its_minutes_and_warns_of_those_it_lowered(
        bigtable_url, tmp_path, capsys):
    log = tmp_path / "log"
    write_log(CONFIG, log, files=3)
    truth = read_truth(log)
    truth_by_id = {event["event_id"]: event for event in truth}
    part_events = events_in(log / "clicks-00001.jsonl", truth_by_id)
    full, part = per_minute(truth), per_minute(part_events)
    full_cells, part_cells = per_ad_and_minute(truth), per_ad_and_minute(part_events)
    # A minute's total goes down where the replay lowered the ads it saw; the ads it did not see keep their cells.
    after = {**full_cells, **part_cells}
    lowered = {minute for minute in part
               if sum(n for (_, m), n in after.items() if m == minute) < full[minute]}
    assert lowered and set(part) < set(full)  # the case at hand: the middle file covers some minutes in part

    summary = run(log, bigtable_url, tmp_path, "clicks-*")
    assert (summary["restated_windows"], summary["lowered_windows"]) == (len(full), 0)
    assert (summary["restated_from"], summary["restated_to"]) == (min(full), max(full))
    assert clicks_per_ad_and_minute(bigtable_url) == full_cells
    capsys.readouterr()

    summary = run(log, bigtable_url, tmp_path, "clicks-00001.jsonl")
    assert_partial_restatement(summary, tmp_path / "summary.json", capsys.readouterr().out, part, lowered)
    assert clicks_per_ad_and_minute(bigtable_url) == after

    summary = run(log, bigtable_url, tmp_path, "clicks-*")  # the full replay again restores every cell
    assert summary["lowered_windows"] == 0 and clicks_per_ad_and_minute(bigtable_url) == full_cells
    assert "fewer clicks" not in capsys.readouterr().out
