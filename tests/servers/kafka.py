"""A real Apache Kafka broker (KRaft, one node: `adclick broker`'s code) on free loopback ports, stopped by its PID.

A broker that cannot start fails the tests that need it, with the reason
(`make install` copies Kafka's jars); it never skips them.
"""

import itertools
import os

import pytest

from runners import broker
from tests.servers import free_port, stop_group

_names = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """host:port of a running broker."""
    port = free_port()
    try:
        process = broker.start(port, tmp_path_factory.mktemp("kafka"), controller_port=free_port(), quick_start=True)
    except broker.BrokerError as error:
        pytest.fail(f"Kafka broker: {error}", pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(process, grace=broker.STOP_GRACE_SECONDS)


@pytest.fixture
def kafka_topic(kafka_broker):
    """A fresh topic with 3 partitions that keeps its records forever, as kafka://BROKER/TOPIC."""
    from confluent_kafka.admin import AdminClient, NewTopic
    name = f"clicks-{os.getpid()}-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    futures = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1,
                                            config={"retention.ms": "-1"})])
    futures[name].result(30)
    return f"kafka://{kafka_broker}/{name}"
