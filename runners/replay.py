"""`adclick replay`: the DAG over raw logs, as a batch (backfill, recomputation)."""

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TypeOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.click_pipeline import build_pipeline
from runners import direct_fixes
from runners import options as cli_options
from runners.summary import counters, format_summary, summarize
from sinks import sink_for
from sinks.dead_letters import WriteDeadLetters
from sinks.meta import check_sink
from sources import check_inputs, source_for
from sources.files import FORMATS
from transforms.parse import start_workers


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adclick replay", description="Replay raw click logs through the adclick DAG into a sink.")
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
    parser.add_argument("--parse-processes", type=int, metavar="N",
                        help="worker processes that parse and validate (default: one per core on the DirectRunner, "
                             "whose runner works in one process; none elsewhere, where workers are the parallelism)")
    parser.add_argument("--spill-dir", metavar="DIR",
                        help="where the dedup shuffle waits in files, removed after the run (default: a temporary "
                             "directory on the DirectRunner, which would hold it in memory; none elsewhere)")
    cli_options.add_pipeline_arguments(parser)
    return parser


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in (None, "DirectRunner", "SwitchingDirectRunner")


def parse_processes(args: argparse.Namespace, options: PipelineOptions) -> int:
    if args.parse_processes is not None:
        return args.parse_processes
    return os.cpu_count() or 1 if is_local(options) else 0


@contextlib.contextmanager
def spill_dir(args: argparse.Namespace, options: PipelineOptions):
    """The dedup shuffle's directory for this run (None: in the runner), removed when the run ends."""
    if args.spill_dir is None and not is_local(options):
        yield None
        return
    path = FileSystems.join(args.spill_dir, f"adclick-spill-{uuid.uuid4().hex}") if args.spill_dir else (
        tempfile.mkdtemp(prefix="adclick-spill-"))
    try:
        yield path
    finally:
        if FileSystems.exists(path):
            FileSystems.delete([path])


def run(argv=None) -> dict:
    args, beam_args = parser().parse_known_args(argv)
    try:
        check_inputs(args.input)
        sink = sink_for(args.sink)
        check_sink(args.sink, args.window_seconds, args.filters)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"adclick replay: {error}")
    options = PipelineOptions(beam_args)
    if is_local(options):
        direct_fixes.install_for_batch()
        # The tests build this DAG with Beam's construction-time type check; a local replay skips
        # its 0.2 s (`adclick bench --profile`). Types and coders are inferred all the same.
        options.view_as(TypeOptions).pipeline_type_check = False
    started = time.monotonic()
    with spill_dir(args, options) as spill:
        config = dataclasses.replace(cli_options.pipeline_config(args), parse_processes=parse_processes(args, options),
                                     spill_dir=spill)
        start_workers(config.parse_processes)
        pipeline = build_pipeline(
            # Locally, straight to the FnApiRunner, the DirectRunner's choice for a batch once its try of
            # Prism (which needs a download) has failed.
            beam.Pipeline(runner=FnApiRunner() if is_local(options) else None, options=options),
            source=source_for(args.input, args.input_format),
            sink=sink,
            dead_letter_sink=WriteDeadLetters(args.dead_letter),
            config=config)
        result = pipeline.run()
        result.wait_until_finish()
    summary = summarize(counters(result))
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["events_per_second"] = round(summary["read"] / summary["seconds"]) if summary["seconds"] else 0
    print(format_summary(summary))
    if args.summary:
        with open(args.summary, "w") as handle:
            json.dump(summary, handle, indent=2)
    return summary
