"""The Cloud Pub/Sub emulator on a free loopback port, stopped by its PID."""

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import free_port

EMULATOR = (shutil.which("cloud-pubsub-emulator")
            or "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
PROJECT = "test-project"  # Beam's pattern for project ids
_names = itertools.count()


def start_emulator(port: int) -> subprocess.Popen:
    if not os.access(EMULATOR, os.X_OK):
        pytest.skip("Pub/Sub emulator not installed (Debian package google-cloud-cli-pubsub-emulator)")
    # Its own session, so the JVM that the wrapper script starts is stopped with it.
    process = subprocess.Popen([EMULATOR, "--host=127.0.0.1", f"--port={port}"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Pub/Sub emulator exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    stop_emulator(process)
    raise RuntimeError("the Pub/Sub emulator did not listen within 60 s")


def stop_emulator(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def pubsub_emulator():
    """host:port of a running emulator; PUBSUB_EMULATOR_HOST points at it meanwhile."""
    port = free_port()
    process = start_emulator(port)
    host = f"127.0.0.1:{port}"
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield host
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
        stop_emulator(process)


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
