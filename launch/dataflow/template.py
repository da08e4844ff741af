"""The Flex Template's parameters: which of `adclick stream`'s and `adclick replay`'s options a template run
takes, and what Dataflow checks of each value before it starts a launcher (the regexes).

The help texts are the commands' own (argparse): `python -m launch.dataflow.template` writes metadata.json
from them, and a test fails when the committed file differs. Options left out run only here (--runner,
--summary, --duration, --wait, --metrics-port, the local parse workers and spill) or need a local file
(--risk-rules, and with it --flagged and --flagged-dir).
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from sources.files import FORMATS
from transforms.records import FILTER_DIMENSIONS, MINUTE_MS

METADATA = Path(__file__).with_name("metadata.json")
STREAM, REPLAY = "stream", "replay"
COMMAND = "command"

_POSITIVE = r"^0*[1-9][0-9]*$"
_NATURAL = r"^[0-9]+$"
_GCS = r"^gs://[^\s]+$"
_DIMENSION_SET = "(" + "|".join(FILTER_DIMENSIONS) + r")(\+(" + "|".join(FILTER_DIMENSIONS) + "))*"
_WINDOWS = [str(size) for size in range(1, MINUTE_MS // 1000 + 1) if (MINUTE_MS // 1000) % size == 0]


@dataclass(frozen=True)
class Parameter:
    name: str  # the option's name with underscores: --dedup-shards is dedup_shards
    commands: tuple
    regex: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMETERS = (
    Parameter("source", (STREAM,), r"^(pubsub://projects/[^/\s]+/subscriptions/[^/\s]+|kafka://[^/\s]+/[^/\s?]+)$"),
    Parameter("input", (REPLAY,), r"^(gs://[^\s]+|kafka://[^/\s]+/[^\s]+)$"),
    Parameter("input_format", (REPLAY,), "^(" + "|".join(("auto",) + FORMATS) + ")$"),
    Parameter("sink", (STREAM, REPLAY), r"^bigtable://[^/\s]+/[^/\s]+/[^/\s]+$"),
    Parameter("archive", (STREAM,), _GCS),
    Parameter("archive_every_seconds", (STREAM,), _POSITIVE),
    Parameter("dead_letter_dir", (STREAM,), _GCS),
    Parameter("dead_letter_every_seconds", (STREAM,), _POSITIVE),
    Parameter("dead_letter", (REPLAY,), _GCS),
    Parameter("timestamp_attribute", (STREAM,), r"^[A-Za-z0-9_.-]*$"),
    Parameter("kafka_group", (STREAM,), r"^[A-Za-z0-9._-]+$"),
    Parameter("kafka_expansion_service", (STREAM,), r"^[^:\s/]+:[0-9]{1,5}$"),
    Parameter("dedup_ttl_seconds", (STREAM,), _POSITIVE),
    Parameter("dedup_bucket_seconds", (STREAM,), _POSITIVE),
    Parameter("dedup_shards", (STREAM,), _POSITIVE),
    Parameter("lateness_shards", (STREAM,), _POSITIVE),
    Parameter("window_seconds", (STREAM, REPLAY), "^(" + "|".join(_WINDOWS) + ")$"),
    Parameter("filters", (STREAM, REPLAY), "^" + _DIMENSION_SET + "(;" + _DIMENSION_SET + ")*$"),
    Parameter("top_n", (STREAM, REPLAY), _POSITIVE),
    Parameter("top_sliding_minutes", (STREAM, REPLAY), _NATURAL),
    Parameter("max_skew_seconds", (STREAM, REPLAY), _NATURAL),
    Parameter("allowed_lateness_seconds", (STREAM,), _NATURAL),
    Parameter("early_firing_seconds", (STREAM,), _NATURAL),
    Parameter("late_firing_seconds", (STREAM,), _NATURAL),
    Parameter("hot_key_fanout", (STREAM,), _POSITIVE),
)


def parsers() -> dict:
    from runners import replay, stream
    return {STREAM: stream.parser(), REPLAY: replay.parser()}


def option_actions(parser: argparse.ArgumentParser) -> dict:
    """A parser's long options: {"--dedup-shards": its action}."""
    return {string: action for action in parser._actions for string in action.option_strings if string[:2] == "--"}


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def metadata() -> dict:
    """metadata.json's content, from the commands' parsers."""
    by_command = {command: (parser, option_actions(parser)) for command, parser in parsers().items()}
    entries = [{"name": COMMAND, "label": "Command", "regexes": ["^(stream|replay)$"],
                "helpText": "stream: `adclick stream` (Pub/Sub or Kafka, unbounded); replay: `adclick replay` "
                            "(files on gs:// or a Kafka range, bounded). Each parameter below says which it is for."}]
    for parameter in PARAMETERS:
        parser, actions = by_command[parameter.commands[0]]
        action = actions[parameter.option]
        scope = " and ".join(parameter.commands)
        entries.append({
            "name": parameter.name, "label": parameter.name.replace("_", " ").capitalize(),
            "helpText": f"{scope}: {_help(parser, action)}", "isOptional": True, "regexes": [parameter.regex]})
    return {
        "name": "adclick",
        "description": "Ad click aggregation (one Beam DAG): a stream from Pub/Sub or Kafka, or a replay of raw logs, "
                       "into Bigtable. docs/launch.md.",
        "parameters": entries,
    }


def render() -> str:
    return json.dumps(metadata(), indent=2) + "\n"


if __name__ == "__main__":
    METADATA.write_text(render())
    print(f"wrote {METADATA}")
