"""`adclick stream`: the DAG as a stream, from Pub/Sub or Kafka, on the DirectRunner, Flink or Dataflow.

The same DAG as `adclick replay` (pipelines/click_pipeline.py) over an
unbounded source, with event-time windows that fire early, on time and late,
a raw archive, and dead-letter files. On the DirectRunner the job runs in this
process until Ctrl-C, SIGTERM or `--duration`, then drains (no more reads, every
open window and file pane written) and prints the run summary; on Flink and
Dataflow it is submitted and this command returns (`--wait` to follow it).
See docs/streaming.md.
"""

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions

from pipelines.click_pipeline import build_pipeline
from pipelines.config import PipelineConfig, StreamConfig
from runners import beam_compat, options as cli_options, prism, stream_metrics
from runners.summary import counters, format_summary, started_a_job, summarize
from sinks import sink_for
from sinks.archive import DEFAULT_EVERY_SECONDS as ARCHIVE_EVERY_SECONDS, WriteRawArchive
from sinks.dead_letter_files import DEFAULT_EVERY_SECONDS as DEAD_LETTER_EVERY_SECONDS, WriteDeadLetterFiles
from sinks.meta import check_sink
from sources import check_stream_source, is_kafka, stream_source_for
from transforms.windowing import LATENESS_GRACE_SECONDS

RUNNERS = {"direct": "DirectRunner", "flink": "FlinkRunner", "dataflow": "DataflowRunner", "prism": "PrismRunner"}
SUMMARY_EVERY_SECONDS = 5
POLL_SECONDS = 0.5
DRAINING = ("adclick stream: draining: no more reads; writing every open window, the archive and the dead "
            "letters, then stopping (another Ctrl-C aborts and loses them)")
ABORTED = "adclick stream: aborted without draining: what it had not yet written is lost"


def parser() -> argparse.ArgumentParser:
    stream = StreamConfig()
    parser = argparse.ArgumentParser(
        prog="adclick stream", description="Run the adclick DAG as a stream into a sink.",
        epilog="Other options (--project, --region, --temp_location, --flink_master, ...) go to Beam.")
    parser.add_argument("--source", required=True, metavar="URL",
                        help="pubsub://projects/P/subscriptions/S or kafka://BROKER[,BROKER]/TOPIC")
    parser.add_argument("--sink", default="sqlite:///adclick.db",
                        help="sqlite:///PATH (DirectRunner, Prism) or bigtable://PROJECT/INSTANCE/TABLE "
                             "(default: %(default)s)")
    parser.add_argument("--archive", metavar="PATH",
                        help="raw archive root: Parquet files by event-time hour, readable by adclick replay")
    parser.add_argument("--archive-every-seconds", type=cli_options.at_least(1), default=ARCHIVE_EVERY_SECONDS,
                        help="processing time between archive files (default: %(default)s)")
    parser.add_argument("--dead-letter-dir", default="dead-letters", metavar="DIR",
                        help="directory of JSON-lines dead-letter files (default: %(default)s)")
    parser.add_argument("--dead-letter-every-seconds", type=cli_options.at_least(1),
                        default=DEAD_LETTER_EVERY_SECONDS,
                        help="processing time between dead-letter files (default: %(default)s)")
    parser.add_argument("--flagged-dir", metavar="DIR",
                        help="with --risk-rules: directory of JSON-lines files of the flagged clicks, each with its "
                             "rule, written like the dead letters (default: flagged, next to --dead-letter-dir)")
    parser.add_argument("--runner", choices=sorted(RUNNERS), default="direct", help="(default: %(default)s)")
    parser.add_argument("--summary", metavar="PATH",
                        help="write the run summary as JSON here (DirectRunner: every few seconds and at the end)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="DirectRunner: stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--wait", action="store_true", help="Flink/Dataflow: wait for the job to finish")
    group = parser.add_argument_group("sources")
    group.add_argument("--timestamp-attribute", default="event_ts",
                       help="Pub/Sub attribute with the event time in epoch ms; '' for the publish time "
                            "(default: %(default)s)")
    group.add_argument("--kafka-group", default="adclick", help="Kafka consumer group (default: %(default)s)")
    group.add_argument("--kafka-expansion-service", metavar="HOST:PORT",
                       help="a running Beam IO expansion service for ReadFromKafka (default: a local JVM on "
                            "make install's jars; Beam's jar on Dataflow)")
    group = parser.add_argument_group("stream state")
    group.add_argument("--dedup-ttl-seconds", type=cli_options.at_least(1), default=PipelineConfig().dedup_ttl_seconds,
                       help="event time a click's id is remembered (default: %(default)s)")
    group.add_argument("--dedup-bucket-seconds", type=cli_options.at_least(1), default=stream.dedup_bucket_seconds,
                       help="event time per dedup state bucket (default: %(default)s)")
    group.add_argument("--dedup-shards", type=cli_options.at_least(1), default=stream.dedup_shards_per_bucket,
                       help="dedup keys per bucket; aim at 100-1,000 ids per key (default: %(default)s)")
    group.add_argument("--lateness-shards", type=cli_options.at_least(1), default=stream.lateness_shards,
                       help="keys that judge lateness (default: %(default)s)")
    cli_options.add_pipeline_arguments(parser, stream=True)
    stream_metrics.add_arguments(parser)
    return parser


def stream_config(args) -> PipelineConfig:
    config = cli_options.pipeline_config(args)
    if args.runner in ("direct", "prism") and config.aggregates.hot_key_fanout > 1:
        # The Python DirectRunner and Prism lose late data behind the fanout (docs/runners.md).
        config = dataclasses.replace(config, aggregates=dataclasses.replace(config.aggregates, hot_key_fanout=1))
    # The DirectRunner's Pub/Sub watermark is the wall clock: a window closed before the launch stays closed,
    # so a restarted stream (adclick recover) never rewrites one with the redelivered late clicks of its first pulls.
    wall_clock = args.runner == "direct" and args.source.startswith("pubsub://")
    return dataclasses.replace(
        config, dedup_ttl_seconds=args.dedup_ttl_seconds,
        stream=StreamConfig(args.dedup_bucket_seconds, args.dedup_shards, args.lateness_shards,
                            closed_before_ms=int(time.time() * 1000) if wall_clock else None))


def pipeline_options(args, beam_args) -> PipelineOptions:
    options = PipelineOptions(beam_args, runner=RUNNERS[args.runner], streaming=True)
    if args.runner == "prism":
        prism.configure(options)
    if args.runner == "dataflow" and not options.view_as(SetupOptions).setup_file:
        options.view_as(SetupOptions).setup_file = str(Path(__file__).resolve().parent.parent / "setup.py")
    return options


def check(args, options: PipelineOptions, config: PipelineConfig) -> list:
    """Why this stream cannot run as asked, before anything starts."""
    errors = []
    kafka = is_kafka(args.source)
    if kafka and args.runner == "direct":
        errors.append("kafka:// streams run on --runner prism, flink or dataflow (Beam's ReadFromKafka is a Java "
                      "transform): locally --runner prism, or replay a range: "
                      "adclick replay --input 'kafka://BROKERS/TOPIC?from=...'")
    if args.source.startswith("pubsub://") and args.runner in ("flink", "prism"):
        errors.append("Pub/Sub streams run on the DirectRunner and Dataflow (Beam's Python ReadFromPubSub); "
                      f"on {args.runner.capitalize()} read Kafka")
    if args.sink.startswith("sqlite:") and args.runner not in ("direct", "prism"):
        errors.append("a SQLite sink is a local file: on Flink or Dataflow write to bigtable://PROJECT/INSTANCE/TABLE")
    if args.runner == "flink" and options.get_all_options().get("flink_master") in (None, "[auto]", "[local]"):
        errors.append("--runner flink needs --flink_master HOST:PORT (a Flink cluster's REST endpoint)")
    if args.runner == "dataflow":
        gcp = options.view_as(GoogleCloudOptions)
        missing = [flag for flag, value in (("--project", gcp.project), ("--region", gcp.region),
                                            ("--temp_location", gcp.temp_location)) if not value]
        if missing:
            errors.append("--runner dataflow needs " + ", ".join(missing))
        elif not gcp.temp_location.startswith("gs://"):
            errors.append("--temp_location must be a gs:// path on Dataflow")
    window = config.window
    if args.flagged_dir and not config.risk:
        errors.append("--flagged-dir is the risk filter's output: give --risk-rules FILE too")
    if config.risk and config.risk.rates and (
            window.size_seconds + window.allowed_lateness_seconds + LATENESS_GRACE_SECONDS < 60):
        errors.append(f"rate rules release a minute's clicks at its end: {window.size_seconds}-second windows "
                      f"need --allowed-lateness-seconds {60 - window.size_seconds - LATENESS_GRACE_SECONDS} "
                      "or more to take them")
    if config.dedup_ttl_seconds < window.size_seconds + window.allowed_lateness_seconds + LATENESS_GRACE_SECONDS:
        logging.warning("dedup TTL %d s is shorter than a window plus its allowed lateness: a late resend can "
                        "count twice (docs/streaming.md)", config.dedup_ttl_seconds)
    return errors


def build(args, beam_args):
    """The pipeline, ready to run, and its config; exits with the reasons it cannot run."""
    try:
        options = pipeline_options(args, beam_args)
        config = stream_config(args)
        if args.runner == "direct":  # before a check writes anything
            beam_compat.check(beam_compat.STREAM)
        errors = check(args, options, config)
        source = stream_source_for(args.source, args.timestamp_attribute, args.kafka_group,
                                   args.kafka_expansion_service)
        if not errors:
            check_stream_source(args.source)
        sink = sink_for(args.sink)
        if not errors:
            check_sink(args.sink, config.window.size_seconds, config.aggregates.filter_dimensions)
    except ValueError as error:
        errors = [str(error)]
    if errors:
        sys.exit("adclick stream: " + "\n  ".join(errors))
    source, sink = stream_metrics.instrument(args, source, sink, is_kafka(args.source))
    archive = WriteRawArchive(args.archive, args.archive_every_seconds) if args.archive else None
    pipeline = build_pipeline(
        beam.Pipeline(options=options), source=source, sink=sink,
        dead_letter_sink=WriteDeadLetterFiles(args.dead_letter_dir, args.dead_letter_every_seconds),
        config=config, archive=archive, flagged_sink=flagged_sink(args, config))
    return pipeline, config


def flagged_sink(args, config: PipelineConfig):
    """The flagged clicks' files, with risk rules: in --flagged-dir, else `flagged` beside the dead letters."""
    if not config.risk:
        return None
    directory = args.flagged_dir or FileSystems.join(FileSystems.split(args.dead_letter_dir.rstrip("/"))[0], "flagged")
    return WriteDeadLetterFiles(directory, args.dead_letter_every_seconds, prefix="flagged")


def _write(summary: dict, path) -> None:
    if path:
        Path(path).write_text(json.dumps(summary, indent=2))


class _Stop:
    """SIGINT and SIGTERM: the first asks for a drain, a second aborts at once."""

    def __init__(self):
        self.requested = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame):
        if self.requested.is_set():
            os.write(sys.stderr.fileno(), (ABORTED + "\n").encode())  # print() may be mid-write in this thread
            os._exit(128 + signum)
        self.requested.set()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _run_locally(pipeline, args) -> dict:
    """Runs the stream in this process until a signal or --duration, drains it, and summarizes it."""
    stop = _Stop()
    started = time.monotonic()
    result = pipeline.run()
    stream_metrics.watch(result)
    ended, failures = threading.Event(), []

    def wait():
        try:
            result.wait_until_finish()
        except Exception as error:  # the runner's, reported in one line below
            failures.append(error)
        finally:
            ended.set()

    threading.Thread(target=wait, name="adclick-stream", daemon=True).start()
    logging.info("streaming from %s into %s; Ctrl-C drains and stops", args.source, args.sink)
    deadline = started + args.duration if args.duration else float("inf")
    next_summary, draining = started + SUMMARY_EVERY_SECONDS, False
    while not ended.wait(POLL_SECONDS):
        now = time.monotonic()
        if not draining and (stop.requested.is_set() or now >= deadline):
            print(DRAINING, file=sys.stderr, flush=True)
            beam_compat.drain(result)
            stop.requested.set()  # a signal during a drain aborts it, --duration's too
            draining = True
        if now >= next_summary:
            _write(dict(summarize(counters(result)), running=True), args.summary)
            next_summary = now + SUMMARY_EVERY_SECONDS
    if failures:
        sys.exit(f"adclick stream: the pipeline failed: {_first_line(failures[0])}")
    summary = summarize(counters(result))
    summary["seconds"] = round(time.monotonic() - started, 2)
    print(format_summary(summary))
    _write(summary, args.summary)
    return summary


def run(argv=None) -> dict:
    args, beam_args = parser().parse_known_args(argv)
    pipeline, _ = build(args, beam_args)
    if args.runner == "direct":
        with beam_compat.installed(beam_compat.STREAM):
            return _run_locally(pipeline, args)
    result = pipeline.run()
    if not started_a_job(result):
        return {}
    stream_metrics.watch(result)
    print(f"submitted to {RUNNERS[args.runner]}: {getattr(result, 'job_id', lambda: '')() or result}")
    if args.wait or args.runner == "prism":  # Prism's job server is this process's child: it ends with it
        result.wait_until_finish()
    return {}
