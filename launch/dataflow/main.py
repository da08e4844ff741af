"""The Flex Template's launcher (FLEX_TEMPLATE_PYTHON_PY_FILE): Dataflow's launcher VM runs this file with
the template's parameters as `--name=value` (metadata.json) and its own Beam options (--project, --region,
--temp_location, --setup_file, ...); it runs `adclick stream` or `adclick replay` on Dataflow with them.

A parameter is a command's option spelled with underscores (dedup_shards is --dedup-shards); anything that
is no option of either command goes to Beam unchanged. A parameter of the other command is refused: the
command would hand it to Beam, which ignores what it does not know.
"""

import logging
import sys

if __package__ in (None, ""):  # run as a file: the repository (the image's /template) is two levels up
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launch.dataflow.template import COMMAND, REPLAY, STREAM, option_actions, parsers  # noqa: E402

# What each command is told to run on: `adclick stream` names its runners, a replay hands --runner to Beam.
RUNNER = {STREAM: ["--runner", "dataflow"], REPLAY: ["--runner", "DataflowRunner"]}


def _pairs(argv):
    """(name, value) of each `--name=value` or `--name value`; value None for a bare flag."""
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--"):
            raise SystemExit(f"adclick launcher: unexpected argument {token!r}: parameters are --name=value")
        name, equals, value = token[2:].partition("=")
        if not equals and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            index, value = index + 1, argv[index + 1]
        yield name, (value if equals or value else None)
        index += 1


def adclick_argv(argv) -> tuple:
    """(command, its argv) from the launcher's arguments."""
    options = {command: set(option_actions(parser)) for command, parser in parsers().items()}
    command, out = None, []
    for name, value in _pairs(argv):
        if name == COMMAND:
            command = value
            continue
        if name == "runner":  # the launcher may name Beam's DataflowRunner: the command is told its own name
            continue
        out.append((name, value))
    if command not in options:
        raise SystemExit(f"adclick launcher: --{COMMAND}=stream or --{COMMAND}=replay, not {command!r}")
    others = set().union(*(names for other, names in options.items() if other != command)) - options[command]
    argv_out = list(RUNNER[command])
    for name, value in out:
        option = "--" + name.replace("_", "-")
        if option in options[command]:
            argv_out.append(option)
        elif option in others:
            raise SystemExit(f"adclick launcher: {name} is not a parameter of {COMMAND}={command}")
        else:
            argv_out.append("--" + name)  # Beam's
        if value is not None:
            argv_out.append(value)
    return command, argv_out


def main(argv=None) -> None:
    command, command_argv = adclick_argv(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.info("adclick %s %s", command, " ".join(command_argv))
    from runners import replay, stream
    (stream if command == STREAM else replay).run(command_argv)


if __name__ == "__main__":
    main()
