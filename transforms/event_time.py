"""Event time is the click's own time, whatever the source stamped on the element."""

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue


def _stamp(click):
    return TimestampedValue(click, click.click_ts / 1000)


class StampEventTime(beam.PTransform):
    """Sets each click's element timestamp to its click_ts.

    A replay's Arrow batches carry click_ts as a column, which is their event
    time: nothing to stamp."""

    def expand(self, clicks):
        if clicks.is_bounded:
            return clicks
        return clicks | "ClickTs" >> beam.Map(_stamp)
