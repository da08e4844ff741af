"""A Bigtable outage mid-stream: the emulator frozen for 20 s (SIGSTOP, then SIGCONT; it keeps its data in memory
only, so it is never restarted) while a Pub/Sub stream on the DirectRunner writes into it. The writes retry with
backoff (sinks/bigtable.py's write_rows), and the stream ends with every table equal to plain Python's answer."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from sinks import bigtable, bigtable_table
from tests.pubsub_cases import wait_for
from tests.servers import environment, free_port
from tests.servers.bigtable import all_cells, new_table_url, start_emulator, stop_emulator
from tests.stream_truth import expected_tables

pytestmark = [pytest.mark.faults, pytest.mark.bigtable, pytest.mark.pubsub, pytest.mark.slow]

CONFIG = GeneratorConfig(events=1_200, seed=41, ads=60, minutes=1, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.02)
TOP_N, SLIDING_MINUTES = 10, 3
FREEZE_SECONDS = 20
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def own_emulator():
    """An emulator of this test's own (the session's is shared, and this one is frozen): (process, table URL)."""
    port = free_port()
    process = start_emulator(port)
    try:
        with environment("BIGTABLE_EMULATOR_HOST", f"127.0.0.1:{port}"):
            url = new_table_url("fault")
            bigtable.create_table(bigtable_table(url))
            yield process, url
    finally:
        os.kill(process.pid, signal.SIGCONT)  # a frozen process cannot stop
        stop_emulator(process)


def freeze(pid: int) -> None:
    """SIGSTOP, then wait until every thread is stopped: the signal is asynchronous, and a thread still running
    could answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not all(Path(task, "stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
                  for task in Path(f"/proc/{pid}/task").iterdir()):
        assert time.monotonic() < deadline, "the emulator did not stop"
        time.sleep(0.01)


def bigtable_tables(url: str) -> dict:
    """The table's cells as the four tables of tests/stream_truth.sink_tables, and whether its `min#` rows mirror
    its `ad#` rows (mid-write, one of the two cells of a count may be written and not yet the other)."""
    per_ad, per_minute, top, sliding = [], [], [], []
    for (key, _family, qualifier), versions in all_cells(url).items():
        value = versions[0][1]
        if key.startswith(b"ad#"):
            per_ad.append((*bigtable.parse_ad_key(key), qualifier.decode(), bigtable.decode_count(value)))
        elif key.startswith(b"min#"):
            minute, ad_id = bigtable.parse_minute_key(key)
            per_minute.append((ad_id, minute, qualifier.decode(), bigtable.decode_count(value)))
        elif key.startswith(bigtable.SLIDING_PREFIX.encode()):
            minutes, reversed_end = key[len(bigtable.SLIDING_PREFIX):].split(b"#")
            end = bigtable.MAX_MINUTE - int(reversed_end)
            sliding += [(end, int(minutes), rank, ad_id, clicks)
                        for rank, (ad_id, clicks) in enumerate(bigtable.decode_ranking(value), 1)]
        elif key.startswith(bigtable.TOP_PREFIX.encode()):
            top += [(bigtable.parse_top_key(key), rank, ad_id, clicks)
                    for rank, (ad_id, clicks) in enumerate(bigtable.decode_ranking(value), 1)]
    all_clicks = bigtable.ALL_CLICKS.decode()
    return {
        "clicks_per_minute": sorted((ad, minute, n) for ad, minute, q, n in per_ad if q == all_clicks),
        "clicks_per_minute_by_filter": sorted((ad, minute, q, n) for ad, minute, q, n in per_ad if q != all_clicks),
        "top_ads": sorted(top),
        "top_ads_sliding": sorted(sliding),
        "mirrored": sorted(per_ad) == sorted(per_minute),
    }


def differences(url: str, expected: dict) -> dict:
    found = bigtable_tables(url)
    return {table: (len(found[table]), len(rows)) for table, rows in expected.items() if found[table] != rows} | (
        {} if found["mirrored"] else {"mirrored": False})


def test_a_stream_outlives_a_bigtable_frozen_for_20_s(own_emulator, pubsub_topic, tmp_path):
    emulator, url = own_emulator
    topic, subscription = pubsub_topic
    emissions = list(emissions_around_now(CONFIG))
    before, during = emissions[:len(emissions) // 2], emissions[len(emissions) // 2:]
    first = publish(iter(before), PubSubPublisher(topic))
    db_log, summary_path = tmp_path / "stream.log", tmp_path / "summary.json"
    log = open(db_log, "wb")  # a pipe nobody reads until the end would fill up and block the stream
    stream = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "stream", "--source", subscription, "--sink", url,
         "--top-n", str(TOP_N), "--top-sliding-minutes", str(SLIDING_MINUTES), "--early-firing-seconds", "2",
         "--dead-letter-dir", str(tmp_path / "dead"), "--dead-letter-every-seconds", "2",
         "--summary", str(summary_path)],
        cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: bigtable_tables(url)["clicks_per_minute"], "the first panes",
                 detail=lambda: db_log.read_text(errors="replace")[-2000:])
        freeze(emulator.pid)
        frozen_at = time.monotonic()
        second = publish(iter(during), PubSubPublisher(topic))  # the stream reads on while its sink is frozen
        time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
        os.kill(emulator.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        truth = first.truth + [event for event in second.truth
                               if event["event_id"] not in {e["event_id"] for e in first.truth}]
        expected = expected_tables(truth, TOP_N, SLIDING_MINUTES)
        wait_for(lambda: not differences(url, expected), "every table to equal the truth",
                 detail=lambda: differences(url, expected))
        caught_up = time.monotonic() - thawed_at
    finally:
        os.killpg(stream.pid, signal.SIGINT)
        stream.wait(timeout=120)
        log.close()
    output = db_log.read_text(errors="replace")
    assert stream.returncode == 0, output[-3000:]
    retries = [line for line in output.splitlines() if f"Bigtable table {url}: " in line and " retry " in line]
    assert retries, "no write was retried while the emulator was frozen"
    print(f"frozen {FREEZE_SECONDS} s; caught up {caught_up:.1f} s after SIGCONT; {len(retries)} retries logged, "
          f"the first: {retries[0].strip()[-160:]}")
    assert not differences(url, expected)
    summary = json.loads(summary_path.read_text())
    read, malformed = first.read + second.read, first.malformed + second.malformed
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"], summary["skewed"],
            summary["too_late"]) == (read, len(truth), read - malformed - len(truth), malformed, 0, 0)
    assert summary["balanced"]


def test_a_write_fails_in_one_line_at_once_on_a_permanent_error_and_at_the_deadline_on_a_transient_one(
        own_emulator):
    emulator, url = own_emulator
    ref = bigtable_table(url)
    rows = list(bigtable.direct_rows(bigtable.count_cells("ad-1", 0, bigtable.ALL_CLICKS, 3)))
    missing = bigtable.client(ref.project).instance(ref.instance).table("missing")
    permanent = r"^Bigtable table missing: a write failed: NOT_FOUND .*not found$"
    with pytest.raises(bigtable.BigtableWriteError, match=permanent):
        bigtable.write_rows(missing, rows, "missing")
    table = bigtable.client(ref.project).instance(ref.instance).table(ref.table)
    freeze(emulator.pid)
    try:
        transient = rf"^Bigtable table {url}: 2 writes still failing after 3 s of retries: DEADLINE_EXCEEDED"
        with pytest.raises(bigtable.BigtableWriteError, match=transient):
            bigtable.write_rows(table, rows, url, deadline_seconds=3)
    finally:
        os.kill(emulator.pid, signal.SIGCONT)
    assert bigtable.write_rows(table, rows, url) == 0
    assert {key: bigtable.decode_count(versions[0][1]) for (key, _, _), versions in all_cells(url).items()} == \
        {key: 3 for key, *_ in bigtable.count_cells("ad-1", 0, bigtable.ALL_CLICKS, 3)}
