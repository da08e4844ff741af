"""Event time is the click's own time, whatever the source stamped on the element."""

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue


def _stamp(click):
    return TimestampedValue(click, click.click_ts / 1000)


class StampEventTime(beam.PTransform):
    """Sets each click's element timestamp to its click_ts."""

    def expand(self, clicks):
        return clicks | "ClickTs" >> beam.Map(_stamp)
