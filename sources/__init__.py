"""The edge where records come in: `RawRecord`s from a stream or a Kafka range, `RawBatch`es from
raw logs. The DAG never knows which source ran."""

from typing import List, Optional, Sequence

import apache_beam as beam


def is_kafka(url: str) -> bool:
    return url.startswith("kafka://")


class _ReadAll(beam.PTransform):
    def __init__(self, sources):
        super().__init__()
        self._sources = sources

    def expand(self, pbegin):
        return [pbegin | f"Input{i}" >> source for i, source in enumerate(self._sources)] | beam.Flatten()


def check_inputs(inputs: Sequence[str]) -> None:
    """Fails before a replay starts on a file pattern that names a directory or matches nothing, a malformed
    Kafka URL or a topic the brokers do not have."""
    from sources.files import check_patterns
    from sources.kafka import check_topic
    for url in inputs:
        if is_kafka(url):
            check_topic(url)
    check_patterns([pattern for pattern in inputs if not is_kafka(pattern)])


def source_for(inputs: Sequence[str], fmt: str = "auto") -> beam.PTransform:
    """The bounded source of a replay: raw log files (globs) and/or ranges of Kafka topics (kafka:// URLs)."""
    from sources.kafka import ReadKafkaRange
    patterns = [url for url in inputs if not is_kafka(url)]
    sources: List[beam.PTransform] = [ReadKafkaRange(url) for url in inputs if is_kafka(url)]
    if patterns:
        from sources.files import ReadRawLogs
        sources.insert(0, ReadRawLogs(patterns, fmt))
    return sources[0] if len(sources) == 1 else _ReadAll(sources)


def check_stream_source(url: str) -> None:
    """Fails before a stream starts on a subscription or topic that does not exist: the stream would idle on it."""
    if url.startswith("pubsub://"):
        from sources.pubsub import check_subscription
        check_subscription(url)
    elif is_kafka(url):
        from sources.kafka import check_topic
        check_topic(url)


def stream_source_for(url: str, timestamp_attribute: Optional[str] = None, kafka_group: str = "adclick",
                      kafka_expansion_service=None) -> beam.PTransform:
    """The unbounded source a URL names: `pubsub://projects/P/subscriptions/S` or `kafka://BROKERS/TOPIC`."""
    if url.startswith("pubsub://"):
        from sources.pubsub import EVENT_TIME_ATTRIBUTE, ReadPubSub
        return ReadPubSub(url, EVENT_TIME_ATTRIBUTE if timestamp_attribute is None else timestamp_attribute)
    if is_kafka(url):
        from sources.kafka import ReadKafkaStream
        return ReadKafkaStream(url, kafka_group, kafka_expansion_service)
    raise ValueError(f"unknown stream source {url!r}: expected pubsub://projects/P/subscriptions/S "
                     "or kafka://BROKERS/TOPIC")
