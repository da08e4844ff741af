"""`adclick bench-stream`: the latency arithmetic on hand-made send and sink times, and a short run
of both phases on each set-up: the DirectRunner on the Pub/Sub emulator, Prism on a real Kafka broker
(the report's shape, every click counted exactly; no timing asserted)."""

import json
import math

import psutil
import pytest

from benchmarks import stream as bench_stream
from benchmarks.stream import (
    RUNNER_BOOKKEEPING,
    Step,
    best_rate,
    describe_differences,
    differences,
    latencies,
    percentile,
    ramp_report,
    reached_times,
    time_by_part,
)

A, B = ("ad-a", 0), ("ad-b", 0)


def test_percentile_is_the_nearest_rank():
    values = list(range(100, 0, -1))  # 1..100, unordered
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # rank ceil(1.5) = 2
    assert percentile([5.0], 99) == 5.0
    # Two of three never seen: the median is infinite.
    assert percentile([1.0, math.inf, math.inf], 50) == math.inf
    assert math.isnan(percentile([], 50))


def test_reached_times_note_when_each_count_first_showed():
    polls = [(10.0, {A: 1}), (11.0, {A: 1, B: 2}), (12.0, {A: 3, B: 2}), (13.0, {A: 3, B: 3})]
    reached = reached_times(polls)
    assert {key: list(times) for key, times in reached.items()} == {A: [10.0, 12.0, 12.0], B: [11.0, 11.0, 13.0]}


def test_latency_of_the_kth_click_is_the_kth_reached_time_minus_its_send():
    sent = {A: [9.0, 9.5, 11.0, 11.5], B: [10.5]}
    reached = {A: [10.0, 12.0, 12.0], B: [11.0, 11.0]}  # B shows 2 clicks but only 1 was sent
    assert latencies(sent, reached) == {A: [1.0, 2.5, 1.0, math.inf], B: [0.5]}


def test_ramp_report_per_step():
    # Step 1 at 2/s over [0, 2): four clicks; step 2 at 4/s over [2, 3): four clicks.
    steps = [Step.of(2.0, 0.0, 2.0, ((A, 0.0), (B, 0.5), (A, 1.0), (B, 1.5))),
             Step.of(4.0, 2.0, 3.0, ((A, 2.0), (A, 2.25), (B, 2.5), (B, 2.75)))]
    polls = [(1.0, {A: 1}), (2.0, {A: 2, B: 2}), (3.0, {A: 4, B: 3}), (4.0, {A: 4, B: 3})]
    # A: sends 0, 1, 2, 2.25 reached at 1, 2, 3, 3 -> latencies 1, 1, 1, 0.75.
    # B: sends 0.5, 1.5, 2.5, 2.75 reached at 2, 2, 3 -> 1.5, 0.5, 0.5, never.
    # Visible during [0, 2): 1 (at 1.0); during [2, 3): 3 (at 2.0); at 3.0, 3 more (after both).
    assert list(steps[1].clicks()) == [(A, 2.0), (A, 2.25), (B, 2.5), (B, 2.75)]
    step1, step2 = ramp_report(steps, reached_times(polls))
    assert step1 == {"rate": 2.0, "events": 4, "offered_per_second": 2.0, "sustained_per_second": 0.5,
                     "unseen": 0, "p50_seconds": 1.0, "p95_seconds": 1.5, "p99_seconds": 1.5,
                     "p99_seconds_by_minute": [1.5]}
    assert step2 == {"rate": 4.0, "events": 4, "offered_per_second": 4.0, "sustained_per_second": 3.0,
                     "unseen": 1, "p50_seconds": 0.75, "p95_seconds": math.inf, "p99_seconds": math.inf,
                     "p99_seconds_by_minute": [math.inf]}
    assert best_rate([step1, step2]) == step1


def test_a_long_steps_p99_by_minute_of_publish():
    step = Step.of(1.0, 0.0, 130.0, ((A, 10.0), (A, 70.0), (B, 125.0)))
    (report,) = ramp_report([step], reached_times([(11.0, {A: 1}), (75.0, {A: 2}), (128.0, {B: 1})]))
    assert report["p99_seconds_by_minute"] == [1.0, 5.0, 3.0]


def test_differences_name_each_count_unlike_the_truth():
    differing = differences({A: 3, B: 1, ("ad-c", 0): 2}, {A: 3, B: 2, ("ad-d", 0): 1})
    assert differing == [(B, 1, 2), (("ad-c", 0), 2, None), (("ad-d", 0), None, 1)]
    assert describe_differences(differing).startswith("the sink's counts differ from the truth in 3 (ad, minute)s: ")


class Frame:
    def __init__(self, function, file_path, time, children=()):
        self.function, self.file_path, self.time, self.children = function, file_path, time, list(children)


def test_profile_time_goes_to_the_outermost_named_part():
    beam = "/venv/lib/python3.11/site-packages/apache_beam"
    dedup = Frame("process", "/work/main/transforms/dedup.py", 3.0, [
        Frame("read", f"{beam}/runners/direct/direct_userstate.py", 2.0)])  # caused by our code: ours
    root = Frame("run", f"{beam}/runners/direct/executor.py", 10.0, [
        Frame("_fire_timers", f"{beam}/runners/direct/executor.py", 4.0, [
            Frame("get_timers", f"{beam}/transforms/trigger.py", 3.5)]),  # inside the monitor: the monitor's
        Frame("attempt_call", f"{beam}/runners/direct/executor.py", 5.5, [
            dedup, Frame("process_elements", f"{beam}/transforms/trigger.py", 1.5)]),
    ])
    assert time_by_part(root) == {
        RUNNER_BOOKKEEPING: 0.5 + 1.0,  # run's own 0.5 s, attempt_call's own 1.0 s
        "runner: timer scan and watermarks (monitor)": 4.0,
        "ours: transforms/dedup.py": 3.0,
        "Beam: windows, triggers and their keyed state": 1.5,
    }


@pytest.mark.pubsub
@pytest.mark.slow
def test_a_short_run_counts_every_click(pubsub_emulator, capsys):
    report = bench_stream.run(["--events", "100", "--rates", "4", "--seconds-per-rate", "5",
                               "--drain-seconds", "120"])
    for phase in ("source_only", "full_dag"):
        assert report[phase]["messages"] >= 100  # drained: every message counted (the run exits otherwise)
        assert report[phase]["messages_per_second"] > 0
    (step,) = report["ramp"]
    assert step["events"] == 20
    assert step["unseen"] == 0
    assert 0 <= step["p50_seconds"] <= step["p95_seconds"] <= step["p99_seconds"] < math.inf
    assert step["sustained_per_second"] > 0
    assert report["ramp_exact"] is True
    assert "p99" in capsys.readouterr().out


@pytest.mark.kafka
@pytest.mark.prism
@pytest.mark.slow
def test_a_short_kafka_run_on_prism_counts_every_click_exactly(kafka_broker, tmp_path, capsys):
    """One backlog read by ReadFromKafka alone and by the whole DAG (its sink equal to the generator's
    truth per ad and minute), then one rate; --json writes what run() returns."""
    path = tmp_path / "bench.json"
    report = bench_stream.run(["--runner", "prism", "--source", "kafka", "--bootstrap", kafka_broker,
                               "--events", "300", "--rate", "5", "--seconds-per-rate", "4", "--drain-seconds", "120",
                               "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    backlog = report["backlog"]
    assert backlog["unique"] == 300
    assert backlog["messages"] == 300 + backlog["duplicates"] + backlog["malformed"]
    assert report["source_only"]["counted"] == backlog["messages"]  # what ReadFromKafka gave, exactly
    assert report["full_dag"]["counted"] == 300 and report["full_dag"]["exact"] is True  # the sink = the truth
    for phase in ("source_only", "full_dag"):
        assert report[phase]["messages_per_second"] > 0 and report[phase]["peak_rss_mb"] > 0
    assert report["full_dag_share_of_source_only"] > 0
    # The DAG's processes, each by name: Prism, the Kafka read's JVM and this one (the LOOPBACK worker).
    assert {"prism", "java", psutil.Process().name()} <= set(report["full_dag"]["peak_rss_mb_by_process"])
    by_process = report["ramp_rss_mb_by_process_by_minute"]
    for minute, total in enumerate(report["ramp_rss_mb_by_minute"]):
        assert abs(sum(minutes[minute] for minutes in by_process.values()) - total) <= len(by_process)
    (step,) = report["ramp"]
    assert step["events"] == 20 and step["unseen"] == 0
    assert report["ramp_exact"] is True and report["ramp_differing"] == []
    assert 0 <= step["p50_seconds"] <= step["p95_seconds"] <= step["p99_seconds"] < math.inf
    assert report["ramp_peak_rss_mb"] > 0
    assert "full DAG at" in capsys.readouterr().out


def test_pubsub_runs_on_the_direct_runner_and_kafka_on_prism():
    for argv in (["--runner", "prism", "--source", "pubsub"], ["--runner", "direct", "--source", "kafka"]):
        with pytest.raises(SystemExit, match="runs on --runner"):
            bench_stream.run(argv)
