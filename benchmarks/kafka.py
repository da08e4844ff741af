"""`adclick bench-kafka`: how fast a replay reads a bounded range of a Kafka topic from a real broker.

It starts nothing: give it a broker's bootstrap address (a Kafka cluster, or
`adclick broker` locally). It creates a topic that keeps its records
(retention.ms=-1), produces `--events` generated clicks to it (the generator's
resends and malformed lines included) and reads the whole topic back three
ways, each timed from start to end:
- client: confluent-kafka alone, one consumer per partition in turn, no Beam:
  what the broker and the client give;
- source only: the replay's ReadKafkaRange (sources/kafka.py: plan the ranges,
  a splittable DoFn per partition) into a counter, no parse, dedup or windows;
- replay: `adclick replay --input kafka://BROKER/TOPIC?from=earliest&to=latest`
  into SQLite, the full DAG.
Each prints records/s; the replay's count is checked against what was produced.
"""

import argparse
import os
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.stream import CountMessages, source_count
from loadgen.generator import GeneratorConfig
from loadgen.publish import KafkaPublisher, emissions_around_now, publish
from runners import replay
from sources.kafka import ReadKafkaRange, consumer_config

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a replay needs no clock


def create_topic(brokers: str, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})  # kept until the topic exists
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config={"retention.ms": "-1"})])
    futures[name].result(30)
    return name


def read_with_client(brokers: str, topic: str) -> int:
    """Every record of every partition, from the start to the end, with confluent-kafka alone."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    consumer = Consumer(consumer_config(brokers))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        records = 0
        for partition in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if low >= high:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            done = False
            while not done:
                for message in consumer.consume(num_messages=1000, timeout=1.0):
                    if message.error() is not None:
                        if message.error().code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"Kafka {topic}-{partition}: {message.error()}")
                        done = True
                        break
                    records += 1
                    if message.offset() >= high - 1:
                        done = True
                        break
        return records
    finally:
        consumer.close()


def read_source_only(url: str, beam_args) -> int:
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    _ = pipeline | "ReadRaw" >> ReadKafkaRange(url) | "CountRecords" >> CountMessages()
    result = pipeline.run()
    result.wait_until_finish()
    return source_count(result)


def _timed(read) -> dict:
    started = time.monotonic()
    records = read()
    seconds = time.monotonic() - started
    return {"records": records, "seconds": round(seconds, 2), "records_per_second": round(records / seconds)}


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="adclick bench-kafka", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="a running broker")
    parser.add_argument("--events", type=int, default=100_000, help="unique clicks to produce (default: %(default)s)")
    parser.add_argument("--partitions", type=int, default=3)
    args, beam_args = parser.parse_known_args(argv)
    topic = create_topic(args.bootstrap, args.partitions)
    url = f"kafka://{args.bootstrap}/{topic}"
    started = time.monotonic()
    sent = publish(emissions_around_now(GeneratorConfig(events=args.events, minutes=10), now_ms=START_MS + 600_000),
                   KafkaPublisher(url))
    produced = time.monotonic() - started
    print(f"produced {sent.read:,} records to {topic} ({args.partitions} partitions) "
          f"in {produced:.1f} s, {sent.read / produced:,.0f}/s")
    report = {"bootstrap": args.bootstrap, "topic": topic, "records": sent.read, "partitions": args.partitions}
    report["client"] = _timed(lambda: read_with_client(args.bootstrap, topic))
    print(f"client (confluent-kafka alone): {report['client']}")
    report["source_only"] = _timed(lambda: read_source_only(url + "?from=earliest&to=latest", beam_args))
    print(f"source only (ReadKafkaRange into a counter): {report['source_only']}")
    with tempfile.TemporaryDirectory(prefix="adclick-bench-kafka-", ignore_cleanup_errors=True) as work:

        def replay_topic():
            summary = replay.run(["--input", url + "?from=earliest&to=latest", "--sink",
                                  f"sqlite:///{os.path.join(work, 'replay.db')}",
                                  "--dead-letter", os.path.join(work, "dead.jsonl")] + beam_args)
            return summary["read"]

        report["replay"] = _timed(replay_topic)
        print(f"replay (full DAG into SQLite): {report['replay']}")
        for name in ("client", "source_only", "replay"):
            if report[name]["records"] != sent.read:
                raise SystemExit(
                    f"adclick bench-kafka: {name} read {report[name]['records']:,} of {sent.read:,} records")
        print(report)
        return report
