"""Clicks stamped far ahead of the time they were received are set aside, never counted in a future minute.

A phone with a wrong clock can stamp its clicks hours ahead. Counted at face
value, such a click would open a window in the future (and on a runner whose
watermark follows the newest timestamps, drag the watermark and make every
other click late). The receive time (Pub/Sub publish time, Kafka record
timestamp) is the stream's own clock: a click whose click_ts is more than
`max_skew_seconds` ahead of it goes to the `skewed` output with the reason.
A click without a receive time (a raw log without one) is not judged.
"""

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import Metrics

from transforms.parse import VALID
from transforms.records import Click, epoch_ms_to_iso
from transforms.set_aside import SKEWED, set_aside


def skew_detail(click: Click, max_skew_seconds: int) -> str:
    """Why a click is skewed: only a click with a receive time is judged."""
    received = click.receive_ts
    assert received is not None
    ahead = (click.click_ts - received) / 1000
    return (f"click_ts {epoch_ms_to_iso(click.click_ts)} is {ahead:,.0f} s ahead of its receive time "
            f"{epoch_ms_to_iso(received)} (max skew {max_skew_seconds} s)")


class _SplitSkewedFn(beam.DoFn):
    """A batch of clicks -> its timely clicks and skewed dead letters."""

    def __init__(self, max_skew_seconds: int):
        self._max_skew_seconds = max_skew_seconds
        self._max_skew_ms = max_skew_seconds * 1000

    def setup(self):
        self._skewed = Metrics.counter("adclick", "skewed")

    def _set_aside(self, click: Click):
        self._skewed.inc()
        return beam.pvalue.TaggedOutput(SKEWED, set_aside(click, SKEWED, skew_detail(click, self._max_skew_seconds)))

    def process(self, clicks: pa.Table):
        ahead = pc.subtract(clicks["click_ts"], clicks["receive_ts"])
        skewed = pc.fill_null(pc.greater(ahead, pa.scalar(self._max_skew_ms, pa.int64())), False)
        if not pc.any(skewed).as_py():
            yield clicks
            return
        yield clicks.filter(pc.invert(skewed))
        for row in clicks.filter(skewed).to_pylist():
            yield self._set_aside(Click(**row))


class SetAsideSkewed(beam.PTransform):
    """Batches of clicks -> timely clicks (main output `valid`) and skewed DeadLetters (output `skewed`)."""

    def __init__(self, max_skew_seconds: int):
        super().__init__()
        if max_skew_seconds < 0:
            raise ValueError("max_skew_seconds must be >= 0")
        self._max_skew_seconds = max_skew_seconds

    def expand(self, clicks):
        return clicks | "SplitSkewed" >> beam.ParDo(_SplitSkewedFn(self._max_skew_seconds)).with_outputs(
            SKEWED, main=VALID)
