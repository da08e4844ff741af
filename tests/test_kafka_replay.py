"""Bounded replays of a Kafka topic (a real Apache Kafka broker) through the DAG into SQLite."""

import json

import pytest

from loadgen.generator import GeneratorConfig
from loadgen.publish import KafkaPublisher, emissions_around_now, publish
from runners import replay
from sources.kafka import parse_kafka_url
from tests.stream_truth import clicks_per_minute, sink_clicks_per_minute, sink_tables

pytestmark = pytest.mark.kafka


def replay_into(url, tmp_path, name):
    db = tmp_path / f"{name}.db"
    summary = replay.run(["--input", url, "--sink", f"sqlite:///{db}",
                          "--dead-letter", str(tmp_path / f"{name}-dead.jsonl"),
                          "--summary", str(tmp_path / f"{name}.json")])
    return db, summary


def end_offsets(url):
    from confluent_kafka import Consumer, TopicPartition
    parsed = parse_kafka_url(url)
    consumer = Consumer({"bootstrap.servers": parsed.brokers, "group.id": "test"})
    try:
        partitions = consumer.list_topics(parsed.topic, timeout=10).topics[parsed.topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(parsed.topic, p), timeout=10)[1]
                for p in partitions}
    finally:
        consumer.close()


@pytest.mark.slow
def test_replay_of_a_topic_equals_the_truth_and_a_second_replay_changes_nothing(kafka_topic, tmp_path):
    config = GeneratorConfig(events=1500, minutes=3, seed=11)
    sent = publish(emissions_around_now(config, now_ms=1_767_225_600_000 + 10 * 60_000), KafkaPublisher(kafka_topic))
    url = kafka_topic + "?from=earliest&to=latest"

    db, summary = replay_into(url, tmp_path, "first")
    assert sink_clicks_per_minute(db) == clicks_per_minute(sent.truth)
    assert (summary["read"], summary["unique"], summary["duplicates"], summary["malformed"]) == (
        sent.read, sent.unique, sent.duplicates, sent.malformed)
    dead_letters = (tmp_path / "first-dead.jsonl").read_text().splitlines()
    assert len(dead_letters) == sent.malformed
    assert all(json.loads(line)["source"].startswith(parse_kafka_url(kafka_topic).topic) for line in dead_letters)

    before = sink_tables(db)
    ends = end_offsets(kafka_topic)
    exact = kafka_topic + "?from=earliest&to=" + ",".join(f"{p}:{offset}" for p, offset in ends.items())
    replay.run(["--input", exact, "--sink", f"sqlite:///{db}", "--dead-letter", str(tmp_path / "again.jsonl")])
    assert sink_tables(db) == before


def test_a_range_of_offsets_reads_exactly_that_range(kafka_topic, tmp_path):
    config = GeneratorConfig(events=400, minutes=1, seed=12, malformed_rate=0.0)
    publish(emissions_around_now(config, now_ms=1_767_225_600_000), KafkaPublisher(kafka_topic))
    ends = end_offsets(kafka_topic)
    start = {p: offset // 4 for p, offset in ends.items()}
    stop = {p: offset // 2 for p, offset in ends.items()}
    url = (kafka_topic + "?from=" + ",".join(f"{p}:{o}" for p, o in start.items())
           + "&to=" + ",".join(f"{p}:{o}" for p, o in stop.items()))
    _, summary = replay_into(url, tmp_path, "range")
    assert summary["read"] == sum(stop[p] - start[p] for p in ends) > 0
    assert summary["balanced"]


def test_a_bad_kafka_url_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="not a Kafka position"):
        replay.run(["--input", "kafka://127.0.0.1:1/clicks?from=yesterday", "--sink", f"sqlite:///{tmp_path}/x.db"])
