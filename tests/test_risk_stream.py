"""`adclick stream --risk-rules` end to end on the Pub/Sub emulator, then `adclick replay --risk-rules` of its
raw archive: both bill and flag exactly what plain Python says (tests/risk_truth.py)."""

import collections
import glob
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from loadgen.publish import PubSubPublisher
from tests.risk_truth import abusive_clicks, verdicts
from tests.stream_truth import MINUTE_MS, sink_clicks_per_minute

pytestmark = [pytest.mark.risk, pytest.mark.pubsub, pytest.mark.slow]

RULES = {"rate": [{"name": "user_rate", "by": "user", "max_clicks": 8}, {"by": "ip", "max_clicks": 12}],
         "blocked": {"ips": ["10.0.0.2/32", "2001:db8:1::/48"], "users": ["u5"]}}
RATES = [("user_rate", "user_id", 8), ("ip_rate", "ip", 12)]


def flagged_in(directory: Path) -> list:
    return sorted((record["event_id"], record["rule"]) for path in glob.glob(str(directory / "*.jsonl"))
                  for record in map(json.loads, Path(path).read_text().splitlines()))


def test_a_stream_and_the_replay_of_its_archive_flag_the_same_clicks(pubsub_topic, tmp_path):
    topic, subscription = pubsub_topic
    # Stamped in the minutes after now (within the 300 s skew): on time, judged when the drain ends them.
    next_minute = (int(time.time() * 1000) // MINUTE_MS + 1) * MINUTE_MS
    clicks = abusive_clicks(next_minute, seed=9, events=600)
    truth = verdicts(clicks, RATES, RULES["blocked"]["ips"], RULES["blocked"]["users"])
    rng = random.Random(4)
    publisher = PubSubPublisher(topic)
    for click in rng.sample(clicks, len(clicks)) + rng.sample(clicks, 40):  # out of order, with resends
        publisher.send(orjson.dumps(click), click["click_ts"])
    publisher.flush()
    (tmp_path / "rules.json").write_text(json.dumps(RULES))
    db, archive = tmp_path / "stream.db", tmp_path / "archive"
    root = Path(__file__).resolve().parent.parent
    with open(tmp_path / "stream.log", "wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "runners.cli", "stream", "--source", subscription, "--sink", f"sqlite:///{db}",
             "--archive", str(archive), "--dead-letter-dir", str(tmp_path / "dead"), "--risk-rules",
             str(tmp_path / "rules.json"), "--duration", "25", "--summary", str(tmp_path / "summary.json")],
            cwd=root, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, (tmp_path / "stream.log").read_text(errors="replace")[-3000:]
    billed = collections.Counter((c["ad_id"], c["click_ts"] // MINUTE_MS * MINUTE_MS)
                                 for c in clicks if c["event_id"] not in truth)
    assert sink_clicks_per_minute(db) == billed
    assert flagged_in(tmp_path / "flagged") == sorted(truth.items())  # `flagged` next to the dead letters
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["flagged"]) == (
        len(clicks) + 40, len(clicks) - len(truth), 40, len(truth))
    assert summary["flagged_by_rule"] == dict(sorted(collections.Counter(truth.values()).items()))
    assert summary["balanced"]

    replayed = subprocess.run(
        [sys.executable, "-m", "runners.cli", "replay", "--input", str(archive / "*" / "*.parquet"),
         "--sink", f"sqlite:///{tmp_path / 'replayed.db'}", "--dead-letter", str(tmp_path / "replay-dead.jsonl"),
         "--risk-rules", str(tmp_path / "rules.json"), "--flagged", str(tmp_path / "replay-flagged.jsonl")],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert replayed.returncode == 0, replayed.stderr
    assert sink_clicks_per_minute(tmp_path / "replayed.db") == billed
    replay_flagged = [json.loads(line) for line in (tmp_path / "replay-flagged.jsonl").read_text().splitlines()]
    assert sorted((f["event_id"], f["rule"]) for f in replay_flagged) == sorted(truth.items())
