"""The Kafka stream for real, without Docker: Apache Kafka -> Beam's ReadFromKafka (Java, expanded and run by
runners/expansion.py's local JVM) -> the whole DAG on Prism -> SQLite, checked against plain Python."""

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.generator import GeneratorConfig
from loadgen.publish import EVENT_TIME, emissions_around_now, publish
from runners import expansion
from sources.kafka import parse_kafka_url
from tests.pubsub_cases import odd_clicks, wait_for
from tests.stream_truth import expected_tables, sink_has_tables, sink_tables

pytestmark = [pytest.mark.kafka, pytest.mark.prism, pytest.mark.slow]

CONFIG = GeneratorConfig(events=3_000, seed=31, ads=120, minutes=3, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.02)
TOP_N, SLIDING_MINUTES = 10, 3
WAIT_SECONDS = 240
PARTITIONS = 3  # the kafka_topic fixture's
GROUP = "adclick-test"
ROOT = Path(__file__).resolve().parent.parent


class RoundRobinPublisher:
    """Like loadgen's KafkaPublisher, but record i goes to partition i % 3: its sticky partitioner can put a
    burst of clicks into one partition (seen here: 3,300 of 3,300), and the stream must merge three."""

    def __init__(self, url: str):
        from confluent_kafka import Producer
        parsed = parse_kafka_url(url)
        self._topic, self._sent = parsed.topic, 0
        self._producer = Producer({"bootstrap.servers": parsed.brokers, "enable.idempotence": True})

    def send(self, line: bytes, event_ms: int) -> None:
        self._producer.produce(self._topic, value=line, partition=self._sent % PARTITIONS,
                               headers={EVENT_TIME: str(event_ms)})
        self._sent += 1
        self._producer.poll(0)

    def flush(self) -> None:
        assert self._producer.flush(60) == 0


def dead_letter_reasons(directory: Path) -> dict:
    return dict(collections.Counter(json.loads(line)["reason"] for path in glob.glob(str(directory / "*.jsonl"))
                                    for line in Path(path).read_text().splitlines()))


def test_a_kafka_stream_on_prism_equals_the_truth(kafka_topic, tmp_path):
    """`adclick stream --runner prism` over 3 partitions: the generator's resends, disorder, late and malformed
    lines, then a phone 3 hours ahead and clicks 2 hours late once the watermark has moved on."""
    publisher = RoundRobinPublisher(kafka_topic)
    sent = publish(emissions_around_now(CONFIG), publisher)
    db, dead, log_path = tmp_path / "stream.db", tmp_path / "dead", tmp_path / "stream.log"
    log = open(log_path, "wb")  # a pipe nobody reads until the end would fill up and block the stream
    stream = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "stream", "--runner", "prism", "--source", kafka_topic,
         "--sink", f"sqlite:///{db}", "--kafka-group", GROUP, "--top-n", str(TOP_N),
         "--top-sliding-minutes", str(SLIDING_MINUTES), "--early-firing-seconds", "2",
         "--dead-letter-dir", str(dead), "--dead-letter-every-seconds", "2"],
        cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    expected = expected_tables(sent.truth, TOP_N, SLIDING_MINUTES)
    try:
        wait_for(lambda: sink_has_tables(db) and sink_tables(db)["clicks_per_minute"], "the first panes",
                 seconds=WAIT_SECONDS, detail=lambda: log_path.read_text(errors="replace")[-2000:])
        now_ms = int(time.time() * 1000)
        for line in odd_clicks(now_ms, 3, 4, "skewed") + odd_clicks(now_ms, -2, 5, "late"):
            publisher.send(line, json.loads(line)["click_ts"])
        publisher.flush()
        wait_for(lambda: sink_tables(db) == expected, "every table to equal the truth", seconds=WAIT_SECONDS,
                 detail=lambda: {table: (len(rows), len(expected[table])) for table, rows in sink_tables(db).items()})
        expected_reasons = {"skewed": 4, "too_late": 5}
        wait_for(lambda: {k: v for k, v in dead_letter_reasons(dead).items() if k in expected_reasons}
                 == expected_reasons and sum(dead_letter_reasons(dead).values()) == sent.malformed + 9,
                 "the dead letters", seconds=WAIT_SECONDS, detail=lambda: dead_letter_reasons(dead))
        assert sink_tables(db) == expected
        jvms = [pid for pid in children(stream.pid) if "ExpansionService" in command_line(pid)]
        assert len(jvms) == 1
    finally:
        os.killpg(stream.pid, signal.SIGINT)
        stream.wait(timeout=120)
        log.close()
    assert committed_offsets(kafka_topic, GROUP) == [], "Prism commits no offset (sources/kafka.py)"
    assert not alive(jvms[0]), "the expansion service's JVM ends with the stream"
    assert not list((expansion.home() / "logs").glob(f"service-{stream.pid}-*.log"))


def children(pid: int) -> list:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def committed_offsets(url: str, group: str) -> list:
    from confluent_kafka import Consumer, TopicPartition
    parsed = parse_kafka_url(url)
    consumer = Consumer({"bootstrap.servers": parsed.brokers, "group.id": group})
    try:
        partitions = consumer.committed([TopicPartition(parsed.topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return [(part.partition, part.offset) for part in partitions if part.offset >= 0]


def test_the_expansion_service_never_installed_is_one_line_that_says_make_install(tmp_path):
    env = dict(os.environ, ADCLICK_EXPANSION_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "from runners import expansion; expansion.address()"],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("runners.expansion.ExpansionServiceError: Beam's Kafka expansion service 2.73.0 is not "
                           f"installed in {tmp_path}: run `make install`"), last


def test_the_jvm_is_stopped_with_the_process_that_started_it(tmp_path):
    script = "from runners import expansion; print(expansion.address(), expansion._service[0].pid, flush=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=expansion.START_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    address, pid = done.stdout.split()
    assert address.startswith("localhost:")
    assert not alive(int(pid))
