"""Count each event_id once: the first copy counts, the rest are duplicates.

A replay (bounded input) is exact over the whole input: copies are combined per
event_id before the shuffle, so a resend costs a counter, not a shuffled record.
"""

from typing import Optional

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import TimestampedValue


def _earliest(first, second):
    """The copy that counts: the earliest click_ts, then the earliest ingestion, then by value."""
    return min(first, second, key=lambda click: (click.click_ts, click.receive_ts or 0, click))


class FirstCopyFn(beam.CombineFn):
    """Accumulates (the copy that counts, number of copies) for one event_id."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, accumulator, click):
        first, copies = accumulator
        return (click if first is None else _earliest(first, click)), copies + 1

    def merge_accumulators(self, accumulators):
        first, copies = None, 0
        for other, other_copies in accumulators:
            if other is not None:
                first = other if first is None else _earliest(first, other)
            copies += other_copies
        return first, copies

    def extract_output(self, accumulator):
        return accumulator


class EmitFirstCopyFn(beam.DoFn):
    """Counts unique clicks and duplicates, and puts the click back at its event time."""

    def __init__(self):
        self.unique = Metrics.counter("adclick", "unique")
        self.duplicates = Metrics.counter("adclick", "duplicates")

    def process(self, event_id_and_copies):
        _, (click, copies) = event_id_and_copies
        self.unique.inc()
        if copies > 1:
            self.duplicates.inc(copies - 1)
        yield TimestampedValue(click, click.click_ts / 1000)


class DedupByEventId(beam.PTransform):
    """Drops resent copies of a click.

    Bounded input: exact over the whole input. Unbounded input: state per
    event_id that expires `ttl_seconds` of event time after the click.
    """

    def __init__(self, ttl_seconds: Optional[int] = None):
        super().__init__()
        self._ttl_seconds = ttl_seconds

    def expand(self, clicks):
        if not clicks.is_bounded:
            raise NotImplementedError("streaming dedup arrives with the streaming source")
        return (
            clicks
            | "KeyByEventId" >> beam.Map(lambda click: (click.event_id, click))
            | "FirstCopy" >> beam.CombinePerKey(FirstCopyFn())
            | "CountCopies" >> beam.ParDo(EmitFirstCopyFn()))
