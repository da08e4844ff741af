"""The Cloud Pub/Sub emulator on a free loopback port, stopped by its PID."""

import itertools
import os
import shutil
import subprocess

import pytest

from tests.servers import environment, free_port, require_executable, start_listening, stop_group

EMULATOR = (shutil.which("cloud-pubsub-emulator")
            or "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "test-project"  # Beam's pattern for project ids
_names = itertools.count()


def start_emulator(port: int) -> subprocess.Popen:
    require_executable(EMULATOR, "the Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator)")
    return start_listening([EMULATOR, "--host=127.0.0.1", f"--port={port}"], port, "the Pub/Sub emulator")


@pytest.fixture(scope="session")
def pubsub_emulator():
    """host:port of a running emulator; PUBSUB_EMULATOR_HOST points at it meanwhile."""
    port = free_port()
    process = start_emulator(port)
    try:
        with environment("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}") as host:
            yield host
    finally:
        stop_group(process)


@pytest.fixture
def pubsub_topic(pubsub_emulator):
    """(topic URL, subscription URL): a fresh topic with one subscription."""
    from google.cloud import pubsub_v1
    name = f"clicks-{os.getpid()}-{next(_names)}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, name)).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(PROJECT, name + "-sub"), topic=topic, ack_deadline_seconds=60).name
    return f"pubsub://{topic}", f"pubsub://{subscription}"
