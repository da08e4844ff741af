"""The Kafka stream for real, without Docker: Apache Kafka -> Beam's ReadFromKafka (Java, expanded and run by
runners/expansion.py's local JVM) -> the whole DAG on Prism -> SQLite, checked against plain Python."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from loadgen.generator import GeneratorConfig
from loadgen.publish import EVENT_TIME, emissions_around_now, publish
from pipelines.click_pipeline import build_pipeline
from runners import expansion, prism, stream
from sinks import sink_for
from sinks.dead_letter_files import WriteDeadLetterFiles
from sinks.meta import check_sink
from sources.kafka import ReadKafkaStream, parse_kafka_url
from tests.pubsub_cases import wait_for
from tests.stream_truth import expected_tables, sink_tables

pytestmark = [pytest.mark.kafka, pytest.mark.prism, pytest.mark.slow]

CONFIG = GeneratorConfig(events=3_000, seed=31, ads=120, minutes=3, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.02)
TOP_N, SLIDING_MINUTES = 10, 3
WAIT_SECONDS = 240
PARTITIONS = 3  # the kafka_topic fixture's


class RoundRobinPublisher:
    """Like loadgen's KafkaPublisher, but record i goes to partition i % 3: its sticky partitioner puts a
    burst of clicks into one partition, and the stream must merge three."""

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


def dead_letters(directory: Path) -> list:
    return [json.loads(line) for path in glob.glob(str(directory / "**" / "*.jsonl"), recursive=True)
            for line in Path(path).read_text().splitlines()]


def test_a_kafka_stream_on_prism_equals_the_truth(kafka_topic, tmp_path):
    sent = publish(emissions_around_now(CONFIG), RoundRobinPublisher(kafka_topic))
    db, dead = tmp_path / "stream.db", tmp_path / "dead"
    args, _ = stream.parser().parse_known_args(
        ["--source", kafka_topic, "--sink", f"sqlite:///{db}", "--top-n", str(TOP_N),
         "--top-sliding-minutes", str(SLIDING_MINUTES), "--early-firing-seconds", "2"])
    config = stream.stream_config(args)
    check_sink(args.sink, config.window.size_seconds, config.aggregates.filter_dimensions)
    options = prism.configure(PipelineOptions([], streaming=True))
    pipeline = build_pipeline(beam.Pipeline(options=options), source=ReadKafkaStream(kafka_topic, "adclick-test"),
                              sink=sink_for(args.sink), dead_letter_sink=WriteDeadLetterFiles(str(dead), 2),
                              config=config)
    result = pipeline.run()
    expected = expected_tables(sent.truth, TOP_N, SLIDING_MINUTES)
    try:
        wait_for(lambda: db.exists() and sink_tables(db) == expected, "every table to equal the truth",
                 seconds=WAIT_SECONDS,
                 detail=lambda: {table: (len(rows), len(expected[table])) for table, rows in sink_tables(db).items()})
        wait_for(lambda: len(dead_letters(dead)) == sent.malformed, "a dead letter per malformed line",
                 seconds=WAIT_SECONDS, detail=lambda: (len(dead_letters(dead)), sent.malformed))
    finally:
        result.cancel()
    assert committed_offsets(kafka_topic, "adclick-test") == [], "Prism commits no offset (sources/kafka.py)"


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
                          env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("runners.expansion.ExpansionServiceError: Beam's Kafka expansion service 2.73.0 is not "
                           f"installed in {tmp_path}: run `make install`"), last


def test_the_jvm_is_stopped_with_the_process_that_started_it(tmp_path):
    script = "from runners import expansion; print(expansion.address(), expansion._service[0].pid, flush=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=expansion.START_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    address, pid = done.stdout.split()
    assert address.startswith("localhost:")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
