"""Pub/Sub subscriptions as a stream of RawRecords (Beam's ReadFromPubSub: DirectRunner and Dataflow).

Messages are read with their attributes, so each record keeps its publish
time as `receive_ts`: the stream's own clock, against which a click's clock
skew is judged, and which the raw archive keeps next to click_ts. The event
time attribute (default `event_ts`, epoch ms, set by the publisher) gives the
element its timestamp, which drives the source watermark on Dataflow; a
message without it falls back to its publish time there, and the DAG's event
time is always the parsed click_ts.
"""

import contextlib
import datetime
import os
import re
from typing import Optional

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub

from transforms.records import RawRecord

SCHEME = "pubsub"
EVENT_TIME_ATTRIBUTE = "event_ts"
CHECK_TIMEOUT_SECONDS = 10
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


def pubsub_path(url: str, kind: str = "subscriptions") -> str:
    """`pubsub://projects/P/subscriptions/S` -> `projects/P/subscriptions/S` (or a topic path)."""
    prefix = SCHEME + "://"
    path = url[len(prefix):] if url.startswith(prefix) else ""
    pattern = _SUBSCRIPTION if kind == "subscriptions" else _TOPIC
    if not pattern.match(path):
        raise ValueError(f"not a Pub/Sub {kind[:-1]} URL: {url!r}; expected pubsub://projects/P/{kind}/NAME")
    return path


def _service() -> str:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    return f"the Pub/Sub emulator at {host}" if host else "Pub/Sub"


@contextlib.contextmanager
def _asking_about(kind: str, path: str):
    """Turns Pub/Sub's answers about `path` (not found, no answer, no credentials) into one-line ValueErrors."""
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError
    try:
        yield
    except exceptions.NotFound:
        raise ValueError(f"{_service()} has no {kind} {path}") from None
    except (exceptions.GoogleAPIError, GoogleAuthError) as error:
        reason = str(getattr(error, "message", None) or error).splitlines()[0]
        raise ValueError(f"{_service()}: cannot check {kind} {path}: {reason}") from None


def check_subscription(url: str) -> None:
    """Fails before a stream starts on a subscription that does not exist (it would idle forever)."""
    from google.cloud import pubsub_v1
    path = pubsub_path(url)
    with _asking_about("subscription", path), pubsub_v1.SubscriberClient() as subscriber:
        subscriber.get_subscription(subscription=path, retry=None, timeout=CHECK_TIMEOUT_SECONDS)


def check_topic(url: str) -> None:
    """Fails before anything is published to a topic that does not exist."""
    from google.cloud import pubsub_v1
    path = pubsub_path(url, "topics")
    with _asking_about("topic", path), pubsub_v1.PublisherClient() as publisher:
        publisher.get_topic(topic=path, retry=None, timeout=CHECK_TIMEOUT_SECONDS)


def epoch_ms(moment) -> Optional[int]:
    """A publish time (datetime or protobuf Timestamp) in epoch ms."""
    if moment is None:
        return None
    if isinstance(moment, datetime.datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return round(moment.timestamp() * 1000)
    return moment.ToMilliseconds()


def to_raw_record(message, source: str) -> RawRecord:
    """A Pub/Sub message as a RawRecord: its data, its numeric message id as offset, its publish time."""
    message_id = message.message_id or ""
    offset = int(message_id) if message_id.isdigit() else -1
    return RawRecord(message.data or b"", source, offset, epoch_ms(message.publish_time))


class ReadPubSub(beam.PTransform):
    """RawRecords of a subscription, `pubsub://projects/P/subscriptions/S`."""

    def __init__(self, url: str, timestamp_attribute: Optional[str] = EVENT_TIME_ATTRIBUTE):
        super().__init__()
        self._subscription = pubsub_path(url)
        self._timestamp_attribute = timestamp_attribute or None

    def expand(self, pbegin):
        source = self._subscription
        return (
            pbegin
            | "ReadFromPubSub" >> ReadFromPubSub(
                subscription=self._subscription, with_attributes=True,
                timestamp_attribute=self._timestamp_attribute)
            | "ToRawRecords" >> beam.Map(to_raw_record, source))
