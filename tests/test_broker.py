"""`adclick broker` as a person runs it: one line once it answers, a clean stop on SIGINT or SIGTERM, and a
restart on the same data dir that keeps the topics and their records."""

import signal
import subprocess
import sys

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.kafka


def start_cli(port, data_dir) -> tuple:
    process = subprocess.Popen([sys.executable, "-m", "runners.cli", "broker", "--port", str(port),
                                "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, process.stdout.readline()


def stop_cli(process, sig) -> tuple:
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def topic_records(bootstrap, topic) -> list:
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-broker", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
        consumer.assign([TopicPartition(topic, 0, low)])
        values = []
        while len(values) < high - low:
            values += [m.value() for m in consumer.consume(num_messages=100, timeout=5) if m.error() is None]
        return values
    finally:
        consumer.close()


def test_a_restarted_broker_keeps_its_topics_and_each_stop_is_clean(tmp_path):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    port, data_dir = free_port(), tmp_path / "broker"
    bootstrap = f"127.0.0.1:{port}"

    process, line = start_cli(port, data_dir)
    try:
        assert line.startswith("adclick broker: ") and f"127.0.0.1:{port}" in line, (line, process.stderr.read())
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("kept", num_partitions=1, replication_factor=1)])["kept"].result(30)
        producer = Producer({"bootstrap.servers": bootstrap})
        for value in (b"a", b"b", b"c"):
            producer.produce("kept", value, partition=0)
        assert producer.flush(30) == 0
    finally:
        code, out, err = stop_cli(process, signal.SIGINT)
    assert (code, out.strip()) == (0, "adclick broker: stopped"), err

    process, line = start_cli(port, data_dir)  # formatted already: not formatted again
    try:
        assert f"127.0.0.1:{port}" in line, process.stderr.read()
        assert "since clean shutdown file was found" in (data_dir / "broker.log").read_text()  # the SIGINT's stop
        assert topic_records(bootstrap, "kept") == [b"a", b"b", b"c"]
    finally:
        code, out, err = stop_cli(process, signal.SIGTERM)
    assert (code, out.strip()) == (0, "adclick broker: stopped"), err
    assert (data_dir / "broker.log").read_text().count("[BrokerServer id=1] shut down completed") == 2  # both stops
