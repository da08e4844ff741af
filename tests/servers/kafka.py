"""A Kafka-protocol broker (noida-db's kafka service) on a free loopback port, stopped by its PID.

Apache Kafka cannot be installed on this machine; noida-db speaks the Kafka
protocol (produce, fetch, offsets, time index, consumer groups). Its command is
a wrapper: the server runs in the process group started here, which is
stopped as a whole.
"""

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.servers import start_listening, stop_group

NOIDA = Path(sys.executable).parent / "noida-db"
_names = itertools.count()


def start_broker(port: int, data_dir: Path) -> subprocess.Popen:
    if not NOIDA.exists():
        pytest.skip("noida-db is not installed (pip install noida-db)")
    command = [str(NOIDA), "start", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--only", "kafka",
               "--kafka-port", str(port)]
    return start_listening(command, port, "noida-db's kafka")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """host:port of a running broker."""
    port = free_port()
    process = start_broker(port, tmp_path_factory.mktemp("noida"))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(process, signal.SIGINT)


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
