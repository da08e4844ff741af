"""Command-line settings of the DAG, shared by every launcher."""

import argparse

from pipelines.config import AggregateConfig, PipelineConfig, WindowConfig
from transforms.records import FILTER_DIMENSIONS, MINUTE_MS
from transforms.risk import RiskRulesError, load_rules


def _dimension_sets(text: str):
    """`country;country+user_id` -> (("country",), ("country", "user_id"))."""
    sets = tuple(tuple(sorted(part.split("+"))) for part in text.split(";") if part)
    unknown = {name for dimensions in sets for name in dimensions} - set(FILTER_DIMENSIONS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown filter dimension {', '.join(sorted(unknown))}; known: {', '.join(FILTER_DIMENSIONS)}")
    return sets


def _window_seconds(text: str) -> int:
    """A window size that tiles a minute: the API serves minutes, summing the windows of each."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    minute = MINUTE_MS // 1000
    if seconds <= 0 or minute % seconds:
        raise argparse.ArgumentTypeError(
            f"{seconds} is not a positive size that divides a minute evenly: use one of "
            + ", ".join(str(size) for size in range(1, minute + 1) if minute % size == 0))
    return seconds


def _risk_rules(path: str):
    """The rules file, read and checked at the command line: a bad one is one line before the run."""
    try:
        return load_rules(path)
    except RiskRulesError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`, so nonsense fails as one line before the run."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return integer


STREAM_ONLY = ("--allowed-lateness-seconds", "--early-firing-seconds", "--late-firing-seconds", "--hot-key-fanout")


def add_pipeline_arguments(parser: argparse.ArgumentParser, stream: bool) -> None:
    """The DAG's settings; the ones that shape panes and triggers only where they mean something, a stream."""
    window, aggregates = WindowConfig(), AggregateConfig()
    group = parser.add_argument_group("windowing and aggregates")
    group.add_argument("--window-seconds", type=_window_seconds, default=window.size_seconds,
                       help="event-time window size, a divisor of 60; a sink holds one size (default: %(default)s)")
    group.add_argument("--filters", default="country", type=_dimension_sets,
                       help="filter dimensions: combinations joined by ';', dimensions by '+' (default: country)")
    group.add_argument("--top-n", type=at_least(1), default=aggregates.top_n,
                       help="ads ranked per minute and per sliding window (default: %(default)s)")
    group.add_argument("--top-sliding-minutes", type=at_least(0), default=aggregates.sliding_minutes,
                       help="also rank the top N over the last M minutes, every minute; 0 for none "
                            "(default: %(default)s)")
    group.add_argument("--max-skew-seconds", type=at_least(0), default=PipelineConfig().max_skew_seconds,
                       help="set aside clicks stamped further ahead of their receive time (default: %(default)s)")
    parser.add_argument("--risk-rules", type=_risk_rules, metavar="FILE",
                        help="fraud rules (TOML or JSON, README: Risk filter): the clicks they flag are not billed "
                             "and go to their own output (default: no filter)")
    if not stream:  # a replay's windows get one final pane each: these keep their defaults
        parser.set_defaults(allowed_lateness_seconds=window.allowed_lateness_seconds,
                            early_firing_seconds=window.early_firing_seconds,
                            late_firing_seconds=window.late_firing_seconds,
                            hot_key_fanout=aggregates.hot_key_fanout)
        return
    group.add_argument("--allowed-lateness-seconds", type=at_least(0), default=window.allowed_lateness_seconds,
                       help="late panes for this long after the watermark passes a window (default: %(default)s)")
    group.add_argument("--early-firing-seconds", type=at_least(0), default=window.early_firing_seconds,
                       help="processing-time interval of early panes; 0 for none (default: %(default)s)")
    group.add_argument("--late-firing-seconds", type=at_least(0), default=window.late_firing_seconds,
                       help="a late pane this long (processing time) after a late click; 0: one pane per late "
                            "click, which keeps Prism from combining before its shuffle (default: %(default)s)")
    group.add_argument("--hot-key-fanout", type=at_least(1), default=aggregates.hot_key_fanout,
                       help="partial sums a per-ad count is spread over (default: %(default)s)")


def refuse_stream_only(prog: str, beam_args) -> None:
    """A stream's trigger settings given to a replay would fall through to Beam, which ignores them: refuse."""
    given = sorted({arg.split("=")[0] for arg in beam_args} & set(STREAM_ONLY))
    if given:
        raise SystemExit(f"{prog}: {', '.join(given)} shape a stream's panes; a replay has one final pane per "
                         "window: leave them out")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(
        window=WindowConfig(args.window_seconds, args.allowed_lateness_seconds, args.early_firing_seconds,
                            args.late_firing_seconds),
        aggregates=AggregateConfig(args.filters, args.top_n, args.hot_key_fanout, args.top_sliding_minutes),
        max_skew_seconds=args.max_skew_seconds, risk=args.risk_rules)
