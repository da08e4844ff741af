"""Event time is the click's own time, whatever the source stamped on the element."""

import apache_beam as beam

from transforms.batches import stamped_by_window


class StampEventTime(beam.PTransform):
    """Splits a stream's batches of clicks by window of `size_seconds` and stamps each part with its
    window's start: the steps after it see one window per element, as Beam's windows need.

    A replay's batches carry click_ts as a column, which is their event time: nothing to stamp."""

    def __init__(self, size_seconds: int):
        super().__init__()
        self._size_ms = size_seconds * 1000

    def expand(self, clicks):
        if clicks.is_bounded:
            return clicks
        return clicks | "ClickTs" >> beam.FlatMap(stamped_by_window, self._size_ms)
