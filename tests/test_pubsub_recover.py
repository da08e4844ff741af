"""A local Pub/Sub stream SIGKILLed mid-stream, then `adclick recover`: the DirectRunner acknowledged what it
pulled, and the kill lost what it had not written; the recovery seeks the subscription (created by `adclick
pubsub create`, which retains acknowledged messages) back to the oldest window that can still be open and
restarts the stream. The sink ends equal to the answer computed in plain Python from what was published, and
every message is accounted for: read, archived and dead-lettered once by the recovered stream.

Both run as subprocesses, as a user runs them, on the real emulator. The log is stamped one to three minutes
ahead of now (within the skew limit), so no window closes while the test runs."""

import collections
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from runners import pubsub_admin, reconcile, recover
from tests.pubsub_cases import wait_for
from tests.servers.pubsub import PROJECT
from tests.stream_cases import at, raw, streaming_options
from tests.stream_truth import expected_tables, sink_tables
from transforms.event_time import StampEventTime
from transforms.lateness import SetAsideTooLate
from transforms.parse import VALID, ParseClicks
from transforms.set_aside import TOO_LATE

pytestmark = [pytest.mark.faults, pytest.mark.pubsub, pytest.mark.slow]
AHEAD_MS = 180_000
NEVER_SECONDS = 600  # a file pane period no test lasts: only a drain writes the archive and the dead letters
READ_SECONDS = 120
DRAIN_SECONDS = 60
ROOT = Path(__file__).resolve().parent.parent
MINUTE = 60_000
PER_MINUTE = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads")


def launch(command: str, subscription: str, tmp_path: Path, run: str, *options: str) -> subprocess.Popen:
    with open(tmp_path / f"{run}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "runners.cli", command, "--source", subscription,
             "--sink", f"sqlite:///{tmp_path / 'stream.db'}", "--archive", str(tmp_path / "archive"),
             "--dead-letter-dir", str(tmp_path / f"dead-{run}"), "--summary", str(tmp_path / f"{run}.json"),
             "--early-firing-seconds", "2", "--archive-every-seconds", str(NEVER_SECONDS),
             "--dead-letter-every-seconds", str(NEVER_SECONDS), *options],
            cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=log, stderr=subprocess.STDOUT)


def summary_of(tmp_path: Path, run: str) -> dict:
    try:
        return json.loads((tmp_path / f"{run}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def read_all(process: subprocess.Popen, tmp_path: Path, run: str, messages: int) -> None:
    def done() -> bool:
        assert process.poll() is None, (tmp_path / f"{run}.log").read_text(errors="replace")[-3000:]
        return summary_of(tmp_path, run).get("read") == messages
    wait_for(done, f"{run} to read {messages} messages", READ_SECONDS, detail=lambda: summary_of(tmp_path, run))


def stop_for_good(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def archived_event_ids(root: Path) -> collections.Counter:
    return collections.Counter(event_id for path in glob.glob(str(root / "*" / "*.parquet"))
                               for event_id in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist())


def test_a_stream_killed_mid_stream_then_recovered_counts_every_click_once(pubsub_emulator, tmp_path):
    name = f"recover-{os.getpid()}"
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    pubsub_admin.create(topic, subscription)
    config = GeneratorConfig(events=2_000, minutes=2, seed=71, duplicate_rate=0.05, malformed_rate=0.01)
    emissions = list(emissions_around_now(config, now_ms=int(time.time() * 1000) + AHEAD_MS))
    half = len(emissions) // 2
    truth = list({emission.truth["event_id"]: emission.truth for emission in emissions if emission.truth}.values())

    stream = launch("stream", f"pubsub://{subscription}", tmp_path, "killed")
    try:
        publish(iter(emissions[:half]), PubSubPublisher(f"pubsub://{topic}"))
        read_all(stream, tmp_path, "killed", half)
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait()
    finally:
        stop_for_good(stream)
    # What the kill lost: the messages were acknowledged, and not one reached the archive or the dead letters.
    assert not archived_event_ids(tmp_path / "archive") and not glob.glob(str(tmp_path / "dead-killed" / "*.jsonl"))
    publish(iter(emissions[half:]), PubSubPublisher(f"pubsub://{topic}"))  # while no stream runs

    recovered = launch("recover", f"pubsub://{subscription}", tmp_path, "recovered")
    try:
        read_all(recovered, tmp_path, "recovered", len(emissions))  # the first half again, then the second
        os.killpg(recovered.pid, signal.SIGINT)
        recovered.wait(DRAIN_SECONDS)
    finally:
        stop_for_good(recovered)
    output = (tmp_path / "recovered.log").read_text(errors="replace")
    assert recovered.returncode == 0, output[-3000:]
    assert f"sought {subscription} back to" in output

    assert sink_tables(tmp_path / "stream.db") == expected_tables(truth, 100, 5)
    valid = [orjson.loads(emission.line)["event_id"] for emission in emissions if emission.truth]
    malformed = [emission.line for emission in emissions if emission.truth is None]
    summary = summary_of(tmp_path, "recovered")
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"], summary["too_late"]) \
        == (len(emissions), len(truth), len(valid) - len(truth), len(malformed), 0)
    assert summary["balanced"]
    assert archived_event_ids(tmp_path / "archive") == collections.Counter(valid)
    letters = [json.loads(line) for path in glob.glob(str(tmp_path / "dead-recovered" / "*.jsonl"))
               for line in Path(path).read_text().splitlines()]
    assert sorted((letter["length"], letter["payload"]) for letter in letters) == sorted(  # a bounded copy each
        (len(line), line[:1024].decode("utf-8", "backslashreplace")) for line in malformed)


def test_recover_refuses_a_subscription_that_retains_no_acknowledged_messages(pubsub_topic, tmp_path):
    _, subscription = pubsub_topic  # the fixture's subscription: created without retention
    with pytest.raises(SystemExit) as stop:
        recover.run(["--source", subscription, "--sink", f"sqlite:///{tmp_path / 'none.db'}"])
    assert stop.value.code.startswith("adclick recover: ") and "does not retain acknowledged messages" in \
        stop.value.code and "\n" not in stop.value.code


def test_a_window_closed_before_the_start_is_closed_from_the_first_click():
    """Without a start for the horizon, the first clicks are judged before any timer fired: all pass."""
    for closed_before, too_late in ((None, []), (at(200), ["old"])):
        stream = TestStream().add_elements([raw("old", 1), raw("open", 199)]).advance_watermark_to_infinity()
        pipeline = beam.Pipeline(options=streaming_options())
        judged = (pipeline | stream | ParseClicks())[VALID] | "Stamp" >> StampEventTime(60)
        horizon = None if closed_before is None else int(closed_before * 1000)
        judged = judged | SetAsideTooLate(60, 60, closed_before_ms=horizon)  # minute 0 closes at 120 s
        assert_that(judged[TOO_LATE] | "LateIds" >> beam.Map(lambda d: orjson.loads(d.payload)["event_id"]),
                    equal_to(too_late), label="Late")
        pipeline.run().wait_until_finish()


def test_seek_time_is_the_oldest_window_that_can_still_be_open_less_the_skew_limit():
    now = 1_767_225_600_000 + 30_000  # 00:00:30
    # Open: windows that end within the allowed lateness (600 s) and the windowing's grace (10 s) of now.
    assert recover.seek_time(now, None, 60, 600, 300) == 1_767_225_600_000 - 11 * 60_000 - 300_000
    # A sink whose newest window is older than now (a stream that lagged) moves it back.
    assert recover.seek_time(now, 1_767_225_600_000 - 5 * 60_000, 60, 600, 0) == 1_767_225_600_000 - 16 * 60_000


def test_a_redelivered_window_that_closed_before_the_restart_is_not_reopened(pubsub_emulator, tmp_path):
    """A minute of clicks (more than one pull) counted, its window closed (allowed lateness 20 s), then the stream
    killed and recovered: every message comes again, and the minute's clicks are too late for the new stream, which
    leaves the minute as the killed stream wrote it (its first pulls, judged before any timer fired, used to rewrite
    it with what they held). Sliding rankings over that minute and later ones cannot be whole in the new stream:
    `adclick reconcile --restate` from the raw archive restates them, and then every table is the truth."""
    name = f"recover-closed-{os.getpid()}"
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}"
    pubsub_admin.create(topic, subscription)
    lateness = ("--allowed-lateness-seconds", "20")
    stream = launch("stream", f"pubsub://{subscription}", tmp_path, "killed", *lateness)
    try:
        wait_for(lambda: summary_of(tmp_path, "killed"), "the stream to start", READ_SECONDS)
        while not 2_000 <= time.time() * 1000 % MINUTE <= 15_000:  # a minute's start: its clicks read in time
            time.sleep(0.5)
        minute_end = int(time.time() * 1000) // MINUTE * MINUTE + MINUTE
        first = list(emissions_around_now(GeneratorConfig(events=2_500, minutes=1, seed=73, malformed_rate=0),
                                          now_ms=minute_end))
        publish(iter(first), PubSubPublisher(f"pubsub://{topic}"))
        read_all(stream, tmp_path, "killed", len(first))
        time.sleep(max(0.0, (minute_end + 40_000) / 1000 - time.time()))  # the minute has closed
        later = list(emissions_around_now(GeneratorConfig(events=300, minutes=1, seed=74, malformed_rate=0),
                                          now_ms=int(time.time() * 1000) + MINUTE))
        publish(iter(later), PubSubPublisher(f"pubsub://{topic}"))
        read_all(stream, tmp_path, "killed", len(first) + len(later))
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait()
    finally:
        stop_for_good(stream)
    emissions = first + later
    truth = list({emission.truth["event_id"]: emission.truth for emission in emissions if emission.truth}.values())
    first_copies = sum(1 for emission in first if emission.truth)

    recovered = launch("recover", f"pubsub://{subscription}", tmp_path, "recovered", *lateness)
    try:
        read_all(recovered, tmp_path, "recovered", len(emissions))
        os.killpg(recovered.pid, signal.SIGINT)
        recovered.wait(DRAIN_SECONDS)
    finally:
        stop_for_good(recovered)
    assert recovered.returncode == 0, (tmp_path / "recovered.log").read_text(errors="replace")[-3000:]
    summary = summary_of(tmp_path, "recovered")
    assert (summary["read"], summary["too_late"]) == (len(emissions), first_copies) and summary["balanced"]

    db = tmp_path / "stream.db"
    expected = expected_tables(truth, 100, 5)
    held = sink_tables(db)
    assert {table: held[table] for table in PER_MINUTE} == {table: expected[table] for table in PER_MINUTE}

    # The command recover printed (the stream has drained: no need to wait for its minutes to close).
    follow_up = re.search(r"adclick reconcile (.*) --restate", (tmp_path / "recovered.log").read_text()).group(1)
    arguments = [part.strip("'") for part in follow_up.split()]
    with pytest.raises(SystemExit) as stop:
        reconcile.run([*arguments, "--report", str(tmp_path / "report.json")])
    assert stop.value.code == 1
    assert {d["table"] for d in json.loads((tmp_path / "report.json").read_text())["differences"]} == {
        "top_ads_sliding"}
    assert reconcile.run([*arguments, "--restate"]) == 0
    assert sink_tables(db) == expected
