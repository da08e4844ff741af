"""Stopping a local stream drains it, and an idle stream keeps firing its early panes.

`adclick stream` runs as a subprocess on the Pub/Sub emulator, as a user runs it. The log is
stamped two to three minutes ahead of now (within the skew limit), so no window's end passes
while a test runs: whatever the sink holds came from early panes or from the drain, never from
the watermark passing by itself. Expected values are computed in plain Python from what was
published.
"""

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from runners import beam_compat
from sources.pubsub import ReadPubSub
from tests.pubsub_cases import odd_clicks, stop_for_good, wait_for
from tests.stream_truth import clicks_per_minute, sink_clicks_per_minute

pytestmark = [pytest.mark.pubsub, pytest.mark.slow]
AHEAD_MS = 180_000  # the log's event times end this far ahead of now
NEVER_SECONDS = 600  # a pane period no test lasts
READ_SECONDS = 60  # bound for the stream to read everything published
IDLE_PANES_SECONDS = 15  # bound for idle early panes to bring the sink to the truth (the pull used to block 30 s)
DRAIN_SECONDS = 60  # bound for a drain to finish


def published_log(events: int, seed: int):
    """The emissions to publish (clicks with resends, malformed lines), stamped up to AHEAD_MS ahead of now."""
    config = GeneratorConfig(events=events, minutes=1, seed=seed, malformed_rate=0.01)
    return list(emissions_around_now(config, now_ms=int(time.time() * 1000) + AHEAD_MS))


def start_stream(subscription: str, tmp_path: Path, *options: str) -> subprocess.Popen:
    # Its output goes to a file: a pipe nobody reads until the end fills up and blocks the stream.
    with open(tmp_path / "stream.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "stream", "--source", subscription,
             "--sink", f"sqlite:///{tmp_path / 'stream.db'}", "--archive", str(tmp_path / "archive"),
             "--dead-letter-dir", str(tmp_path / "dead"), "--summary", str(tmp_path / "summary.json"), *options],
            cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ), start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT)


def read_everything(stream: subprocess.Popen, tmp_path: Path, published: int) -> None:
    """Waits until the stream's summary counts every published message read."""
    def read_all() -> bool:
        assert stream.poll() is None, log_tail(tmp_path)
        return summary_of(tmp_path).get("read") == published
    wait_for(read_all, "the stream to read it all", READ_SECONDS, detail=lambda: summary_of(tmp_path))


def summary_of(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being rewritten
        return {}


def log_tail(tmp_path: Path) -> str:
    return (tmp_path / "stream.log").read_text(errors="replace")[-3000:]


def archived_event_ids(root: Path) -> collections.Counter:
    return collections.Counter(event_id for path in glob.glob(str(root / "*" / "*.parquet"))
                               for event_id in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist())


def dead_letters(directory: Path) -> list:
    return [json.loads(line) for path in glob.glob(str(directory / "*.jsonl"))
            for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_drains_every_window_and_file_pane(pubsub_topic, tmp_path, signum):
    """Panes are set never to fire by themselves during the test: only the drain can write them."""
    topic, subscription = pubsub_topic
    emissions = published_log(1500, seed=21)
    stream = start_stream(subscription, tmp_path, "--early-firing-seconds", str(NEVER_SECONDS),
                          "--archive-every-seconds", str(NEVER_SECONDS),
                          "--dead-letter-every-seconds", str(NEVER_SECONDS))
    try:
        sent = publish(iter(emissions), PubSubPublisher(topic))
        publisher, now_ms = PubSubPublisher(topic), int(time.time() * 1000)
        skewed = odd_clicks(now_ms, 3, 4, "skewed")  # a phone 3 hours ahead
        for line in skewed:
            publisher.send(line, json.loads(line)["click_ts"])
        publisher.flush()
        read_everything(stream, tmp_path, sent.read + len(skewed))
        # A terminal's Ctrl-C signals the whole foreground group; a service manager signals the process.
        if signum == signal.SIGINT:
            os.killpg(stream.pid, signum)
        else:
            stream.send_signal(signum)
        stream.wait(DRAIN_SECONDS)
    finally:
        stop_for_good(stream, DRAIN_SECONDS)
    assert stream.returncode == 0, log_tail(tmp_path)

    assert sink_clicks_per_minute(tmp_path / "stream.db") == clicks_per_minute(sent.truth)
    valid_lines = [emission.line for emission in emissions if emission.truth is not None] + skewed
    assert archived_event_ids(tmp_path / "archive") == collections.Counter(
        orjson.loads(line)["event_id"] for line in valid_lines)
    letters = dead_letters(tmp_path / "dead")
    malformed_lines = [emission.line for emission in emissions if emission.truth is None]
    assert sorted(letter["payload"] for letter in letters if letter["reason"] != "skewed") == sorted(
        line.decode("utf-8", "backslashreplace") for line in malformed_lines)
    assert sorted(orjson.loads(letter["payload"])["event_id"] for letter in letters
                  if letter["reason"] == "skewed") == sorted(orjson.loads(line)["event_id"] for line in skewed)

    summary = summary_of(tmp_path)
    assert "running" not in summary
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"], summary["skewed"],
            summary["too_late"]) == (sent.read + len(skewed), sent.unique, sent.duplicates, sent.malformed,
                                     len(skewed), 0)
    assert summary["balanced"]


def test_an_idle_stream_keeps_firing_early_panes(pubsub_topic, tmp_path):
    """Nothing is published after the log; only early panes (every 2 s) can bring the sink to the truth."""
    topic, subscription = pubsub_topic
    stream = start_stream(subscription, tmp_path, "--early-firing-seconds", "2")
    try:
        sent = publish(iter(published_log(1500, seed=22)), PubSubPublisher(topic))
        read_everything(stream, tmp_path, sent.read)
        expected, db = clicks_per_minute(sent.truth), tmp_path / "stream.db"
        wait_for(lambda: db.exists() and sink_clicks_per_minute(db) == expected,
                 "idle early panes to bring the sink to the truth", IDLE_PANES_SECONDS,
                 detail=lambda: f"{sum(sink_clicks_per_minute(db).values()) if db.exists() else 0} of "
                                f"{len(sent.truth)} clicks")
        assert stream.poll() is None, log_tail(tmp_path)
    finally:
        stop_for_good(stream, DRAIN_SECONDS)


def test_an_idle_read_leaves_no_bundles_behind_and_a_drain_ends_the_run(pubsub_topic, beam_fixes):
    """Each pull hands the DirectRunner an empty bundle that its watermark bookkeeping used to keep
    for good (one a second while idle, each walked at every pull); `beam_compat` keeps none."""
    _, subscription = pubsub_topic
    pipeline = beam.Pipeline(options=PipelineOptions(runner="DirectRunner", streaming=True))
    _ = pipeline | ReadPubSub(subscription) | beam.Map(lambda record: record)
    result = pipeline.run()
    time.sleep(3 * beam_compat.PULL_TIMEOUT_SECONDS)
    watermarks = result._evaluation_context._watermark_manager._transform_to_watermarks
    (read,) = [marks for applied, marks in watermarks.items() if not applied.inputs]
    pending = len(read._pending)
    beam_compat.drain(result)
    assert result.wait_until_finish() == PipelineState.DONE
    assert pending == 0
