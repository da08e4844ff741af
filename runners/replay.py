"""`adclick replay`: the DAG over raw logs, as a batch (backfill, recomputation)."""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.click_pipeline import build_pipeline
from runners import options as cli_options
from runners.summary import counters, format_summary, summarize
from sinks import sink_for
from sinks.dead_letters import WriteDeadLetters
from sources import check_inputs, source_for
from sources.files import FORMATS


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
    cli_options.add_pipeline_arguments(parser)
    return parser


def parse_processes(args: argparse.Namespace, options: PipelineOptions) -> int:
    if args.parse_processes is not None:
        return args.parse_processes
    runner = options.view_as(StandardOptions).runner
    return os.cpu_count() or 1 if runner in (None, "DirectRunner", "SwitchingDirectRunner") else 0


def run(argv=None) -> dict:
    args, beam_args = parser().parse_known_args(argv)
    try:
        check_inputs(args.input)
        sink = sink_for(args.sink)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"adclick replay: {error}")
    options = PipelineOptions(beam_args)
    started = time.monotonic()
    pipeline = build_pipeline(
        beam.Pipeline(options=options),
        source=source_for(args.input, args.input_format),
        sink=sink,
        dead_letter_sink=WriteDeadLetters(args.dead_letter),
        config=dataclasses.replace(cli_options.pipeline_config(args), parse_processes=parse_processes(args, options)))
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
