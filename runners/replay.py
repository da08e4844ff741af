"""`adclick replay`: the DAG over raw logs, as a batch (backfill, recomputation)."""

import argparse
import contextlib
import dataclasses
import json
import logging
import multiprocessing.util
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from urllib.parse import urlparse

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.click_pipeline import build_pipeline
from runners import beam_compat, options as cli_options, prism
from runners.output_paths import output_errors
from runners.summary import counters, format_summary, restatement_summary, started_a_job, summarize
from sinks import SQLITE_SCHEME, sink_for, sqlite_path
from sinks.dead_letters import WriteDeadLetters
from sinks.local_paths import replace_file
from sinks.meta import check_sink
from sinks.sqlite import WriteToSqlite
from sources import check_inputs, source_for
from sources.files import FORMATS
from transforms.parse import start_workers, stop_workers


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick replay", usage="%(prog)s --input GLOB|URL [--input ...] [--sink URL] [options]",
        description="Replay raw click logs through the adclick DAG into a sink.")
    parser.add_argument("--input", action="append", required=True, metavar="GLOB|URL",
                        help="raw log files (JSON lines, .gz, .avro, .parquet) on any Beam filesystem, or a range "
                             "of a Kafka topic, kafka://BROKERS/TOPIC?from=...&to=... (docs/streaming.md); repeatable")
    parser.add_argument("--input-format", default="auto", choices=("auto",) + FORMATS,
                        help="format of the input files (default: by extension, JSON lines otherwise)")
    parser.add_argument("--sink", default="sqlite:///adclick.db",
                        help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE (default: %(default)s)")
    parser.add_argument("--dead-letter", default="dead-letters.jsonl", metavar="PATH",
                        help="JSON-lines file for malformed records (default: %(default)s)")
    parser.add_argument("--summary", metavar="PATH", help="also write the run summary as JSON here")
    parser.add_argument("--flagged", metavar="PATH",
                        help="with --risk-rules: JSON-lines file of the clicks the rules flag, each with its rule "
                             "(default: flagged.jsonl next to the dead letters)")
    parser.add_argument("--parse-processes", type=cli_options.at_least(0), metavar="N",
                        help="worker processes that parse and validate (default: one per core on the DirectRunner "
                             "and Prism, whose Python runs here; none elsewhere, where workers are the parallelism)")
    parser.add_argument("--spill-dir", metavar="DIR",
                        help="where the shuffles (dedup, risk filter, partial counts, sliding top N) wait in files, "
                             "removed after the run (default: a temporary directory on the DirectRunner and Prism, "
                             "which would hold them in memory; none elsewhere)")
    cli_options.add_pipeline_arguments(parser, stream=False)
    return parser


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in (None, "DirectRunner", "SwitchingDirectRunner")


def on_this_machine(options: PipelineOptions) -> bool:
    """The DirectRunner's and Prism's workers run on this machine (Prism's Python in LOOPBACK, in this process)."""
    return is_local(options) or prism.is_prism(options)


def parse_processes(args: argparse.Namespace, options: PipelineOptions) -> int:
    if args.parse_processes is not None:
        return args.parse_processes
    return os.cpu_count() or 1 if on_this_machine(options) else 0


@contextlib.contextmanager
def spill_dir(args: argparse.Namespace, options: PipelineOptions):
    """The directory of this run's shuffles (None: in the runner), removed when the run ends."""
    if args.spill_dir is None and not on_this_machine(options):
        yield None
        return
    path = FileSystems.join(args.spill_dir, f"adclick-spill-{uuid.uuid4().hex}") if args.spill_dir else (
        tempfile.mkdtemp(prefix="adclick-spill-"))
    try:
        yield path
    finally:
        if FileSystems.exists(path):
            FileSystems.delete([path])


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the run is so that it unwinds (a BaseException: no `except Exception`
    in the run's own code swallows it)."""


class SignalStop:
    """SIGINT and SIGTERM stop a replay where it is. While armed (the pipeline runs), the first one
    raises Interrupted; Beam re-raises it inside a step as another error, so `signum` is what says a
    signal stopped the run. A signal while disarmed (the clean-up) is only recorded, never cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._armed = False

    def _handle(self, signum, _frame):
        first, self.signum = self.signum is None, self.signum or signum
        if self._armed and first:
            self._armed = False
            # Beam logs the exception with its traceback at each step it unwinds, and on Prism the worker's
            # threads print theirs as the run is torn down under them: the run ends in one line (run()).
            logging.disable(logging.CRITICAL)
            sys.stderr = open(os.devnull, "w")  # for good: the process exits with os._exit
            raise Interrupted(signum)

    @contextlib.contextmanager
    def handling(self):
        """Handles the signals (only the main thread can) for the run and its clean-up."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if not self.signum:  # else the run is stopped and exits: threads still unwinding stay quiet
                logging.disable(logging.NOTSET)

    @contextlib.contextmanager
    def armed(self):
        if self.signum:
            raise Interrupted(self.signum)
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    @contextlib.contextmanager
    def deferred(self):
        """A step no signal may cut in two (spawning the parse workers: a worker cut off mid-spawn is one
        the pool never waits for, and it dies loudly once the run's semaphores are gone): a signal waits
        until the step is done, then stops the run."""
        armed, self._armed = self._armed, False
        try:
            yield
        finally:
            self._armed = armed
        if armed and self.signum:
            raise Interrupted(self.signum)


def interrupted_message(sink) -> str:
    if sink is None:
        return "interrupted; nothing was written to the sink"
    if not isinstance(sink, WriteToSqlite):
        return "interrupted; the sink may hold part of this run's minutes: replay again to restate them"
    if sink.swapped:
        return "interrupted after the sink was written; its results are complete"
    return "interrupted; nothing was written to the sink"


def failure_reason(error: BaseException) -> str:
    """The first line of what failed: Beam re-raises an error inside a step with the step's name added."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextlib.contextmanager
def step_errors_unlogged():
    """Beam logs a step's exception with its traceback before it re-raises it; the replay says it in one line."""
    logger = logging.getLogger("apache_beam.runners.common")
    level, logger.level = logger.level, logging.CRITICAL
    try:
        yield
    finally:
        logger.setLevel(level)


def flagged_path(args) -> str:
    """Where a replay with risk rules writes its flagged clicks."""
    return args.flagged or os.path.join(os.path.dirname(args.dead_letter), "flagged.jsonl")


def run_pipeline(args, options, sink, dead_letters, stop: SignalStop, flagged=None):
    with spill_dir(args, options) as spill, step_errors_unlogged():
        config = dataclasses.replace(cli_options.pipeline_config(args), parse_processes=parse_processes(args, options),
                                     spill_dir=spill)
        with stop.deferred():
            start_workers(config.parse_processes)
        pipeline = build_pipeline(
            # Locally, straight to the FnApiRunner, the DirectRunner's choice for a batch once its try of
            # Prism (which needs a download) has failed.
            beam.Pipeline(runner=FnApiRunner() if is_local(options) else None, options=options),
            source=source_for(args.input, args.input_format),
            sink=sink,
            dead_letter_sink=dead_letters,
            config=config,
            flagged_sink=flagged)
        result = pipeline.run()
        if threading.current_thread() is threading.main_thread():
            # Beam's job-server wrapper (Prism's) took SIGINT at the run's start, to stop its server before it
            # calls ours: Prism's client threads would die loudly first. SIGINT stops the run as SIGTERM does.
            signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))
        if not started_a_job(result):
            return None
        result.wait_until_finish()
    return result


def checked_sink(args) -> beam.PTransform:
    """The sink, once every output is known to be safe to write; exits with one line if one is not."""
    try:
        check_inputs(args.input)
        sqlite_file = sqlite_path(args.sink) if urlparse(args.sink).scheme == SQLITE_SCHEME else None
        if args.flagged and not args.risk_rules:
            raise ValueError("--flagged is the risk filter's output: give --risk-rules FILE too")
        errors = output_errors(args.input, {"--dead-letter": args.dead_letter, "--summary": args.summary,
                                            "--sink": sqlite_file,
                                            "--flagged": flagged_path(args) if args.risk_rules else None})
        if errors:
            raise ValueError("\n  ".join(errors))
        sink = sink_for(args.sink)
        check_sink(args.sink, args.window_seconds, args.filters)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"adclick replay: {error}")
    return sink


def run(argv=None) -> dict:
    args, beam_args = parser().parse_known_args(argv)
    cli_options.refuse_stream_only("adclick replay", beam_args)
    started = time.monotonic()
    stop, sink, dead_letters, flagged, failure = SignalStop(), None, None, None, None
    with stop.handling():
        try:
            with stop.armed():
                # Before any output: a local replay needs the patches of the Beam it was written for.
                beam_compat.check(beam_compat.BATCH if is_local(PipelineOptions(beam_args)) else ())
                sink = checked_sink(args)
                options = PipelineOptions(beam_args)
                if prism.is_prism(options):
                    prism.configure(options)
                local = is_local(options)
                if on_this_machine(options):
                    # The tests build this DAG with Beam's construction-time type check; a local replay skips
                    # its 0.2 s (`adclick bench --profile`). Types and coders are inferred all the same.
                    options.view_as(TypeOptions).pipeline_type_check = False
                dead_letters = WriteDeadLetters(args.dead_letter)
                flagged = WriteDeadLetters(flagged_path(args)) if args.risk_rules else None
                with beam_compat.installed(beam_compat.BATCH if local else ()):
                    result = run_pipeline(args, options, sink, dead_letters, stop, flagged)
        except BaseException as error:  # an interrupt, a refused option or a failed step: clean up, then say which
            failure = error
        stop_workers()
        for output in (sink, dead_letters, flagged):
            getattr(output, "discard", lambda: None)()  # what an unfinished run left beside its outputs
    if failure is not None and stop.signum:
        print(f"adclick replay: {interrupted_message(sink)}", file=sys.__stderr__, flush=True)
        # The signal may have cut a step's own clean-up short: a Beam state sampler's thread left running
        # would keep the interpreter from exiting. This run's clean-up is done; the workers' semaphores
        # are released as an exit would (else the resource tracker warns), but threads are not waited for.
        multiprocessing.util._run_finalizers(0)
        prism.kill_servers()
        sys.stdout.flush()
        os._exit(128 + stop.signum)
    if failure is not None and not isinstance(failure, Exception):
        raise failure
    if failure is not None:
        logging.debug("the replay failed", exc_info=failure)
        sys.exit(f"adclick replay: failed: {failure_reason(failure)}")
    if result is None:
        return {}
    summary = summarize(counters(result))
    summary.update(restatement_summary(result))
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["events_per_second"] = round(summary["read"] / summary["seconds"]) if summary["seconds"] else 0
    print(format_summary(summary))
    if args.summary:
        replace_file(args.summary, json.dumps(summary, indent=2))
    return summary
