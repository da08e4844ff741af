"""One-minute event-time windows with early, on-time and late panes.

Panes accumulate: each one carries the window's full count so far, so a sink
that upserts the latest pane is always right and never double counts.

A replay (bounded input) has all its data before the watermark passes any
window, so each window has one final pane and no trigger is needed: its Arrow
batches get their window as a column, `window_start`, and the aggregates group
by it.
"""

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import Duration

from pipelines.config import WindowConfig
from transforms.batches import window_starts

LATENESS_GRACE_SECONDS = 10


def with_window_start(clicks: pa.Table, size_ms: int) -> pa.Table:
    """The batch with the start (epoch ms) of each click's fixed window."""
    return clicks.append_column("window_start", pa.array(window_starts(clicks, size_ms), pa.int64()))


class WindowClicks(beam.PTransform):
    """FixedWindows of `size_seconds`, fired early every `early_firing_seconds` of
    processing time, on time at the watermark, and late within `allowed_lateness_seconds`:
    `late_firing_seconds` after a late click, or once per late click with 0."""

    def __init__(self, size_seconds: int, allowed_lateness_seconds: int, early_firing_seconds: int,
                 late_firing_seconds: int = WindowConfig.late_firing_seconds):
        super().__init__()
        self._size_seconds = size_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._early_firing_seconds = early_firing_seconds
        self._late_firing_seconds = late_firing_seconds

    def expand(self, clicks):
        if clicks.is_bounded:
            return clicks | "WindowStartColumn" >> beam.Map(with_window_start, self._size_seconds * 1000)
        return clicks | "FixedWindows" >> stream_windowing(
            FixedWindows(self._size_seconds), self._allowed_lateness_seconds, self._early_firing_seconds,
            self._late_firing_seconds)


def stream_windowing(window_fn, allowed_lateness_seconds: int, early_firing_seconds: int,
                     late_firing_seconds: int) -> beam.WindowInto:
    """Unbounded windowing: early panes, the on-time pane, late panes, accumulating.

    The runner keeps each window `LATENESS_GRACE_SECONDS` beyond the allowed
    lateness. `SetAsideTooLate` upstream judges lateness against the watermark
    it has observed, which may trail the runner's by a probe step; whatever it
    lets through must still find its window open, never be dropped unseen.
    """
    early = trigger.AfterProcessingTime(early_firing_seconds) if early_firing_seconds else None
    late = trigger.AfterProcessingTime(late_firing_seconds) if late_firing_seconds else trigger.AfterCount(1)
    return beam.WindowInto(
        window_fn,
        trigger=trigger.AfterWatermark(early=early, late=late),
        accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
        allowed_lateness=Duration(seconds=allowed_lateness_seconds + LATENESS_GRACE_SECONDS))
