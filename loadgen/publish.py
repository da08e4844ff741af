"""Publish a generated click log to a stream (Pub/Sub or Kafka), stamped around now.

The lines are the generator's, in emission order, with its resends, disorder,
late and malformed lines. A stream's watermark follows the clock (the
DirectRunner's Pub/Sub watermark is the wall clock), so the log's event times
are shifted to now:
- as fast as possible (no rate): one log whose event times span the
  `minutes` before now;
- at a rate: one generated minute after another, starting now, each paced over
  its minute of wall time, so event time keeps pace with the clock (a late
  click is late within its minute).
Each message carries its event time as attribute / header `event_ts` (epoch ms;
the publish time for a malformed line). Kafka records keep the producer's
clock as their timestamp: the time the click was received.

`publish` returns what was sent: counts and the truth (each unique valid click
once), so a test or an operator can check the sink against it.
"""

import dataclasses
import itertools
import time
from typing import Iterator, List, NamedTuple, Optional

import orjson

from loadgen.generator import MINUTE_MS, GeneratorConfig, generate

EVENT_TIME = "event_ts"
FUTURES_IN_FLIGHT = 10_000


class Emission(NamedTuple):
    line: bytes
    event_ms: Optional[int]  # None for a malformed line
    truth: Optional[dict]  # the unique click a valid line is a copy of


def _emissions(config: GeneratorConfig) -> Iterator[Emission]:
    log = generate(config)
    by_id = {event["event_id"]: event for event in log.truth}
    for line, event_ms in log.emissions():
        truth = by_id[orjson.loads(line)["event_id"]] if event_ms is not None else None
        yield Emission(line, event_ms, truth)


def emissions_around_now(config: GeneratorConfig, rate: Optional[float] = None,
                         now_ms: Optional[int] = None) -> Iterator[Emission]:
    """The log to publish: `config`'s shape with event times around `now_ms` (see the module doc).

    With a rate, `config.events` is ignored: each minute holds the unique clicks
    that, with their resends and malformed lines, make `rate` messages a second.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if rate is None:
        return _emissions(dataclasses.replace(config, start_ms=now_ms - config.minutes * MINUTE_MS))
    per_minute = max(1, round(rate * 60 / (1 + config.duplicate_rate + config.malformed_rate)))
    minutes = (dataclasses.replace(config, start_ms=now_ms + k * MINUTE_MS, minutes=1, events=per_minute,
                                   seed=config.seed + k) for k in itertools.count())
    return itertools.chain.from_iterable(map(_emissions, minutes))


@dataclasses.dataclass
class Sent:
    """What was published: every line accounted for, and the truth to check a sink against."""
    read: int = 0
    unique: int = 0
    duplicates: int = 0
    malformed: int = 0
    truth: List[dict] = dataclasses.field(default_factory=list)

    def manifest(self, to: str) -> dict:
        return {"to": to, "read": self.read, "unique": self.unique, "duplicates": self.duplicates,
                "malformed": self.malformed}


class PubSubPublisher:
    """`pubsub://projects/P/topics/T` (PUBSUB_EMULATOR_HOST is honoured by the client)."""

    def __init__(self, url: str):
        from google.cloud import pubsub_v1

        from sources.pubsub import check_topic, pubsub_path
        check_topic(url)
        self._topic = pubsub_path(url, "topics")
        self._client = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01))
        self._futures = []

    def send(self, line: bytes, event_ms: int) -> None:
        self._futures.append(self._client.publish(self._topic, line, **{EVENT_TIME: str(event_ms)}))
        if len(self._futures) >= FUTURES_IN_FLIGHT:
            self._wait()

    def _wait(self) -> None:
        for future in self._futures:
            future.result(timeout=60)
        self._futures = []

    def flush(self) -> None:
        self._wait()


class KafkaPublisher:
    """`kafka://BROKERS/TOPIC`: idempotent producer, record timestamp = the producer's clock."""

    def __init__(self, url: str):
        from confluent_kafka import Producer

        from sources.kafka import check_topic, parse_kafka_url
        parsed = parse_kafka_url(url)
        check_topic(parsed)
        self._topic = parsed.topic
        self._producer = Producer({"bootstrap.servers": parsed.brokers, "enable.idempotence": True,
                                   "linger.ms": 5})
        self._errors = []

    def _delivered(self, error, _message):
        if error is not None:
            self._errors.append(error)

    def send(self, line: bytes, event_ms: int) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value=line, headers={EVENT_TIME: str(event_ms)},
                                       on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self) -> None:
        left = self._producer.flush(60)
        if left or self._errors:
            raise RuntimeError(f"Kafka: {left} records undelivered, errors: {self._errors[:3]}")


def publisher_for(url: str):
    """The publisher a URL names; ValueError, before anything is sent, when its topic does not exist."""
    if url.startswith("pubsub://"):
        return PubSubPublisher(url)
    if url.startswith("kafka://"):
        return KafkaPublisher(url)
    raise ValueError(f"unknown stream {url!r}: expected pubsub://projects/P/topics/T or kafka://BROKERS/TOPIC")


def publish(emissions: Iterator[Emission], publisher, rate: Optional[float] = None,
            duration: Optional[float] = None, clock=time.monotonic, sleep=time.sleep) -> Sent:
    """Sends each emission, at most `rate` a second, for at most `duration` seconds or until Ctrl-C."""
    sent, seen = Sent(), set()
    started = clock()
    try:
        for index, emission in enumerate(emissions):
            elapsed = clock() - started
            if duration is not None and elapsed >= duration:
                break
            if rate:
                ahead = index / rate - elapsed
                if ahead > 0:
                    sleep(ahead)
            publisher.send(emission.line, emission.event_ms or int(time.time() * 1000))
            sent.read += 1
            if emission.truth is None:
                sent.malformed += 1
            elif emission.truth["event_id"] in seen:
                sent.duplicates += 1
            else:
                seen.add(emission.truth["event_id"])
                sent.unique += 1
                sent.truth.append(emission.truth)
    except KeyboardInterrupt:
        pass  # stop publishing; what was sent is flushed and reported
    publisher.flush()
    return sent


