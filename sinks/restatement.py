"""What a replay restated in a sink, as Beam metrics (namespace `adclick`) that reach the run summary.

A replay restates each minute it holds: the minute's rows become the replay's. A replay that
covered a minute only in part (one file of three) lowers its counts, and says so.
"""

from typing import NamedTuple, Optional

from apache_beam.metrics.metric import Metrics

NAMESPACE = "adclick"
RESTATED_WINDOWS = "restated_windows"
LOWERED_WINDOWS = "lowered_windows"
RESTATED_WINDOW_START = "restated_window_start"  # a distribution: its min and max are the first and last


class Restatement(NamedTuple):
    """The minutes a replay restated (window_start in epoch ms) and how many of them now count fewer clicks."""
    windows: int
    first: Optional[int]
    last: Optional[int]
    lowered: int


def restatement_of(windows) -> Restatement:
    """The Restatement of (window_start, lowered) pairs, one per window a replay restated."""
    starts, lowered = [start for start, _ in windows], sum(1 for _, fewer in windows if fewer)
    return Restatement(len(starts), min(starts, default=None), max(starts, default=None), lowered)


def count_restatement(restatement: Restatement) -> None:
    Metrics.counter(NAMESPACE, RESTATED_WINDOWS).inc(restatement.windows)
    Metrics.counter(NAMESPACE, LOWERED_WINDOWS).inc(restatement.lowered)
    if restatement.windows:
        window_starts = Metrics.distribution(NAMESPACE, RESTATED_WINDOW_START)
        window_starts.update(restatement.first)
        window_starts.update(restatement.last)
