"""A subscription or topic that does not exist, or a broker or emulator that does not answer, stops
`adclick stream`, `replay` and `generate --to` before they start: one line, a non-zero exit, nothing
written. Without the check a stream idled forever on a missing subscription (exit 0, zero counts)."""

import os
import subprocess
import sys

import pytest

from tests.servers import free_port
from tests.servers.pubsub import PROJECT

CHECK_SECONDS = 60  # the checks time out after 10 s; a command that idles is killed well before the test's timeout


def adclick(*argv, env=None, cwd=None):
    """Runs the real command; (exit code, stderr lines without Beam's and the logging's INFO lines)."""
    done = subprocess.run([sys.executable, "-m", "runners.cli", *argv], capture_output=True, text=True,
                          timeout=CHECK_SECONDS, env=dict(os.environ, **(env or {})), cwd=cwd)
    lines = [line for line in done.stderr.splitlines() if line.strip() and " INFO " not in line]
    return done.returncode, lines


def assert_one_line(result, *fragments):
    code, lines = result
    assert code != 0
    assert len(lines) == 1, lines
    assert all(fragment in lines[0] for fragment in fragments), lines
    return lines[0]


@pytest.mark.pubsub
def test_a_stream_from_a_missing_subscription_stops_before_it_starts(pubsub_emulator, tmp_path):
    subscription = f"projects/{PROJECT}/subscriptions/no-such-subscription"
    result = adclick("stream", "--source", f"pubsub://{subscription}", "--sink", f"sqlite:///{tmp_path}/x.db",
                     "--duration", "5", "--summary", str(tmp_path / "summary.json"), cwd=tmp_path)
    assert_one_line(result, "adclick stream:", "has no subscription", subscription, pubsub_emulator)
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "summary.json").exists()


@pytest.mark.pubsub
def test_generate_to_a_missing_pubsub_topic_stops_before_it_publishes(pubsub_emulator, tmp_path):
    topic = f"projects/{PROJECT}/topics/no-such-topic"
    result = adclick("generate", "--to", f"pubsub://{topic}", "--events", "100", "--out", str(tmp_path / "sent"))
    assert_one_line(result, "adclick generate:", "has no topic", topic)
    assert not (tmp_path / "sent").exists()


@pytest.mark.pubsub
def test_an_existing_subscription_and_topic_pass_the_check(pubsub_topic):
    from sources.pubsub import check_subscription, check_topic
    topic, subscription = pubsub_topic
    check_subscription(subscription)
    check_topic(topic)


def test_an_emulator_that_does_not_answer_is_one_line(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    result = adclick("stream", "--source", f"pubsub://projects/{PROJECT}/subscriptions/s", "--sink",
                     f"sqlite:///{tmp_path}/x.db", "--duration", "5", env={"PUBSUB_EMULATOR_HOST": closed},
                     cwd=tmp_path)
    assert_one_line(result, "adclick stream:", "cannot check subscription", closed)


@pytest.mark.kafka
def test_replay_of_a_missing_kafka_topic_stops_before_it_starts(kafka_topic, kafka_broker, tmp_path):
    existing = kafka_topic.rsplit("/", 1)[1]
    result = adclick("replay", "--input", f"kafka://{kafka_broker}/no-such-topic", "--sink",
                     f"sqlite:///{tmp_path}/x.db", "--dead-letter", str(tmp_path / "dead.jsonl"), cwd=tmp_path)
    line = assert_one_line(result, "adclick replay:", "has no topic 'no-such-topic'", kafka_broker)
    assert existing in line  # the topics it has are named, to catch a typo
    assert not (tmp_path / "x.db").exists()


@pytest.mark.kafka
@pytest.mark.bigtable
def test_a_kafka_stream_of_a_missing_topic_stops_before_it_is_submitted(kafka_broker, bigtable_url, tmp_path):
    result = adclick("stream", "--source", f"kafka://{kafka_broker}/no-such-topic", "--sink", bigtable_url,
                     "--runner", "flink", "--flink_master", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert_one_line(result, "adclick stream:", "has no topic 'no-such-topic'")


@pytest.mark.kafka
def test_generate_to_a_missing_kafka_topic_stops_before_it_publishes(kafka_broker, tmp_path):
    from confluent_kafka.admin import AdminClient
    result = adclick("generate", "--to", f"kafka://{kafka_broker}/no-such-topic", "--events", "100")
    assert_one_line(result, "adclick generate:", "has no topic 'no-such-topic'")
    assert "no-such-topic" not in AdminClient({"bootstrap.servers": kafka_broker}).list_topics(timeout=10).topics


@pytest.mark.kafka
def test_an_existing_kafka_topic_passes_the_check(kafka_topic):
    from sources.kafka import check_topic
    check_topic(kafka_topic)


def test_pubsub_without_an_emulator_or_credentials_is_one_line(tmp_path):
    # Application Default Credentials are looked for in the home directory, found nowhere here.
    env = {"PUBSUB_EMULATOR_HOST": "", "HOME": str(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": "",
           "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    result = adclick("generate", "--to", f"pubsub://projects/{PROJECT}/topics/t", "--events", "10", env=env)
    assert_one_line(result, "adclick generate:", "Pub/Sub: cannot check topic", "credentials")


def test_a_kafka_broker_that_does_not_answer_is_one_line(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    result = adclick("replay", "--input", f"kafka://{closed}/clicks", "--sink", f"sqlite:///{tmp_path}/x.db",
                     "--dead-letter", str(tmp_path / "dead.jsonl"), cwd=tmp_path)
    assert_one_line(result, "adclick replay:", f"Kafka at {closed} did not answer")
