"""`adclick COMMAND ...`: one entry point for every launcher."""

import importlib
import logging
import sys

COMMANDS = {
    "replay": ("runners.replay", "replay raw logs (JSON lines, Avro, Parquet) through the DAG into a sink"),
    "stream": ("runners.stream", "run the DAG as a stream from Pub/Sub or Kafka (DirectRunner, Flink, Dataflow)"),
    "generate": ("runners.generate", "write a synthetic click log with duplicates, disorder and malformed lines"),
    "serve": ("runners.serve", "serve the query API and the dashboard over a sink (SQLite or Bigtable)"),
    "bigtable": ("runners.bigtable", "create-table: set up the Bigtable sink's table and column families"),
    "pubsub": ("runners.pubsub_admin", "create: set up a Pub/Sub topic and its subscription for a stream"),
    "recover": ("runners.recover", "seek a killed Pub/Sub stream's subscription back to its open windows, restart it"),
    "reconcile": ("runners.reconcile", "recompute a time range from raw logs, compare the sink's tables, restate"),
    "top": ("runners.report", "print the top ads of the busiest minute in a SQLite sink"),
    "bench": ("benchmarks.replay", "time the replay against DuckDB on the same generated log"),
    "bench-stream": ("benchmarks.stream",
                     "time the stream (Pub/Sub or Kafka): backlog vs the bare source, latency at rising rates"),
    "broker": ("runners.broker", "run a local Apache Kafka broker (KRaft, one node) in the foreground until Ctrl-C"),
    "bench-kafka": ("benchmarks.kafka",
                    "time a bounded Kafka replay's read from a running broker, with and without the DAG"),
    "bench-api": ("benchmarks.api", "time a sink's writes and the query API's throughput and latency (20 clients)"),
}


def usage() -> str:
    lines = ["usage: adclick COMMAND [options]", "", "commands:"]
    width = max(map(len, COMMANDS)) + 2
    lines += [f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines.append("\n'adclick COMMAND --help' for a command's options")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # Logged for every processing-time pane of a window that already had its on-time pane, which
    # accumulating late panes make routine: hundreds of lines a minute that say nothing is wrong.
    logging.getLogger("apache_beam.transforms.trigger").setLevel(logging.ERROR)
    try:  # Ctrl-C while Beam is still importing, or in a command that has no handler of its own
        importlib.import_module(COMMANDS[argv[0]][0]).run(argv[1:])
    except KeyboardInterrupt:
        sys.exit(f"adclick {argv[0]}: interrupted")


if __name__ == "__main__":
    main()
