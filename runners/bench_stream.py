"""`adclick bench-stream`: how fast the stream DAG drains a Pub/Sub backlog on the DirectRunner,
with our bucketed dedup or Beam's DeduplicatePerKey.

Needs a Pub/Sub emulator (PUBSUB_EMULATOR_HOST). Publishes `--events` unique
clicks (plus the generator's resends and malformed lines) stamped in the
minute before now, then runs the stream (SQLite sink, one-minute windows with
early firings) in this process and times it until every message has gone
through dedup: drained messages / seconds since the pipeline started. Other
options are `adclick stream`'s (window, dedup and lateness settings).
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import uuid

import apache_beam as beam

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from pipelines.click_pipeline import build_pipeline
from runners import direct_fixes
from runners.stream import parser as stream_parser
from runners.stream import pipeline_options, stream_config
from runners.summary import ACCOUNTS, counters
from sinks.dead_letter_files import WriteDeadLetterFiles
from sinks.sqlite import WriteToSqlite

PROJECT = "test-project"


def _topic_and_subscription():
    from google.cloud import pubsub_v1
    name = f"bench-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(PROJECT, name)).name
    subscription = subscriber.create_subscription(
        name=subscriber.subscription_path(PROJECT, name), topic=topic, ack_deadline_seconds=600).name
    return topic, subscription


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="adclick bench-stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--dedup", choices=("buckets", "per-key"), default="buckets")
    parser.add_argument("--timeout", type=float, default=1800)
    args, stream_argv = parser.parse_known_args(argv)
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        sys.exit("adclick bench-stream: start an emulator and set PUBSUB_EMULATOR_HOST, e.g.\n"
                 "  cloud-pubsub-emulator --host=127.0.0.1 --port=8085 &\n"
                 "  export PUBSUB_EMULATOR_HOST=127.0.0.1:8085")
    topic, subscription = _topic_and_subscription()
    sent = publish(emissions_around_now(GeneratorConfig(events=args.events, minutes=1)),
                   PubSubPublisher(f"pubsub://{topic}"))
    print(f"published {sent.read:,} messages ({sent.unique:,} unique clicks)")

    work = tempfile.mkdtemp(prefix="adclick-bench-stream-")
    stream_args, beam_args = stream_parser().parse_known_args(
        ["--source", f"pubsub://{subscription}"] + stream_argv)
    config = stream_config(stream_args)
    config = dataclasses.replace(config, stream=dataclasses.replace(config.stream,
                                                                   dedup_per_key=args.dedup == "per-key"))
    direct_fixes.install()
    from sources.pubsub import ReadPubSub
    pipeline = build_pipeline(
        beam.Pipeline(options=pipeline_options(stream_args, beam_args)), ReadPubSub(f"pubsub://{subscription}"),
        WriteToSqlite(os.path.join(work, "bench.db")), WriteDeadLetterFiles(os.path.join(work, "dead")), config)
    started = time.monotonic()
    result = pipeline.run()
    drained = None
    while time.monotonic() - started < args.timeout:
        time.sleep(1)
        totals = counters(result)
        if sum(totals.get(name, 0) for name in ACCOUNTS) >= sent.read:
            drained = time.monotonic() - started
            break
    result.cancel()
    if drained is None:
        sys.exit(f"adclick bench-stream: not drained within {args.timeout:.0f} s: {counters(result)}")
    report = {"dedup": args.dedup, "messages": sent.read, "seconds": round(drained, 1),
              "messages_per_second": round(sent.read / drained)}
    print(report)
    return report
