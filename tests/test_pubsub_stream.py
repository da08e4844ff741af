"""`adclick stream` end to end: the generator publishes to the Pub/Sub emulator, the stream runs on the
DirectRunner into SQLite, a raw archive and dead letters; then the archive is replayed.

The DirectRunner's Pub/Sub watermark is the wall clock, so the log is stamped in the minute before
now. Expected values come from the generator's truth in plain Python.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from runners import replay
from tests.pubsub_cases import odd_clicks, wait_for
from tests.stream_truth import MINUTE_MS, clicks_per_minute, sink_clicks_per_minute, sink_tables

pytestmark = [pytest.mark.pubsub, pytest.mark.slow]


def dead_letter_reasons(directory: Path) -> dict:
    reasons = {}
    for path in glob.glob(str(directory / "*.jsonl")):
        for line in Path(path).read_text().splitlines():
            reason = json.loads(line)["reason"]
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def archived_rows(root: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in glob.glob(str(root / "*" / "*.parquet")))


def start_stream(subscription, db, archive, dead, summary_path, log) -> subprocess.Popen:
    """`adclick stream` from the subscription into `db`, archiving and writing dead letters every 3 s."""
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "stream", "--source", subscription, "--sink", f"sqlite:///{db}",
         "--archive", str(archive), "--archive-every-seconds", "3", "--dead-letter-dir", str(dead),
         "--dead-letter-every-seconds", "3", "--early-firing-seconds", "2", "--top-sliding-minutes", "3",
         "--summary", str(summary_path)],
        cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ), start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT)


def replays_as_the_stream_wrote(archive, db, tmp_path, late_minute):
    """The archive replayed: the same tables (once the stream's last early panes are written),
    plus the too-late clicks' own minute: the restatement a reconciliation makes."""
    replayed = tmp_path / "replayed.db"
    replay.run(["--input", str(archive / "*" / "*.parquet"), "--sink", f"sqlite:///{replayed}",
                "--dead-letter", str(tmp_path / "replay-dead.jsonl"), "--top-sliding-minutes", "3"])
    time_column = {"clicks_per_minute": 1, "clicks_per_minute_by_filter": 1, "top_ads": 0, "top_ads_sliding": 0}
    recent = {table: [row for row in rows if row[time_column[table]] > late_minute + 10 * MINUTE_MS]
              for table, rows in sink_tables(replayed).items()}
    wait_for(lambda: sink_tables(db) == recent, "the stream's tables to equal the replayed archive's",
             detail=lambda: [table for table, rows in sink_tables(db).items() if rows != recent[table]])
    assert sink_clicks_per_minute(replayed)[("ad-odd", late_minute)] == 5


def test_stream_equals_the_truth_and_the_replayed_archive(pubsub_topic, tmp_path):
    topic, subscription = pubsub_topic
    sent = publish(emissions_around_now(GeneratorConfig(events=2000, minutes=1, seed=5)), PubSubPublisher(topic))
    db, archive, dead = tmp_path / "stream.db", tmp_path / "archive", tmp_path / "dead"
    summary_path, log_path = tmp_path / "summary.json", tmp_path / "stream.log"
    # Its output goes to a file: a pipe nobody reads until the end fills up and blocks the stream.
    log = open(log_path, "wb")
    stream = start_stream(subscription, db, archive, dead, summary_path, log)
    try:
        expected = clicks_per_minute(sent.truth)
        wait_for(lambda: db.exists() and sink_clicks_per_minute(db), "the first panes")
        # The watermark has moved on: now a phone 3 hours ahead, and clicks 2 hours late.
        now_ms = int(time.time() * 1000)
        late_publisher = PubSubPublisher(topic)
        for line in odd_clicks(now_ms, 3, 4, "skewed") + odd_clicks(now_ms, -2, 5, "late"):
            late_publisher.send(line, json.loads(line)["click_ts"])
        late_publisher.flush()

        wait_for(lambda: sink_clicks_per_minute(db) == expected, "the sink to equal the truth",
                 detail=lambda: {key: (sink_clicks_per_minute(db).get(key), count) for key, count in expected.items()
                                 if sink_clicks_per_minute(db).get(key) != count})
        expected_reasons = {"skewed": 4, "too_late": 5}
        wait_for(lambda: {k: v for k, v in dead_letter_reasons(dead).items() if k in expected_reasons}
                 == expected_reasons and sum(dead_letter_reasons(dead).values()) == sent.malformed + 9,
                 "the dead letters")
        wait_for(lambda: archived_rows(archive) == sent.unique + sent.duplicates + 9, "the archive")

        late_minute = (now_ms - 2 * 3600_000) // MINUTE_MS * MINUTE_MS
        replays_as_the_stream_wrote(archive, db, tmp_path, late_minute)
    finally:
        os.killpg(stream.pid, signal.SIGINT)
        stream.wait(timeout=120)
        log.close()
    assert stream.returncode == 0, log_path.read_text(errors="replace")[-3000:]
    summary = json.loads(summary_path.read_text())
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"], summary["skewed"],
            summary["too_late"]) == (sent.read + 9, sent.unique, sent.duplicates, sent.malformed, 4, 5)
    assert summary["balanced"]
