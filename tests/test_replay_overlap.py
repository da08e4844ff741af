"""The same logs replayed twice, and overlapping ranges replayed (one file, then two overlapping globs, partial
then whole): every time the sink holds exactly what the files replayed so far hold, and each file is read once
however many patterns match it. Expected tables come from the generator's truth.jsonl and the raw lines alone.
(A second whole replay of Bigtable changing no cell, and a partial replay restating its minutes, are
tests/test_bigtable_e2e.py's and tests/test_partial_replay.py's.)"""

import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from tests.replay_truth import events_in, read_truth
from tests.sink_reading import bigtable_tables
from tests.stream_truth import expected_tables, sink_tables

pytestmark = [pytest.mark.faults, pytest.mark.slow]
CONFIG = GeneratorConfig(events=5_000, seed=61, ads=50, minutes=9, duplicate_rate=0.08, malformed_rate=0.01)
TOP_N, SLIDING = 100, 5
COUNTS = ("read", "unique", "duplicates", "malformed")


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("log")
    return out, write_log(CONFIG, out, files=3)


def tables_in(sink_url):
    if sink_url.startswith("sqlite:"):
        return sink_tables(sink_url[len("sqlite:///"):])
    return bigtable_tables(sink_url)


def replay_patterns(sink_url, tmp_path, *patterns):
    return replay.run([*[part for pattern in patterns for part in ("--input", str(pattern))], "--sink", sink_url,
                       "--dead-letter", str(tmp_path / "dead.jsonl")])


def truth_of(log, names):
    """The unique clicks of some of the log's files (a click resent in two of them once), and their tables."""
    truth_by_id = {event["event_id"]: event for event in read_truth(log)}
    events = {event["event_id"]: event for name in names for event in events_in(log / name, truth_by_id)}
    return list(events.values())


def records_in(log, names) -> int:
    """Records of some of the log's files: their lines, but for empty ones (and ones of only spaces, tabs, CRs)."""
    return sum(1 for name in names for line in (log / name).read_bytes().split(b"\n") if line.strip(b" \t\r"))


def test_the_same_logs_replayed_twice_give_the_truth_both_times(log, tmp_path, sink_url):
    out, manifest = log
    expected = expected_tables(read_truth(out), TOP_N, SLIDING)
    for _ in range(2):
        summary = replay_patterns(sink_url, tmp_path, out / "clicks-*")
        assert {name: summary[name] for name in COUNTS} == {name: manifest[name] for name in COUNTS}
        assert summary["lowered_windows"] == 0
        assert tables_in(sink_url) == expected


def test_overlapping_ranges_one_file_then_overlapping_globs_partial_then_whole(log, tmp_path, sink_url):
    """Each run covers everything the ones before it did, so on Bigtable too (which cannot delete a cell) every
    cell is the latest run's: the sink is the truth of the files replayed so far."""
    out, manifest = log
    names = sorted(path.name for path in out.glob("clicks-*"))
    assert len(names) == 3

    replay_patterns(sink_url, tmp_path, out / names[0])
    assert tables_in(sink_url) == expected_tables(truth_of(out, names[:1]), TOP_N, SLIDING)

    # Partial: two globs that both match the middle file, and cover the first run's.
    summary = replay_patterns(sink_url, tmp_path, out / "clicks-0000[01].jsonl", out / names[1])
    assert tables_in(sink_url) == expected_tables(truth_of(out, names[:2]), TOP_N, SLIDING)
    assert summary["read"] == records_in(out, names[:2])  # the middle file was read once

    # Whole: every file, the first two matched twice.
    summary = replay_patterns(sink_url, tmp_path, out / "clicks-*", out / "clicks-0000[01].jsonl")
    assert {name: summary[name] for name in COUNTS} == {name: manifest[name] for name in COUNTS}
    assert summary["lowered_windows"] == 0
    assert tables_in(sink_url) == expected_tables(read_truth(out), TOP_N, SLIDING)
