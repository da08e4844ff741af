"""`adclick pubsub create` against the real Pub/Sub emulator: what it creates carries messages."""

import os
import subprocess
import sys

import pytest

from tests.servers.pubsub import PROJECT

pytestmark = pytest.mark.pubsub

ADCLICK = os.path.join(os.path.dirname(sys.executable), "adclick")


def adclick_pubsub(*args):
    return subprocess.run([ADCLICK, "pubsub", *args], capture_output=True, text=True, timeout=120)


def test_create_makes_a_topic_and_subscription_that_carry_a_message_and_is_idempotent(pubsub_emulator):
    from google.cloud import pubsub_v1
    topic, subscription = f"projects/{PROJECT}/topics/admin-clicks", f"projects/{PROJECT}/subscriptions/admin-sub"
    arguments = ("create", "--topic", f"pubsub://{topic}", "--subscription", f"pubsub://{subscription}")
    first = adclick_pubsub(*arguments)
    assert first.returncode == 0, first.stderr
    assert f"created topic {topic}" in first.stdout and f"created subscription {subscription}" in first.stdout
    again = adclick_pubsub(*arguments)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    with pubsub_v1.PublisherClient() as publisher:
        publisher.publish(topic, b'{"event_id": "e1"}').result(timeout=30)
    with pubsub_v1.SubscriberClient() as subscriber:
        received = subscriber.pull(subscription=subscription, max_messages=10, timeout=30).received_messages
    assert [message.message.data for message in received] == [b'{"event_id": "e1"}']


def test_a_subscription_of_another_topic_or_a_bad_url_is_one_line(pubsub_emulator):
    subscription = f"pubsub://projects/{PROJECT}/subscriptions/admin-other-sub"
    assert adclick_pubsub("create", "--topic", f"pubsub://projects/{PROJECT}/topics/admin-a",
                          "--subscription", subscription).returncode == 0
    other = adclick_pubsub("create", "--topic", f"pubsub://projects/{PROJECT}/topics/admin-b",
                           "--subscription", subscription)
    assert other.returncode != 0
    assert other.stderr.strip().count("\n") == 0 and "reads projects/" in other.stderr
    bad = adclick_pubsub("create", "--topic", "pubsub://topics/x", "--subscription", subscription)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "not a Pub/Sub topic URL" in bad.stderr
