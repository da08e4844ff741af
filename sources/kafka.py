"""Kafka topics as RawRecords: a stream (Beam's ReadFromKafka) or a bounded range of offsets (a replay).

`kafka://BROKER[,BROKER...]/TOPIC[?from=...&to=...]`. Each record becomes a
RawRecord of its value bytes, source `TOPIC-PARTITION`, its offset, and its
record timestamp as `receive_ts` (the producer's or broker's clock: the time
the click was received, against which clock skew is judged).

The stream uses ReadFromKafka, a Java cross-language transform: it runs on
Prism, Flink and Dataflow and needs an expansion service (a local JVM on
`make install`'s jars, Beam's jar on Dataflow, or `--kafka-expansion-service`),
with the record timestamp as event time and
offsets committed when a bundle is finalized, so a restarted job resumes where
its results were durable.

A replay reads a bounded range per partition with confluent-kafka in a
splittable DoFn (any runner, the DirectRunner included): `from` and `to` are
`earliest` / `latest` (the end when the replay starts), an offset for every
partition (`1200`), offsets per partition (`0:1200,1:1187`), or a time (ISO-8601
with a zone, or epoch ms) resolved per partition by the broker's time index.
`from` is inclusive, `to` exclusive.
"""

import logging
import time
from typing import Dict, NamedTuple, Optional, Union
from urllib.parse import parse_qs, urlparse

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider

from transforms.records import NoTimeZone, RawRecord, iso_to_epoch_ms

SCHEME = "kafka"
EARLIEST, LATEST = "earliest", "latest"
SPLIT_RECORDS = 50_000
POLL_SECONDS = 1.0
STALL_SECONDS = 60.0
CHECK_TIMEOUT_SECONDS = 10
TIMESTAMP_NOT_AVAILABLE = 0  # confluent_kafka.TIMESTAMP_NOT_AVAILABLE


class Position(NamedTuple):
    """Where a range starts or ends: `earliest`, `latest`, offsets per partition (None = all), or a time."""
    kind: str  # "earliest", "latest", "offsets", "time"
    offsets: Optional[Dict[Optional[int], int]] = None
    epoch_ms: Optional[int] = None


class KafkaUrl(NamedTuple):
    brokers: str
    topic: str
    start: Position
    stop: Position


def _epoch_ms(text: str) -> Optional[int]:
    if text.isdigit() and len(text) >= 12:  # epoch ms, e.g. 1767225600000; shorter numbers are offsets
        return int(text)
    try:
        return iso_to_epoch_ms(text)
    except NoTimeZone:
        raise ValueError(f"time {text!r} has no zone") from None
    except ValueError:
        return None


def parse_position(text: str) -> Position:
    """`earliest`, `latest`, `1200`, `0:1200,1:1187`, `2026-01-01T00:00:00Z` or `1767225600000`."""
    text = text.strip()
    if text in (EARLIEST, LATEST):
        return Position(text)
    moment = _epoch_ms(text)
    if moment is not None:
        return Position("time", epoch_ms=moment)
    try:
        if ":" not in text:
            return Position("offsets", offsets={None: int(text)})
        offsets: Dict[Optional[int], int] = {}
        for part in text.split(","):
            partition, offset = part.split(":")
            offsets[int(partition)] = int(offset)
        return Position("offsets", offsets=offsets)
    except ValueError:
        raise ValueError(f"not a Kafka position: {text!r}; expected earliest, latest, an offset, "
                         "PARTITION:OFFSET,..., an ISO-8601 time with a zone or epoch ms") from None


def parse_kafka_url(url: str) -> KafkaUrl:
    parsed = urlparse(url)
    topic = parsed.path.lstrip("/")
    if parsed.scheme != SCHEME or not parsed.netloc or not topic or "/" in topic:
        raise ValueError(f"not a Kafka URL: {url!r}; expected kafka://BROKER[,BROKER]/TOPIC[?from=...&to=...]")
    query = parse_qs(parsed.query)
    unknown = set(query) - {"from", "to"}
    if unknown:
        raise ValueError(f"unknown Kafka URL parameter {', '.join(sorted(unknown))}: only from and to")
    return KafkaUrl(parsed.netloc, topic,
                    parse_position(query.get("from", [EARLIEST])[-1]), parse_position(query.get("to", [LATEST])[-1]))


def consumer_config(brokers: str, **extra) -> dict:
    """A consumer that never commits: a replay must not move a stream's consumer group."""
    return {"bootstrap.servers": brokers, "group.id": "adclick-replay", "enable.auto.commit": False,
            "enable.partition.eof": True, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            **extra}


def check_topic(url: Union[str, KafkaUrl]) -> None:
    """Fails with one line, before a run or a publisher starts, when the brokers do not answer or have no such
    topic: a stream would idle on it forever, and a producer could create it with the broker's defaults."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    url = parse_kafka_url(url) if isinstance(url, str) else url
    admin = AdminClient({"bootstrap.servers": url.brokers, "log_level": 0})  # its log lines would repeat ours
    try:
        topics = admin.list_topics(timeout=CHECK_TIMEOUT_SECONDS).topics  # all topics: naming one can create it
    except KafkaException as error:
        raise ValueError(f"Kafka at {url.brokers} did not answer within {CHECK_TIMEOUT_SECONDS} s: "
                         f"{error.args[0].str()}") from None
    metadata = topics.get(url.topic)
    if metadata is None or metadata.error is not None:
        known = sorted(name for name in topics if not name.startswith("__"))
        raise ValueError(f"Kafka at {url.brokers} has no topic {url.topic!r} (its topics: "
                         f"{', '.join(known[:10]) or 'none'}{', ...' if len(known) > 10 else ''})")


class PartitionRange(NamedTuple):
    brokers: str
    topic: str
    partition: int
    start: int  # first offset
    stop: int  # one past the last


def _offset(consumer, topic: str, partition: int, position: Position, low: int, high: int) -> int:
    from confluent_kafka import TopicPartition
    if position.kind == EARLIEST:
        return low
    if position.kind == LATEST:
        return high
    if position.kind == "offsets":
        offsets = position.offsets or {}
        offset = offsets.get(partition, offsets.get(None))
        return high if offset is None else min(max(offset, low), high)
    if position.epoch_ms is None:
        raise ValueError(f"not a Kafka position: {position}")
    found = consumer.offsets_for_times([TopicPartition(topic, partition, position.epoch_ms)], timeout=30)[0]
    return high if found.offset < 0 else found.offset


class _PlanRanges(beam.DoFn):
    """A Kafka URL -> the offset range of each partition, resolved against the broker now."""

    def process(self, url: KafkaUrl):
        from confluent_kafka import Consumer, KafkaException, TopicPartition
        consumer = Consumer(consumer_config(url.brokers))
        try:
            metadata = consumer.list_topics(url.topic, timeout=30).topics.get(url.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise ValueError(f"Kafka topic {url.topic!r} not found on {url.brokers}")
            for partition in sorted(metadata.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(url.topic, partition), timeout=30)
                start = _offset(consumer, url.topic, partition, url.start, low, high)
                stop = _offset(consumer, url.topic, partition, url.stop, low, high)
                logging.info("kafka %s partition %d: offsets %d..%d", url.topic, partition, start, stop)
                if start < stop:
                    yield PartitionRange(url.brokers, url.topic, partition, start, stop)
        except KafkaException as error:
            raise RuntimeError(f"Kafka at {url.brokers}: {error}") from None
        finally:
            consumer.close()


class _OffsetRanges(RestrictionProvider):
    def initial_restriction(self, part: PartitionRange):
        return OffsetRange(part.start, part.stop)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, part, restriction):
        return restriction.size()

    def split(self, part, restriction):
        yield from restriction.split(SPLIT_RECORDS)


OFFSET_RANGES = _OffsetRanges()


class ReadPartitionRangeFn(beam.DoFn):
    """The records of one partition's offset range, claimed one by one so a runner can split the range."""

    def process(self, part: PartitionRange, tracker=beam.DoFn.RestrictionParam(OFFSET_RANGES)):
        from confluent_kafka import Consumer, KafkaError, TopicPartition
        restriction = tracker.current_restriction()
        source = f"{part.topic}-{part.partition}"
        consumer = Consumer(consumer_config(part.brokers))
        consumer.assign([TopicPartition(part.topic, part.partition, restriction.start)])
        last_progress = time.monotonic()
        try:
            while True:
                messages = consumer.consume(num_messages=1000, timeout=POLL_SECONDS)
                if not messages and time.monotonic() - last_progress > STALL_SECONDS:
                    raise RuntimeError(f"Kafka {source}: no record for {STALL_SECONDS:.0f} s at offsets "
                                       f"{restriction.start}..{restriction.stop}")
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            tracker.try_claim(restriction.stop)  # the rest of the range holds no records
                            return
                        raise RuntimeError(f"Kafka {source}: {error}")
                    last_progress = time.monotonic()
                    offset = message.offset()
                    if offset is None or not tracker.try_claim(offset):
                        return
                    kind, timestamp = message.timestamp()
                    receive_ts = timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None
                    yield RawRecord(message.value() or b"", source, offset, receive_ts)
        finally:
            consumer.close()


class ReadKafkaRange(beam.PTransform):
    """RawRecords of a bounded range of a topic (a replay), `kafka://BROKERS/TOPIC?from=...&to=...`."""

    def __init__(self, url: Union[str, KafkaUrl]):
        super().__init__()
        self._url = parse_kafka_url(url) if isinstance(url, str) else url

    def expand(self, pbegin):
        return (
            pbegin
            | "Url" >> beam.Create([self._url])
            | "PlanRanges" >> beam.ParDo(_PlanRanges())
            | "ReadRanges" >> beam.ParDo(ReadPartitionRangeFn()))


def _metadata_to_raw_record(record) -> RawRecord:
    return RawRecord(record.value or b"", f"{record.topic}-{record.partition}", record.offset, record.timestamp)


class ReadKafkaStream(beam.PTransform):
    """RawRecords of a topic as a stream, through Beam's cross-language ReadFromKafka (Prism, Flink, Dataflow).

    Without `expansion_service`, ReadFromKafka is expanded, and its Java worker run, by a JVM on this machine
    (runners/expansion.py), started when the pipeline is built; on Dataflow, whose workers cannot reach this
    machine, by Beam's own expansion-service jar instead. On Prism no offset is committed: committing on
    finalize needs stable input, which Prism refuses, and Prism keeps its state in memory, so a restarted
    Prism stream has none to resume with; it reads its topic from the earliest offset again (it never skips
    a click) and upserts the windows it recomputes.

    A broker that dies, even by SIGKILL, and comes back on its address with its data dir is ridden out with
    Kafka's default consumer settings, so none is set here: the Java consumer retries the connection every
    `reconnect.backoff.ms` (50 ms, doubling up to `reconnect.backoff.max.ms`, 1 s) and resumes at the offsets
    it had read (tests/test_fault_kafka.py: about 18 s down, then exact tables). A call that waits on the broker
    longer than `default.api.timeout.ms` (60 s), such as a partition's position, fails the bundle with a
    TimeoutException (apache/beam#30965) for the runner to retry; outages that long are not tested here.
    """

    def __init__(self, url: Union[str, KafkaUrl], group_id: str = "adclick", expansion_service=None):
        super().__init__()
        self._url = parse_kafka_url(url) if isinstance(url, str) else url
        if self._url.start != Position(EARLIEST) or self._url.stop != Position(LATEST):
            raise ValueError("a Kafka stream starts where its consumer group left off: from/to are for replays")
        self._group_id, self._expansion_service = group_id, expansion_service
        self.read = self._read_from_kafka(expansion_service, commit=True)

    def _read_from_kafka(self, expansion_service, commit: bool):
        from apache_beam.io.kafka import ReadFromKafka
        consumer_config = {"bootstrap.servers": self._url.brokers, "group.id": self._group_id,
                           "auto.offset.reset": EARLIEST, "isolation.level": "read_committed"}
        if not commit:  # nor the Java client's own periodic commits of what it polled
            consumer_config["enable.auto.commit"] = "false"
        return ReadFromKafka(
            consumer_config=consumer_config,
            topics=[self._url.topic],
            with_metadata=True,
            commit_offset_in_finalize=commit,
            timestamp_policy=ReadFromKafka.create_time_policy,
            expansion_service=expansion_service)

    def expand(self, pbegin):
        from apache_beam.options.pipeline_options import StandardOptions
        runner = str(pbegin.pipeline.options.view_as(StandardOptions).runner or "").lower()
        on_prism, on_dataflow = "prism" in runner, "dataflow" in runner
        read = self.read
        if (self._expansion_service is None and not on_dataflow) or on_prism:
            from runners.expansion import LocalExpansionService
            service = self._expansion_service
            read = self._read_from_kafka(LocalExpansionService() if service is None else service, not on_prism)
        return pbegin | "ReadFromKafka" >> read | "ToRawRecords" >> beam.Map(_metadata_to_raw_record)
