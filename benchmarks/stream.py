"""`adclick bench-stream`: how fast the stream DAG runs, next to the bare source on the same runner,
and how long a click takes to show in the sink at rising rates.

Two set-ups: `--runner direct --source pubsub` (the default: the DirectRunner
on a Pub/Sub emulator, PUBSUB_EMULATOR_HOST) and `--runner prism --source
kafka` (Prism over a real Apache Kafka broker, ReadFromKafka run by the
expansion service's JVM: `--bootstrap HOST:PORT`, or a broker of its own in a
temporary directory). The DAG's Python runs in this process (the
DirectRunner, Prism's LOOPBACK worker), or with `--sdk-worker process` on Prism
in an SDK worker process of each phase's own (runners/sdk_worker.py, as on a
cluster), which leaves the bench's own bookkeeping out of the DAG's memory and
interpreter lock. The rising-rate publisher runs in a child process so that it
does not take the DAG's interpreter lock. Peak RSS is that of the DAG's
processes: this one's children (Prism, the JVM, the SDK worker) and, when the
DAG's Python runs here, this one; the publisher and a broker the bench started
are left out. It is sampled every POLL_SECONDS per phase (and, in a ramp,
noted at each minute, in all and per process name: whether memory stays flat).
`--hot-ad-share S` puts that share of the clicks on one ad (backlog and ramp).
`--json PATH` writes the report printed at the end.

On Kafka both drains read one topic, the same records (Prism commits no
offset: each pipeline reads from the earliest; `--source-events` gives the
source a larger backlog of the same shape instead): the source alone counts what
ReadFromKafka gives (the counter's attempted value, live from Prism's job
service), the DAG is done when the sink shows every unique click, and its
rate is the backlog's messages over the seconds from its start to then, less
the seconds the source alone took from its start to its first record (the
sink shows a pane at a time: in a drain of few large batches the first one
comes late, so its first click would time too little). The sink's per-(ad, minute) counts must then equal the
generator's truth exactly (the run exits otherwise); so must the ramp's (it
prints the first (ad, minute)s that differ, and `ramp_differing` has them).

1. Backlog (`--events N`, 0 to skip; `--source-events` for the source's
   own). N unique clicks (plus the generator's resends and malformed lines)
   are published stamped in the minute before now, then drained twice: by
   the source alone (the same ReadPubSub into a counter: no parse, dedup or
   windows) and by the full DAG (SQLite sink, `--dedup` ours or Beam's
   DeduplicatePerKey), each until every message has been counted (by the
   source counter; by the DAG's accounts, i.e. through dedup). Rate =
   messages counted after the first poll that saw any, over the seconds from
   that poll to the last, so pipeline start-up is left out (a backlog drained
   in one bundle is timed from the start instead: use thousands of
   messages). The full DAG's share of the source-only rate says whether the
   DAG or the source is the bottleneck.
2. Rising rates (`--rates 5,10,20`, `--seconds-per-rate S`). The full DAG runs
   while the child publishes unique clicks at each rate in turn, each stamped
   (click_ts and event_ts) at its publish time, with the generator's ads (Zipf
   over 1,000), countries, users and IPs, so the DAG holds as many keys as in
   a real stream. Latency is event-to-sink, measured on the sink a reader
   sees: every 0.2 s the bench reads clicks_per_minute, and for each (ad,
   minute) row notes when its count first reached 1, 2, ... k. A row counts
   each of its clicks once, so when it first shows k, k of its clicks are
   visible; the k-th click published for that (ad, minute) is taken as
   visible then. If the DAG keeps publish order within a row that is the
   click's own latency; if it reorders, it is how far the row lags its k-th
   click, which is what a reader sees. Per rate: offered events/s (published
   / step time), sustained events/s (clicks that became visible during the
   step / step time: in a steady state, what the DAG keeps up with), p50 and
   p99 latency (nearest rank; a click not seen within `--drain-seconds` after
   the last step counts as infinitely late). The ramp stops after a step that
   leaves more than 10 s of input unseen in the sink. Early panes fire every
   `--early-firing-seconds`, 3 s here unless given: at the stream's default of
   10 s a click would wait up to 10 s for its pane, and at 1 s the panes cost
   Prism more than the clicks (a pane is a bundle per key: over 10 minutes at
   10,000 clicks/s, p99 17-23 s against 9.5 s at 3 s). After the last step a
   trickle of clicks on ad `bench-tick` (left out of every number) keeps the
   source busy: the DirectRunner's pull waits up to 30 s on an empty
   subscription on its only worker thread, holding back every pane, which a
   live stream never sees.

`--profile DIR` profiles the DirectRunner's worker thread (it runs every
bundle of the pipeline: NUM_WORKERS is 1) with pyinstrument, one
DIR/PHASE.txt and .html per phase. Other options are `adclick stream`'s
(window, dedup and lateness settings).
"""

import argparse
import array
import collections
import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import orjson
import psutil
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions
from apache_beam.runners.runner import PipelineState

from loadgen.generator import GeneratorConfig, generate
from loadgen.publish import emissions_around_now, publish, publisher_for
from pipelines.click_pipeline import build_pipeline
from runners import beam_compat, prism
from runners.stream import parser as stream_parser, pipeline_options, stream_config
from runners.summary import ACCOUNTS, counters
from sinks.dead_letter_files import WriteDeadLetterFiles
from sinks.meta import check_sink
from sinks.sqlite import WriteToSqlite
from transforms.records import MINUTE_MS

PROJECT = "test-project"
P99_TARGET_SECONDS = 10.0
POLL_SECONDS = 0.2
BENCH_NAMESPACE = "bench"
WARMUP_SECONDS = 5.0
EARLY_FIRING_SECONDS = 3
RAMP_SHAPES = 10_000
TICK_AD = "bench-tick"
TICK_SECONDS = 0.5

Key = Tuple[str, int]  # (ad_id, window_start in epoch ms)


# The latency arithmetic: pure, on send and visibility times.

def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100): the smallest value with at least q% of
    the values at or below it. math.inf stands for a click never seen."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


Reached = Dict[Key, "array.array[float]"]  # {key: time the count first reached 1, 2, ...}


def note_reached(reached: Reached, moment: float, counts: Dict[Key, int]) -> None:
    """Adds a poll's counts, seen at `moment`, to `reached`: 8 bytes a click."""
    for key, count in counts.items():
        times = reached.get(key)
        if times is None:
            times = reached[key] = array.array("d")
        times.extend([moment] * (count - len(times)))


def reached_times(polls: Sequence[Tuple[float, Dict[Key, int]]]) -> Reached:
    """(poll time, {key: count}) in time order -> {key: [time the count first reached 1, 2, ...]}."""
    reached: Reached = {}
    for moment, counts in polls:
        note_reached(reached, moment, counts)
    return reached


def differences(counts: Dict[Key, int], truth: Dict[Key, int]) -> List[Tuple[Key, Optional[int], Optional[int]]]:
    """(key, sink's count, true count) of each (ad, minute) where the two differ, in key order."""
    return [(key, counts.get(key), truth.get(key)) for key in sorted(counts.keys() | truth.keys())
            if counts.get(key) != truth.get(key)]


def describe_differences(differing: Sequence[Tuple[Key, Optional[int], Optional[int]]]) -> str:
    return (f"the sink's counts differ from the truth in {len(differing)} (ad, minute)s: "
            + ", ".join(f"{key} {got} != {want}" for key, got, want in differing[:5]))


def latencies(sent: Dict[Key, List[float]], reached: Reached) -> Dict[Key, List[float]]:
    """{key: publish times in order}, {key: times the count reached 1, 2, ...} -> {key: latency of
    the k-th click sent}: the k-th reached time minus the k-th send, inf if never reached."""
    out = {}
    for key, sends in sent.items():
        seen = reached.get(key, ())
        out[key] = [seen[k] - moment if k < len(seen) else math.inf for k, moment in enumerate(sends)]
    return out


@dataclasses.dataclass(frozen=True)
class Step:
    """One rate of the ramp as published: when, and each click's key and publish time, in arrays of
    12 bytes a click. The bench runs the LOOPBACK worker in its own process, so its bookkeeping is in
    the RSS it reports: a tuple a click grew it by 100 MB a minute at 10,000 clicks/s."""
    rate: float
    started: float
    ended: float
    keys: Tuple[Key, ...]  # the step's distinct keys
    key_index: "array.array[int]"  # each click's key, an index into keys
    moments: "array.array[float]"  # each click's publish time

    @classmethod
    def of(cls, rate: float, started: float, ended: float, clicks: Sequence[Tuple[Key, float]]) -> "Step":
        index: Dict[Key, int] = {}
        key_index = array.array("i", [index.setdefault(key, len(index)) for key, _ in clicks])
        return cls(rate, started, ended, tuple(index), key_index, array.array("d", [moment for _, moment in clicks]))

    def __len__(self) -> int:
        return len(self.moments)

    def clicks(self) -> Iterator[Tuple[Key, float]]:
        """(key, publish time) of each click, in publish order."""
        return zip(map(self.keys.__getitem__, self.key_index), self.moments)


def step_report(step: Step, latency_of: Dict[int, float], visible_times: Sequence[float]) -> dict:
    """A step's numbers, from the latencies of its clicks (by their index in the step) and the
    times every click of the run became visible."""
    seconds = step.ended - step.started
    values = [latency_of[i] for i in range(len(step))]
    shown = sum(1 for moment in visible_times if step.started <= moment < step.ended)
    by_minute: Dict[int, List[float]] = {}  # whether latency holds over a long step, or grows
    for value, moment in zip(values, step.moments):
        by_minute.setdefault(int((moment - step.started) // 60), []).append(value)
    return {"rate": step.rate, "events": len(step), "offered_per_second": round(len(step) / seconds, 1),
            "sustained_per_second": round(shown / seconds, 1), "unseen": sum(map(math.isinf, values)),
            "p50_seconds": round(percentile(values, 50), 2), "p95_seconds": round(percentile(values, 95), 2),
            "p99_seconds": round(percentile(values, 99), 2),
            "p99_seconds_by_minute": [round(percentile(by_minute[minute], 99), 2) for minute in sorted(by_minute)]}


def ramp_report(steps: Sequence[Step], reached: Reached) -> List[dict]:
    """Per step: offered and sustained events/s, p50/p99 event-to-sink latency."""
    sent: Dict[Key, List[float]] = {}
    owner: Dict[Key, List[Tuple[int, int]]] = {}  # (step, index in step) of each key's k-th click
    for s, step in enumerate(steps):
        for i, (key, moment) in enumerate(step.clicks()):
            sent.setdefault(key, []).append(moment)
            owner.setdefault(key, []).append((s, i))
    by_step: List[Dict[int, float]] = [{} for _ in steps]
    for key, values in latencies(sent, reached).items():
        for (s, i), value in zip(owner[key], values):
            by_step[s][i] = value
    visible_times = [moment for times in reached.values() for moment in times]
    return [step_report(step, by_step[s], visible_times) for s, step in enumerate(steps)]


def best_rate(reports: Sequence[dict]) -> Optional[dict]:
    """The step with the highest sustained rate among those whose p99 is under the target."""
    within = [report for report in reports if report["p99_seconds"] < P99_TARGET_SECONDS]
    return max(within, key=lambda report: report["sustained_per_second"], default=None)


# The publisher of the ramp, in its own process.

def _publish_ramp(url: str, rates: Sequence[float], seconds: float, window_ms: int, hot_ad_share, connection):
    """Child process: on each "go" from the parent, publishes the next rate's clicks for `seconds`,
    paced (every click due by now, then a sleep of a few ms), each stamped at its publish time, and
    sends the Step back; on "drain", a trickle of TICK_AD clicks until "end"."""
    publisher = publisher_for(url)
    prefix = uuid.uuid4().hex[:8]
    # The generator's ads (Zipf over 1,000), countries, users and IPs: the DAG's keys as in a real stream.
    shapes = generate(GeneratorConfig(events=RAMP_SHAPES, duplicate_rate=0, malformed_rate=0,
                                      hot_ad_share=hot_ad_share)).truth
    rates, sent = iter(rates), 0
    while connection.recv() == "go":
        rate = next(rates)
        clicks, started, total = [], time.time(), int(rate * seconds)
        while len(clicks) < total:
            due = min(total, int((time.time() - started) * rate) + 1)
            while len(clicks) < due:
                now = time.time()
                now_ms = int(now * 1000)
                shape = shapes[sent % len(shapes)]
                publisher.send(orjson.dumps(dict(shape, event_id=f"{prefix}-{sent}", click_ts=now_ms)), now_ms)
                clicks.append(((shape["ad_id"], now_ms - now_ms % window_ms), now))
                sent += 1
            time.sleep(max(0.0, started + len(clicks) / rate - time.time()))
        publisher.flush()
        connection.send(Step.of(rate, started, max(time.time(), started + seconds), clicks))
    while not connection.poll(TICK_SECONDS):
        now_ms = int(time.time() * 1000)
        publisher.send(orjson.dumps({"event_id": f"{prefix}-tick-{now_ms}", "ad_id": TICK_AD, "click_ts": now_ms}),
                       now_ms)
        publisher.flush()
    connection.close()


class _SinkWatcher(threading.Thread):
    """Reads clicks_per_minute every POLL_SECONDS: (time, {(ad, window_start): clicks})."""

    def __init__(self, path: str):
        super().__init__(daemon=True)
        self._path = path
        self.reached: Reached = {}  # noted as it goes: every poll's changes kept grew by 80 MB a minute at 10,000/s
        self.latest: Dict[Key, int] = {}
        self.stop = threading.Event()

    def total(self) -> int:
        return sum(self.latest.values())

    def run(self):
        connection = sqlite3.connect(self._path, timeout=60)
        try:
            while not self.stop.wait(POLL_SECONDS):
                rows = connection.execute("SELECT ad_id, window_start, clicks FROM clicks_per_minute "
                                          "WHERE ad_id != ?", (TICK_AD,)).fetchall()
                counts = {(ad, start): clicks for ad, start, clicks in rows}
                changed = {key: clicks for key, clicks in counts.items() if self.latest.get(key) != clicks}
                note_reached(self.reached, time.time(), changed)
                self.latest = counts
        finally:
            connection.close()


# Measuring a phase: live counts, peak RSS.

def live_count(result, namespace: str, name: str) -> int:
    """A counter of a running pipeline. Prism's job service is asked again at every call (Beam's portable
    result caches its first answer), for the larger of the committed and the attempted value: a source's
    long-running bundle commits nothing until it ends."""
    service = getattr(result, "_job_service", None)
    if service is None:
        return counters(result, namespace).get(name, 0)
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability.portable_runner import PortableMetrics
    metrics = PortableMetrics(service.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=result._job_id)))
    query = metrics.query(MetricsFilter().with_namespace(namespace).with_name(name))
    return sum(max(counter.committed or 0, counter.attempted or 0) for counter in query["counters"])


class PeakRss(threading.Thread):
    """The peak RSS (bytes) of this process (unless not `with_self`: the DAG's Python runs in a worker of its
    own) and its children, `exclude`d pids (and theirs) left out, sampled every POLL_SECONDS until stop()."""

    def __init__(self, exclude=(), with_self: bool = True):
        super().__init__(daemon=True)
        self._exclude, self._with_self, self._done, self.peak = set(exclude), with_self, threading.Event(), 0
        self.by_minute: List[int] = []  # MB at the start of each minute: whether memory stays flat
        self.by_process: Dict[str, List[int]] = {}  # the same, per process name (Prism, java, python)
        self.peak_by_process: Dict[str, int] = collections.Counter()  # MB

    def _tree(self):
        root = psutil.Process()
        left_out = set(self._exclude)
        for pid in self._exclude:
            with contextlib.suppress(psutil.Error):
                left_out |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        return [process for process in ([root] if self._with_self else []) + root.children(recursive=True)
                if process.pid not in left_out]

    def run(self):
        started = time.monotonic()
        while not self._done.is_set():
            by_name: Dict[str, int] = collections.Counter()
            for process in self._tree():
                with contextlib.suppress(psutil.Error):
                    by_name[process.name()] += process.memory_info().rss
            total = sum(by_name.values())
            for name, rss in by_name.items():
                self.peak_by_process[name] = max(self.peak_by_process[name], round(rss / 2**20))
            self.peak = max(self.peak, total)
            if time.monotonic() - started >= 60 * len(self.by_minute):
                self.by_minute.append(round(total / 2**20))
                for name in set(self.by_process) | set(by_name):  # 0 before a process starts, and after it ends
                    minutes = self.by_process.setdefault(name, [0] * (len(self.by_minute) - 1))
                    minutes.append(round(by_name.get(name, 0) / 2**20))
            self._done.wait(POLL_SECONDS)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return round(self.peak / 2**20)


def _load() -> List[float]:
    return [round(load, 2) for load in os.getloadavg()]


# Pipelines and phases.

def _topic_and_subscription():
    from google.cloud import pubsub_v1
    name = f"bench-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, name)).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(PROJECT, name), topic=topic, ack_deadline_seconds=600).name
    return topic, subscription


class CountMessages(beam.PTransform):
    """The source-only sink: counts what the source gives, nothing else."""

    def expand(self, records):
        counted = Metrics.counter(BENCH_NAMESPACE, "source_read")

        def count(_):
            counted.inc()

        return records | "Count" >> beam.Map(count)


def source_count(result) -> int:
    """What CountMessages counted in a run."""
    return counters(result, BENCH_NAMESPACE).get("source_read", 0)


def _dag_count(result) -> int:
    totals = counters(result)
    return sum(totals.get(name, 0) for name in ACCOUNTS)


_OUR_PACKAGES = ("transforms", "sinks", "sources", "pipelines")
RUNNER_BOOKKEEPING = "runner: per-bundle bookkeeping"


def _part_of(frame) -> Optional[str]:
    function, path = frame.function or "", frame.file_path or ""
    if function in ("_fire_timers", "extract_all_timers", "_should_shutdown"):
        return "runner: timer scan and watermarks (monitor)"
    if function == "_read_from_pubsub":
        return "Pub/Sub pull (waits included)"
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-2] in _OUR_PACKAGES and "site-packages" not in parts:
        return f"ours: {parts[-2]}/{parts[-1]}"
    if path.endswith("apache_beam/transforms/trigger.py"):
        return "Beam: windows, triggers and their keyed state"
    return None


def time_by_part(root) -> Dict[str, float]:
    """Seconds of a profile (a pyinstrument frame tree) by part of the run: each frame's own time
    goes to the outermost frame above it (or itself) that names a part, else to the runner's
    per-bundle bookkeeping."""
    seconds: Dict[str, float] = {}

    def walk(frame, part):
        part = part or _part_of(frame)
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0:
            key = part or RUNNER_BOOKKEEPING
            seconds[key] = seconds.get(key, 0.0) + own
        for child in frame.children:
            walk(child, part)

    walk(root, None)
    return seconds


def format_parts(seconds: Dict[str, float]) -> str:
    total = sum(seconds.values()) or 1.0
    return "\n".join(f"{value:8.1f} s {value / total:6.1%}  {part}"
                     for part, value in sorted(seconds.items(), key=lambda item: -item[1]))


class _Profiled:
    """Profiles the DirectRunner's worker threads started inside the block (pyinstrument), into
    DIR/NAME.txt and .html; does nothing without a directory."""

    def __init__(self, directory: Optional[str], name: str):
        self._directory, self._name = directory, name
        self._profilers = []

    def __enter__(self):
        if self._directory:
            from apache_beam.runners.direct.executor import _ExecutorService
            from pyinstrument import Profiler
            worker = _ExecutorService._ExecutorServiceWorker
            self._original, profilers = worker.run, self._profilers

            def run(thread):
                profiler = Profiler(interval=0.005)
                profilers.append(profiler)
                profiler.start()
                try:
                    self._original(thread)
                finally:
                    profiler.stop()

            worker.run = run
        return self

    def __exit__(self, *_):
        if self._directory:
            from apache_beam.runners.direct.executor import _ExecutorService
            _ExecutorService._ExecutorServiceWorker.run = self._original

    def write(self) -> None:
        """After the pipeline's threads have ended."""
        if not self._directory or not self._profilers:
            return
        from pyinstrument.session import Session
        session = self._profilers[0].last_session
        for profiler in self._profilers[1:]:
            session = Session.combine(session, profiler.last_session)
        from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer
        base = Path(self._directory) / self._name
        base.parent.mkdir(parents=True, exist_ok=True)
        parts = format_parts(time_by_part(session.root_frame()))
        print(f"where the {self._name} run's time goes (profiled):\n{parts}")
        base.with_suffix(".txt").write_text(
            parts + "\n" + ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)
            + ConsoleRenderer(unicode=True, color=False, flat=True).render(session))
        base.with_suffix(".html").write_text(HTMLRenderer().render(session))
        session.save(str(base.with_suffix(".pyisession")))


class _PubSub:
    """The DirectRunner on the Pub/Sub emulator: a topic and its subscription per stream."""
    runner = "direct"

    def stream(self, name: str) -> Tuple[str, beam.PTransform]:
        from sources.pubsub import ReadPubSub
        topic, subscription = _topic_and_subscription()
        return f"pubsub://{topic}", ReadPubSub(f"pubsub://{subscription}")


class _Kafka:
    """Prism on a Kafka broker: a topic per stream (3 partitions), read by ReadFromKafka with a group of its own."""
    runner = "prism"

    def __init__(self, bootstrap: str, partitions: int):
        self.bootstrap, self._partitions = bootstrap, partitions

    def stream(self, name: str) -> Tuple[str, beam.PTransform]:
        from benchmarks.kafka import create_topic
        url = f"kafka://{self.bootstrap}/{create_topic(self.bootstrap, self._partitions)}"
        return url, self.source(url, name)

    def source(self, url: str, name: str) -> beam.PTransform:
        from sources.kafka import ReadKafkaStream
        return ReadKafkaStream(url, f"bench-{name}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def _sdk_worker(args, beam_args: List[str]):
    """(the phase's pipeline arguments, whether this process runs its Python): with `--sdk-worker process` on
    Prism the DAG's Python runs in an SDK worker of its own for the phase (runners/sdk_worker.py), so that
    neither its RSS nor its interpreter lock is shared with the bench's own bookkeeping; else here."""
    if args.runner != "prism" or args.sdk_worker == "loopback":
        yield beam_args, True
        return
    from runners.sdk_worker import external_worker
    cache_mb = PipelineOptions(beam_args).view_as(WorkerOptions).max_cache_memory_usage_mb
    with external_worker(cache_mb) as worker:
        yield beam_args + worker.pipeline_args, False


@contextlib.contextmanager
def _broker(bootstrap: Optional[str]):
    """(bootstrap address, the broker's pid if the bench started it): the broker given, or one of its own."""
    if bootstrap:
        yield bootstrap, None
        return
    from runners import broker
    from runners.jvm import free_port, stop_group
    with tempfile.TemporaryDirectory(prefix="adclick-bench-broker-", ignore_cleanup_errors=True) as data:
        port = free_port()
        process = broker.start(port, Path(data), quick_start=True)
        try:
            yield f"127.0.0.1:{port}", process.pid
        finally:
            stop_group(process, grace=broker.STOP_GRACE_SECONDS)


def _full_dag(source, stream_args, beam_args, config, work: str, name: str) -> beam.Pipeline:
    database = os.path.join(work, f"{name}.db")
    # As `adclick stream` does: the sink is checked (and its tables made) before the pipeline is built.
    check_sink(f"sqlite:///{database}", config.window.size_seconds, config.aggregates.filter_dimensions)
    return build_pipeline(
        beam.Pipeline(options=pipeline_options(stream_args, beam_args)), source,
        WriteToSqlite(database), WriteDeadLetterFiles(os.path.join(work, f"{name}-dead")), config)


def _source_only(source, stream_args, beam_args) -> beam.Pipeline:
    pipeline = beam.Pipeline(options=pipeline_options(stream_args, beam_args))
    _ = pipeline | "ReadRaw" >> source | "CountMessages" >> CountMessages()
    return pipeline


def _quiet_rpc_errors(hook=threading.excepthook):
    """Prism killed at the end of a phase ends the worker's gRPC streams in this process: its threads die
    with an RpcError each, which says nothing about the run."""
    import grpc

    def excepthook(args):
        if not isinstance(args.exc_value, grpc.RpcError):
            hook(args)

    threading.excepthook = excepthook


def _wait_for_workers(before: set) -> None:
    """A cancelled DirectRunner's worker stops within its 5 s queue timeout: wait, so that the
    next phase does not share the CPU with it (and its profile is complete). Prism is killed."""
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("Thread: "):
            thread.join(30)
    prism.kill_servers()


def _cancel(result) -> None:
    """Stops a stream; Prism logs every bundle the cancel fails, which says nothing here."""
    prism_log = logging.getLogger("apache_beam.runners.portability.prism_runner")
    level = prism_log.level
    prism_log.setLevel(logging.CRITICAL)
    try:
        result.cancel()
    except Exception as error:  # a job that already ended
        logging.debug("cancel: %s", error)
    finally:
        time.sleep(1)  # the cancelled bundles' errors are logged as they come back
        prism_log.setLevel(level)


def _drain(pipeline: beam.Pipeline, count, messages: int, timeout: float, profile: _Profiled,
           exclude=(), with_self: bool = True) -> dict:
    """Runs until `count(result)` reaches `messages`: the rate between the first and the last count."""
    before = set(threading.enumerate())
    load_before = _load()
    memory = PeakRss(exclude, with_self)
    memory.start()
    with profile:
        result = pipeline.run()
    started = time.monotonic()
    first = drained = None
    done = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        if PipelineState.is_terminal(result.state):
            prism.kill_servers()
            sys.exit(f"adclick bench-stream: the pipeline ended ({result.state}) before it drained")
        done = count(result)
        now = time.monotonic()
        if first is None and done:
            first = (now, done)
        if done >= messages:
            drained = now
            break
    _cancel(result)
    _wait_for_workers(before)
    peak_rss_mb = memory.stop()
    profile.write()
    if drained is None:
        sys.exit(f"adclick bench-stream: not drained within {timeout:.0f} s ({done} of {messages})")
    if first[1] < messages:
        seconds, counted = drained - first[0], messages - first[1]
    else:  # drained in one poll: no first count to start from
        seconds, counted = drained - started, messages
    return {"messages": messages, "counted": done, "seconds": round(seconds, 1),
            "messages_per_second": round(counted / seconds), "peak_rss_mb": peak_rss_mb,
            "peak_rss_mb_by_process": dict(memory.peak_by_process),
            "seconds_to_first": round(first[0] - started, 2), "seconds_to_done": round(drained - started, 2),
            "load_before": load_before, "load_after": _load()}


def _sink_counts(database: str) -> Dict[Key, int]:
    connection = sqlite3.connect(database, timeout=60)
    try:
        return {(ad, start): clicks for ad, start, clicks in connection.execute(
            "SELECT ad_id, window_start, clicks FROM clicks_per_minute WHERE ad_id != ?", (TICK_AD,))}
    finally:
        connection.close()


def _truth_counts(truth) -> Dict[Key, int]:
    return dict(collections.Counter((click["ad_id"], click["click_ts"] - click["click_ts"] % MINUTE_MS)
                                    for click in truth))


def _backlog_config(args, events: int) -> GeneratorConfig:
    return GeneratorConfig(events=events, minutes=1, hot_ad_share=args.hot_ad_share)


def _backlog(args, events: int) -> Tuple[str, int]:
    topic, subscription = _topic_and_subscription()
    sent = publish(emissions_around_now(_backlog_config(args, events)), publisher_for(f"pubsub://{topic}"))
    return subscription, sent.read


def _ramp(args, setup, stream_args, beam_args, config, work: str, profile: _Profiled, exclude=(),
          with_self: bool = True) -> dict:
    url, source = setup.stream("ramp")
    pipeline = _full_dag(source, stream_args, beam_args, config, work, "ramp")
    watcher = _SinkWatcher(os.path.join(work, "ramp.db"))
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    publisher = context.Process(target=_publish_ramp, daemon=True, args=(
        url, args.rates, args.seconds_per_rate, config.window.size_seconds * 1000, args.hot_ad_share, child))
    publisher.start()
    before = set(threading.enumerate())
    load_before = _load()
    memory = PeakRss(tuple(exclude) + (publisher.pid,), with_self)
    memory.start()
    with profile:
        result = pipeline.run()
    watcher.start()
    time.sleep(WARMUP_SECONDS)
    steps = []
    for rate in args.rates:
        parent.send("go")
        steps.append(parent.recv())
        published = sum(map(len, steps))
        print(f"  rate {rate:g}/s: published {len(steps[-1]):,}, visible {watcher.total():,} of {published:,}"
              f" (load {' '.join(map(str, _load()))})", flush=True)
        if published - watcher.total() > rate * P99_TARGET_SECONDS:
            print("  more than 10 s of input not yet in the sink: the ramp stops here")
            break
    parent.send("drain")
    published = sum(map(len, steps))
    deadline = time.monotonic() + args.drain_seconds
    while watcher.total() < published and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    time.sleep(2 * POLL_SECONDS)  # one more poll after the last count changed
    watcher.stop.set()
    watcher.join()
    _cancel(result)  # while the trickle still flows, so that the runner is not stuck in a pull
    parent.send("end")
    publisher.join(30)
    _wait_for_workers(before)
    peak_rss_mb = memory.stop()
    profile.write()
    sent = collections.Counter(key for step in steps for key, _ in step.clicks())
    differing = differences(watcher.latest, dict(sent))
    return {"steps": ramp_report(steps, watcher.reached), "peak_rss_mb": peak_rss_mb,
            "rss_mb_by_minute": memory.by_minute, "rss_mb_by_process_by_minute": memory.by_process,
            "exact": bool(watcher.latest) and not differing,
            "differing": differing,
            "load_before": load_before, "load_after": _load()}


def _rates(text: str) -> List[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("rates are positive events/s, e.g. 10,20,40")
    return rates


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adclick bench-stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", choices=("direct", "prism"),
                        help="direct (with --source pubsub, the default) or prism (with --source kafka)")
    parser.add_argument("--source", choices=("pubsub", "kafka"),
                        help="pubsub (the emulator at PUBSUB_EMULATOR_HOST) or kafka (--bootstrap, or a broker "
                             "of the bench's own)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="a running Kafka broker (default: start one)")
    parser.add_argument("--sdk-worker", choices=("loopback", "process"), default="loopback",
                        help="Prism: the DAG's Python in LOOPBACK, in this process, as `adclick stream` runs it (the "
                             "default), or in an SDK worker process of its own, as on a cluster: RSS of the DAG's "
                             "processes alone (Prism over-counted more often this way: docs/runners.md, defect 5)")
    parser.add_argument("--partitions", type=int, default=3, help="of each Kafka topic (default: %(default)s)")
    parser.add_argument("--events", type=int, default=2_000,
                        help="unique clicks of the backlog drained by the source alone and the DAG; 0 to skip")
    parser.add_argument("--source-events", type=int,
                        help="a larger backlog for the source alone, which drains thousands a second; on Kafka "
                             "a topic of its own (default: --events; on Kafka both read the same topic)")
    parser.add_argument("--dedup", choices=("buckets", "per-key"), default="buckets")
    parser.add_argument("--hot-ad-share", type=float, help="the top ad's share of the clicks (default: Zipf s=1.1)")
    parser.add_argument("--rates", type=_rates, metavar="R1,R2,...",
                        help="also publish at these rising rates (events/s) and measure event-to-sink latency")
    parser.add_argument("--rate", type=float, help="one rate: the same as --rates N")
    parser.add_argument("--seconds-per-rate", type=float, default=30)
    parser.add_argument("--drain-seconds", type=float, default=60,
                        help="after the ramp, wait this long at most for the sink to show every click")
    parser.add_argument("--profile", metavar="DIR",
                        help="DirectRunner: pyinstrument profiles of each phase's worker thread")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--timeout", type=float, default=1800)
    return parser


def _setup_or_exit(args) -> None:
    """Fills in the runner and the source from each other; refuses the pairs that cannot run."""
    args.source = args.source or ("kafka" if args.runner == "prism" else "pubsub")
    args.runner = args.runner or ("prism" if args.source == "kafka" else "direct")
    if (args.runner, args.source) not in (("direct", "pubsub"), ("prism", "kafka")):
        sys.exit(f"adclick bench-stream: --source {args.source} runs on --runner "
                 f"{'direct' if args.source == 'pubsub' else 'prism'} (docs/runners.md)")
    if args.rate:
        args.rates = (args.rates or []) + [args.rate]
    if args.source == "pubsub" and not os.environ.get("PUBSUB_EMULATOR_HOST"):
        sys.exit("adclick bench-stream: start an emulator and set PUBSUB_EMULATOR_HOST, e.g.\n"
                 "  cloud-pubsub-emulator --host=127.0.0.1 --port=8085 &\n"
                 "  export PUBSUB_EMULATOR_HOST=127.0.0.1:8085")


def run(argv=None) -> dict:
    args, stream_argv = parser().parse_known_args(argv)
    _setup_or_exit(args)
    kafka = args.source == "kafka"
    with (tempfile.TemporaryDirectory(prefix="adclick-bench-stream-", ignore_cleanup_errors=True) as work,
          beam_compat.installed(beam_compat.STREAM) if not kafka else contextlib.nullcontext(),
          _broker(args.bootstrap) if kafka else contextlib.nullcontext((None, None)) as (bootstrap, broker_pid)):
        # Early panes every EARLY_FIRING_SECONDS unless asked otherwise: the latency measured is the DAG's more
        # than the trigger's, at a cadence whose panes cost less than the clicks (the docstring).
        stream_args, beam_args = stream_parser().parse_known_args(
            ["--source", "kafka://localhost/unused" if kafka else "pubsub://projects/p/subscriptions/unused",
             "--runner", args.runner, "--early-firing-seconds", str(EARLY_FIRING_SECONDS)] + stream_argv)
        config = stream_config(stream_args)
        config = dataclasses.replace(config, stream=dataclasses.replace(config.stream,
                                                                       dedup_per_key=args.dedup == "per-key"))
        setup = _Kafka(bootstrap, args.partitions) if kafka else _PubSub()
        if kafka:
            _quiet_rpc_errors()
            logging.getLogger("apache_beam.runners.portability.prism_runner").setLevel(logging.WARNING)
        exclude = (broker_pid,) if broker_pid else ()
        report = {"runner": args.runner, "source": args.source, "dedup": args.dedup,
                  "early_firing_seconds": config.window.early_firing_seconds, "hot_ad_share": args.hot_ad_share,
                  "cpus": os.cpu_count(), "load_at_start": _load()}
        try:
            if args.events:
                backlogs = _kafka_backlogs if kafka else _backlogs
                report.update(backlogs(args, setup, stream_args, beam_args, config, work, exclude))
            if args.rates:
                report.update(_rising_rates(args, setup, stream_args, beam_args, config, work, exclude))
        finally:  # a phase that failed or was interrupted leaves no Prism behind
            prism.kill_servers()
        report["load_at_end"] = _load()
        print(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return report


def _ratio(report: dict) -> dict:
    report["full_dag_share_of_source_only"] = round(
        report["full_dag"]["messages_per_second"] / report["source_only"]["messages_per_second"], 3)
    print(f"full DAG at {report['full_dag_share_of_source_only']:.0%} of the source-only rate")
    return report


def _backlogs(args, setup, stream_args, beam_args, config, work, exclude) -> dict:
    """A backlog drained by the source alone, then one drained by the whole DAG, and their ratio."""
    from sources.pubsub import ReadPubSub
    report = {}
    subscription, messages = _backlog(args, args.source_events or args.events)
    print(f"source only: draining {messages:,} messages")
    report["source_only"] = _drain(_source_only(ReadPubSub(f"pubsub://{subscription}"), stream_args, beam_args),
                                   source_count, messages, args.timeout, _Profiled(args.profile, "source-only"))
    print(f"  {report['source_only']}")
    subscription, messages = _backlog(args, args.events)
    print(f"full DAG: draining {messages:,} messages")
    pipeline = _full_dag(ReadPubSub(f"pubsub://{subscription}"), stream_args, beam_args, config, work, "backlog")
    report["full_dag"] = _drain(pipeline, _dag_count, messages, args.timeout, _Profiled(args.profile, "full-dag"))
    print(f"  {report['full_dag']}")
    return _ratio(report)


def _kafka_backlogs(args, setup, stream_args, beam_args, config, work, exclude) -> dict:
    """One backlog in one topic, drained by ReadFromKafka alone, then by the whole DAG until the sink shows
    every unique click; the sink's counts checked against the truth."""
    url, _ = setup.stream("backlog")
    started = time.monotonic()
    sent = publish(emissions_around_now(_backlog_config(args, args.events)), publisher_for(url))
    print(f"produced {sent.read:,} records ({sent.unique:,} unique clicks) in {time.monotonic() - started:.1f} s")
    report = {"backlog": {"messages": sent.read, "unique": sent.unique, "duplicates": sent.duplicates,
                          "malformed": sent.malformed}}
    source_url, source_messages = url, sent.read
    if args.source_events and args.source_events != args.events:  # a backlog of its own, of the same shape
        source_url, _ = setup.stream("source-backlog")
        source_messages = publish(emissions_around_now(_backlog_config(args, args.source_events)),
                                  publisher_for(source_url)).read
    print(f"source only: ReadFromKafka into a counter, {source_messages:,} records")
    with _sdk_worker(args, beam_args) as (phase_args, with_self):
        report["source_only"] = _drain(_source_only(setup.source(source_url, "source-only"), stream_args, phase_args),
                                       lambda result: live_count(result, BENCH_NAMESPACE, "source_read"),
                                       source_messages, args.timeout, _Profiled(None, "source-only"), exclude,
                                       with_self)
    print(f"  {report['source_only']}")
    print("full DAG: until the sink shows every unique click")
    database = os.path.join(work, "backlog.db")
    with _sdk_worker(args, beam_args) as (phase_args, with_self):
        pipeline = _full_dag(setup.source(url, "full-dag"), stream_args, phase_args, config, work, "backlog")
        drained = _drain(pipeline, lambda _: sum(_sink_counts(database).values()), sent.unique, args.timeout,
                         _Profiled(None, "full-dag"), exclude, with_self)
    # The sink shows a pane of clicks at a time, the first one late in a drain of few large batches: the DAG is
    # timed from its start, less the start-up the source alone took to its first record (at least from its first
    # pane, for a backlog too small to outlast a start-up).
    drained["seconds"] = round(max(drained["seconds_to_done"] - report["source_only"]["seconds_to_first"],
                                   drained["seconds"]), 2)
    clicks_per_second = round(sent.unique / drained["seconds"])
    counts, truth = _sink_counts(database), _truth_counts(sent.truth)
    drained.update(messages=sent.read, clicks_per_second=clicks_per_second,
                   messages_per_second=round(clicks_per_second * sent.read / sent.unique), exact=counts == truth)
    report["full_dag"] = drained
    print(f"  {report['full_dag']}")
    if not drained["exact"]:
        sys.exit(f"adclick bench-stream: {describe_differences(differences(counts, truth))}")
    return _ratio(report)


def _rising_rates(args, setup, stream_args, beam_args, config, work, exclude) -> dict:
    """Publishing at rising rates: the rate each sustained and its event-to-sink latency, and the best one."""
    print(f"rising rates {args.rates} events/s, {args.seconds_per_rate:g} s each, "
          f"early panes every {config.window.early_firing_seconds} s")
    with _sdk_worker(args, beam_args) as (phase_args, with_self):
        ramp = _ramp(args, setup, stream_args, phase_args, config, work, _Profiled(args.profile, "ramp"), exclude,
                     with_self)
    print(f"{'offered/s':>10} {'sustained/s':>12} {'p50 s':>8} {'p95 s':>8} {'p99 s':>8} {'unseen':>7}")
    for step in ramp["steps"]:
        print(f"{step['offered_per_second']:>10} {step['sustained_per_second']:>12} {step['p50_seconds']:>8} "
              f"{step['p95_seconds']:>8} {step['p99_seconds']:>8} {step['unseen']:>7}")
        if len(step["p99_seconds_by_minute"]) > 1:
            print(f"{'':>10} p99 s by minute: {step['p99_seconds_by_minute']}")
    best = best_rate(ramp["steps"])
    print(f"highest sustained rate with p99 < {P99_TARGET_SECONDS:g} s: "
          + (f"{best['sustained_per_second']} events/s (offered {best['offered_per_second']})" if best else "none")
          + f"; peak RSS {ramp['peak_rss_mb']:,} MB; sink exact: {ramp['exact']}")
    print(f"RSS by minute (MB): {ramp['rss_mb_by_minute']}")
    for name, minutes in ramp["rss_mb_by_process_by_minute"].items():
        print(f"  {name}: {minutes}")
    if ramp["differing"]:
        print(f"  {describe_differences(ramp['differing'])}")
    return {"ramp": ramp["steps"], "ramp_peak_rss_mb": ramp["peak_rss_mb"],
            "ramp_rss_mb_by_minute": ramp["rss_mb_by_minute"],
            "ramp_rss_mb_by_process_by_minute": ramp["rss_mb_by_process_by_minute"], "ramp_exact": ramp["exact"],
            "ramp_differing": ramp["differing"][:5],
            "ramp_load": [ramp["load_before"], ramp["load_after"]],
            "best_sustained_per_second_under_p99_10s": best and best["sustained_per_second"]}
