"""TestStream helpers: raw records stamped like a stream delivers them, and a sink that records panes."""

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import TimestampedValue

from tests.clicks import T0, batch, clicks_of
from transforms.records import AGGREGATE_ROWS, RawRecord, rows


def at(second: float) -> float:
    """A TestStream time (seconds) `second` s after T0."""
    return (T0 + second * 1000) / 1000


def raw(event_id, second, ad_id="ad-1", received_second=None, country="US"):
    """A message of one click at T0 + second, received (and stamped by the source) at `received_second`."""
    received = second if received_second is None else received_second
    payload = orjson.dumps({"event_id": event_id, "ad_id": ad_id, "click_ts": T0 + int(second * 1000),
                            "country": country})
    return TimestampedValue(RawRecord(payload, "test", -1, T0 + int(received * 1000)), at(received))


def stream_batches(clicks, window_seconds: int = 60) -> list:
    """Clicks as a stream moves them after StampEventTime: a batch per window, stamped with its start."""
    by_window: dict = {}
    for one in clicks:
        by_window.setdefault(one.click_ts // (window_seconds * 1000), []).append(one)
    return [TimestampedValue(batch(group), window * window_seconds) for window, group in by_window.items()]


class ClickRows(beam.PTransform):
    """Batches of clicks -> their Click rows, each stamped with its click_ts."""

    def expand(self, batches):
        return batches | "ClickRows" >> beam.FlatMap(
            lambda table: [TimestampedValue(one, one.click_ts / 1000) for one in clicks_of(table)])


def streaming_options() -> PipelineOptions:
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    return options


class _Pane(beam.DoFn):
    def __init__(self, row_type):
        self._row_type = row_type

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        for row in rows(element, self._row_type):  # a pane of per-ad or per-filter counts is a table of them
            yield row, pane.timing


class PaneSink(beam.PTransform):
    """A sink for build_pipeline that hands each aggregate's (row, pane timing) to `check(name, pcoll)`."""

    def __init__(self, check):
        super().__init__()
        self._check = check

    def expand(self, aggregates):
        for name, made in aggregates.made():
            self._check(name, made | f"Panes{name}" >> beam.ParDo(_Pane(AGGREGATE_ROWS[name])))
        return aggregates
