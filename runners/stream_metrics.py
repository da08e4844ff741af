"""`adclick stream --metrics-port PORT`: the running stream's health as Prometheus metrics.

Everything the pipeline itself knows is a Beam metric in the namespace `adclick`, made by the workers,
whatever the runner: the DAG's own counters (read, unique, duplicates, malformed by reason, skewed,
too_late, flagged by rule) and what the two probes added at the edges here record (`MeasureSource`:
the Kafka offsets read and the source's watermark; `MeasureSink`: the panes handed to the sink). The
launcher's exporter asks the runner for them at each scrape (`result.metrics()`, on a portable runner
such as Prism a fresh GetJobMetrics) and turns them into Prometheus families; what only the launcher
can see is added there: the broker's end offsets (Kafka lag), the age of the watermark and of the
newest complete minute, and this process's CPU and RSS. Local runners run the DoFns in this process,
so its CPU and RSS are the pipeline's; on Flink or Dataflow the same Beam metrics reach the launcher
(`--wait`) through the runner's own metrics API, and the workers' resources are the runner's to show.
"""

import argparse
import logging
import sys
import time
from typing import Any, Dict, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.windowed_value import PaneInfoTiming

from runners.summary import MALFORMED_PREFIX, NAMESPACE, counters
from transforms.lateness import _FLOOR_MS, _arm  # the watermark probe's ladder, defined once
from transforms.records import Aggregates

PREFIX = "adclick"
FLAGGED_PREFIX = "flagged."
OFFSET_PREFIX = "source.offset."  # + TOPIC-PARTITION: a distribution whose max is the newest offset read
WATERMARK = "source.watermark_ms"  # a distribution whose max is the newest watermark the probe saw
COMPLETE_MINUTE = "sink.complete_minute_ms"  # max: the newest window whose on-time or a late pane reached the sink
NEWEST_MINUTE = "sink.newest_minute_ms"  # max: the newest window any pane of reached the sink
LATE_PANES = "sink.late_panes"
LATENCY = "sink.latency_ms"  # a distribution: sum and count of the latencies the buckets count
LATENCY_BUCKET = "sink.latency.le."  # + bound in seconds or `inf`: one counter per histogram bucket
LATENCY_BOUNDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
AHEAD_MS = 86_400_000  # a watermark further ahead of now is a drain's (it moves to the end of time)
KAFKA_TIMEOUT_SECONDS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics while the stream runs; 0 picks "
                            "a free port (printed)")
    group.add_argument("--metrics-host", default="127.0.0.1",
                       help="address the metrics endpoint binds (default: %(default)s; 0.0.0.0 for a scraper "
                            "on another host)")


class _ReadPositions(beam.DoFn):
    """Kafka: the newest offset read per partition (a RawRecord's source is `TOPIC-PARTITION`). Emits nothing:
    its output only carries the source's watermark to the probe."""

    def setup(self):
        self._offsets: Dict[str, Any] = {}

    def process(self, raw):
        offsets = self._offsets.get(raw.source)
        if offsets is None:
            offsets = self._offsets[raw.source] = Metrics.distribution(NAMESPACE, OFFSET_PREFIX + raw.source)
        offsets.update(raw.offset)
        return ()


class _Nothing(beam.DoFn):
    def process(self, raw):
        return ()


class _WatermarkProbe(beam.DoFn):
    """User code cannot read the watermark, but an event-time timer fires once the watermark reaches it: the
    lateness check's ladder of probe timers (transforms/lateness.py), on one key, records how far it got."""

    HORIZON = ReadModifyWriteStateSpec("horizon", VarIntCoder())
    PROBE = TimerSpec("probe", TimeDomain.WATERMARK)

    def setup(self):
        self._watermark = Metrics.distribution(NAMESPACE, WATERMARK)

    def process(self, _boot, horizon=beam.DoFn.StateParam(HORIZON), probe=beam.DoFn.TimerParam(PROBE)):
        if horizon.read() is None:
            horizon.write(_FLOOR_MS)
            _arm(probe, _FLOOR_MS)
        return ()

    @on_timer(PROBE)
    def probe_fired(self, fired=beam.DoFn.TimestampParam, horizon=beam.DoFn.StateParam(HORIZON),
                    probe=beam.DoFn.TimerParam(PROBE)):
        reached, known = fired.micros // 1_000, horizon.read()
        if reached > (known or _FLOOR_MS):
            horizon.write(reached)
            _arm(probe, reached, known)
            self._watermark.update(reached)


class MeasureSource(beam.PTransform):
    """The source, unchanged, with a probe of its watermark beside it (and of the offsets read, for Kafka)."""

    def __init__(self, source: beam.PTransform, kafka: bool):
        super().__init__()
        self._source, self._kafka = source, kafka

    def expand(self, pbegin):
        raw = pbegin | "Read" >> self._source
        positions = raw | "ReadPositions" >> beam.ParDo(_ReadPositions() if self._kafka else _Nothing())
        boot = pbegin | "Impulse" >> beam.Impulse()
        ((positions, boot)
         | "WithBoot" >> beam.Flatten()
         | "OneKey" >> beam.Map(lambda _: (0, 0)).with_output_types(Tuple[int, int])
         | "ProbeWatermark" >> beam.ParDo(_WatermarkProbe()))
        return raw


class _MeasurePanes(beam.DoFn):
    """Per-ad panes on their way into the sink (a table of a shard's AdCounts each): the newest minute, the
    newest complete one (the watermark has passed its end: its on-time pane, or a late one where the watermark
    ran ahead of the minute's clicks), how long after its end an on-time pane came, and the late panes."""

    def setup(self):
        self._complete = Metrics.distribution(NAMESPACE, COMPLETE_MINUTE)
        self._newest = Metrics.distribution(NAMESPACE, NEWEST_MINUTE)
        self._latency = Metrics.distribution(NAMESPACE, LATENCY)
        self._late = Metrics.counter(NAMESPACE, LATE_PANES)
        self._buckets = {bound: Metrics.counter(NAMESPACE, f"{LATENCY_BUCKET}{bound}")
                         for bound in LATENCY_BOUNDS + ("inf",)}

    def process(self, pane_counts, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        window_start = int(window.start.micros // 1000)
        self._newest.update(window_start)
        if pane.timing == PaneInfoTiming.LATE:  # the watermark had passed the minute before its clicks came
            self._late.inc()
            self._complete.update(window_start)
        elif pane.timing == PaneInfoTiming.ON_TIME:
            self._complete.update(window_start)
            latency_ms = max(0, int(time.time() * 1000) - window.end.micros // 1000)
            self._latency.update(latency_ms)
            self._buckets[next((b for b in LATENCY_BOUNDS if latency_ms <= b * 1000), "inf")].inc()
        yield pane_counts


class MeasureSink(beam.PTransform):
    """The sink, unchanged, with its per-ad rows measured on the way in."""

    def __init__(self, sink: beam.PTransform):
        super().__init__()
        self._sink = sink

    def expand(self, aggregates: Aggregates):
        measured = aggregates.per_ad | "MeasurePanes" >> beam.ParDo(_MeasurePanes())
        return aggregates._replace(per_ad=measured) | "Write" >> self._sink


class _FreshMetrics:
    """A result whose metrics() asks the runner each time: a portable runner's result (Prism's) keeps the
    first answer it got."""

    def __init__(self, result):
        self._result = result

    def metrics(self):
        job_service = getattr(self._result, "_job_service", None)
        if job_service is None:
            return self._result.metrics()
        from apache_beam.portability.api import beam_job_api_pb2
        from apache_beam.runners.portability.portable_runner import PortableMetrics
        return PortableMetrics(job_service.GetJobMetrics(
            beam_job_api_pb2.GetJobMetricsRequest(job_id=self._result._job_id)))


def distributions(result) -> Dict[str, Any]:
    """The adclick distributions, by name, merged over steps: (count, sum, min, max)."""
    merged: Dict[str, Any] = {}
    for item in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["distributions"]:
        value = item.committed if item.committed is not None and item.committed.count else item.attempted
        if value is None or not value.count:
            continue
        name, old = item.key.metric.name, merged.get(item.key.metric.name)
        merged[name] = (value.count, value.sum, value.min, value.max) if old is None else (
            old[0] + value.count, old[1] + value.sum, min(old[2], value.min), max(old[3], value.max))
    return merged


class KafkaEnds:
    """A topic's end offsets per partition, from its broker, for the lag of what the stream has read."""

    def __init__(self, url: str):
        from sources.kafka import parse_kafka_url
        self._url = parse_kafka_url(url)
        self._consumer = None

    def ends(self) -> Dict[int, Tuple[int, int]]:
        """{partition: (first offset held, end offset)}."""
        from confluent_kafka import Consumer, TopicPartition

        from sources.kafka import consumer_config
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self._url.brokers, **{"group.id": "adclick-metrics"}))
        topic = self._consumer.list_topics(self._url.topic, timeout=KAFKA_TIMEOUT_SECONDS).topics[self._url.topic]
        return {partition: self._consumer.get_watermark_offsets(
            TopicPartition(self._url.topic, partition), timeout=KAFKA_TIMEOUT_SECONDS, cached=False)
            for partition in sorted(topic.partitions)}


def _seconds(epoch_ms: float) -> float:
    return epoch_ms / 1000


class StreamCollector:
    """A prometheus-client collector over a running PipelineResult: each scrape reads the Beam metrics anew."""

    def __init__(self, window_seconds: int, kafka: Optional[KafkaEnds], clock=time.time):
        self.result = None
        self._window_ms, self._kafka, self._clock = window_seconds * 1000, kafka, clock
        self._warned = False

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        if self.result is None:  # not running yet: nothing read, all of a topic is lag
            if self._kafka is not None:
                yield from self._kafka_lag(GaugeMetricFamily, {})
            return
        fresh = _FreshMetrics(self.result)
        try:
            totals, spread = counters(fresh), distributions(fresh)
        except Exception as error:  # the runner's: one line in the log, the process metrics still answer
            if not self._warned:
                logging.warning("adclick stream: cannot read the pipeline's metrics: %s", error)
                self._warned = True
            return
        now_ms = self._clock() * 1000

        def counter(name, documentation, value):
            family = CounterMetricFamily(f"{PREFIX}_{name}", documentation)
            family.add_metric([], value)
            return family

        yield counter("clicks_read", "records read from the source (rate() for clicks per second)",
                      totals.get("read", 0))
        yield counter("clicks_unique", "clicks counted in the aggregates, each event_id once", totals.get("unique", 0))
        yield counter("duplicates", "resent clicks dropped by the dedup", totals.get("duplicates", 0))
        dead = CounterMetricFamily(f"{PREFIX}_dead_letters", "records set aside as dead letters, by reason",
                                   labels=["reason"])
        for name, count in sorted(totals.items()):
            if name.startswith(MALFORMED_PREFIX):
                dead.add_metric([name[len(MALFORMED_PREFIX):]], count)
        for reason in ("skewed", "too_late"):
            dead.add_metric([reason], totals.get(reason, 0))
        yield dead
        flagged = CounterMetricFamily(f"{PREFIX}_flagged", "clicks the risk filter took out, by rule", labels=["rule"])
        for name, count in sorted(totals.items()):
            if name.startswith(FLAGGED_PREFIX):
                flagged.add_metric([name[len(FLAGGED_PREFIX):]], count)
        yield flagged
        yield counter("late_panes",
                      "late per-ad panes sent to the sink, one per shard of ads holding a late click",
                      totals.get(LATE_PANES, 0))

        buckets, cumulative = [], 0
        for bound in LATENCY_BOUNDS + ("inf",):
            cumulative += totals.get(f"{LATENCY_BUCKET}{bound}", 0)
            buckets.append(("+Inf" if bound == "inf" else str(float(bound)), cumulative))
        latency = spread.get(LATENCY, (0, 0, 0, 0))
        histogram = HistogramMetricFamily(
            f"{PREFIX}_sink_latency_seconds",
            "on-time per-ad panes: from the end of their minute (event time) to the sink")
        histogram.add_metric([], buckets, _seconds(latency[1]))
        yield histogram

        for name, key, meaning, end in (
                ("sink_complete_minute", COMPLETE_MINUTE, "start of the newest minute the watermark has passed "
                 "(its on-time or a late pane reached the sink)", True),
                ("sink_newest_minute", NEWEST_MINUTE, "start of the newest minute any pane of reached the sink",
                 False)):
            if key in spread:
                yield _gauge(GaugeMetricFamily, f"{name}_timestamp_seconds", meaning, _seconds(spread[key][3]))
                if end:
                    yield _gauge(GaugeMetricFamily, "sink_freshness_seconds",
                                 "seconds since the end of the newest complete minute",
                                 _seconds(now_ms - spread[key][3] - self._window_ms))
        if WATERMARK in spread:
            watermark = spread[WATERMARK][3]
            if watermark <= now_ms + AHEAD_MS:
                yield _gauge(GaugeMetricFamily, "watermark_timestamp_seconds", "the source's watermark",
                             _seconds(watermark))
                yield _gauge(GaugeMetricFamily, "watermark_lag_seconds", "how far the watermark is behind now",
                             _seconds(now_ms - watermark))
        if self._kafka is not None:
            yield from self._kafka_lag(GaugeMetricFamily, spread)

    def _kafka_lag(self, GaugeMetricFamily, spread):
        try:
            ends = self._kafka.ends()
        except Exception as error:  # the broker's: no lag this scrape
            logging.warning("adclick stream: cannot read the topic's end offsets: %s", error)
            return
        lag = GaugeMetricFamily(f"{PREFIX}_source_lag_records",
                                "Kafka: records in the partition after the newest offset the stream has read",
                                labels=["topic", "partition"])
        topic = self._kafka._url.topic
        for partition, (first, end) in ends.items():
            read = spread.get(f"{OFFSET_PREFIX}{topic}-{partition}")
            lag.add_metric([topic, str(partition)], max(0, end - (read[3] + 1 if read else first)))
        yield lag


def _gauge(GaugeMetricFamily, name: str, documentation: str, value: float):
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
    family.add_metric([], value)
    return family


class Exporter:
    """The endpoint: bound before the run starts (a busy port is one line), fed the result once it runs."""

    def __init__(self, host: str, port: int, window_seconds: int, kafka_url: Optional[str]):
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_wsgi_server
        if not 0 <= port <= 65535:
            sys.exit(f"adclick stream: --metrics-port {port} is not a TCP port (0..65535)")
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.collector = StreamCollector(window_seconds, KafkaEnds(kafka_url) if kafka_url else None)
        registry.register(self.collector)
        try:
            self._server, _ = start_wsgi_server(port, host, registry)
        except OSError as error:
            sys.exit(f"adclick stream: cannot serve metrics on {host}:{port}: {error.strerror or error}")
        address = f"[{host}]" if ":" in host else host
        print(f"adclick stream: metrics at http://{address}:{self._server.server_port}/metrics", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_exporter: Optional[Exporter] = None


def instrument(args, source: beam.PTransform, sink: beam.PTransform, kafka: bool):
    """With --metrics-port: the source and sink measured, and the endpoint listening; else both unchanged."""
    global _exporter
    if args.metrics_port is None:
        return source, sink
    _exporter = Exporter(args.metrics_host, args.metrics_port, args.window_seconds, args.source if kafka else None)
    return MeasureSource(source, kafka), MeasureSink(sink)


def watch(result) -> None:
    """From now on the endpoint reports this running pipeline."""
    if _exporter is not None:
        _exporter.collector.result = result
