"""The edge where records come in. Every source yields `RawRecord`s; the DAG never knows which one ran."""

from typing import Optional, Sequence

import apache_beam as beam

from transforms.records import RawRecord


def is_kafka(url: str) -> bool:
    return url.startswith("kafka://")


def _receive_ts_from_archive(record: RawRecord) -> RawRecord:
    """A typed record (the raw archive's Parquet) that carries its receive time: keep it."""
    if record.receive_ts is None and isinstance(record.payload, dict):
        receive_ts = record.payload.get("receive_ts")
        if isinstance(receive_ts, int) and not isinstance(receive_ts, bool):
            return record._replace(receive_ts=receive_ts)
    return record


class _ReadLogs(beam.PTransform):
    """Raw logs; Avro and Parquet records keep a receive_ts column (the raw archive's) as their receive time."""

    def __init__(self, patterns: Sequence[str], fmt: str):
        super().__init__()
        self._patterns = list(patterns)
        self._format = fmt

    def expand(self, pbegin):
        from sources.files import ReadRawLogs, format_of
        records = pbegin | "ReadRawLogs" >> ReadRawLogs(self._patterns, self._format)
        formats = {format_of(pattern) if self._format == "auto" else self._format for pattern in self._patterns}
        if formats == {"jsonl"}:
            return records
        return records | "ArchivedReceiveTs" >> beam.Map(_receive_ts_from_archive)


class _ReadAll(beam.PTransform):
    def __init__(self, sources):
        super().__init__()
        self._sources = sources

    def expand(self, pbegin):
        return [pbegin | f"Input{i}" >> source for i, source in enumerate(self._sources)] | beam.Flatten()


def check_inputs(inputs: Sequence[str]) -> None:
    """Fails before a replay starts on a file pattern that matches nothing or a malformed Kafka URL."""
    from sources.files import check_patterns
    from sources.kafka import parse_kafka_url
    for url in inputs:
        if is_kafka(url):
            parse_kafka_url(url)
    check_patterns([pattern for pattern in inputs if not is_kafka(pattern)])


def source_for(inputs: Sequence[str], fmt: str = "auto") -> beam.PTransform:
    """The bounded source of a replay: raw log files (globs) and/or ranges of Kafka topics (kafka:// URLs)."""
    from sources.kafka import ReadKafkaRange
    patterns = [url for url in inputs if not is_kafka(url)]
    sources = [ReadKafkaRange(url) for url in inputs if is_kafka(url)]
    if patterns:
        sources.insert(0, _ReadLogs(patterns, fmt))
    return sources[0] if len(sources) == 1 else _ReadAll(sources)


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
