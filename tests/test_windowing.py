import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from tests.clicks import T0, batch, click
from tests.stream_cases import stream_batches
from transforms.event_time import StampEventTime
from transforms.windowing import WindowClicks, with_window_start


def test_a_batch_gets_each_clicks_window_start():
    clicks = [click("a", second=0), click("b", second=59.999), click("c", second=60), click("d", second=3600)]
    starts = with_window_start(batch(clicks), 60_000)["window_start"].to_pylist()
    assert starts == [T0, T0, T0 + 60_000, T0 + 3_600_000]


def test_a_replay_windows_batches_by_column_and_a_stream_by_element_timestamp():
    clicks = [click("a", second=10), click("b", second=70)]

    pipeline = TestPipeline()
    starts = (pipeline | beam.Create([batch(clicks)]) | StampEventTime(60) | WindowClicks(60, 0, 0)
              | beam.FlatMap(lambda table: table["window_start"].to_pylist()))
    assert_that(starts, equal_to([T0, T0 + 60_000]))
    pipeline.run()

    def window_start(table, window=beam.DoFn.WindowParam):
        for event_id in table["event_id"].to_pylist():
            yield event_id, window.start.micros // 1000

    stream = TestStream().add_elements([batch(clicks)]).advance_watermark_to_infinity()  # one batch, two windows
    pipeline = TestPipeline(options=PipelineOptions(streaming=True))
    starts = pipeline | stream | StampEventTime(60) | WindowClicks(60, 0, 0) | beam.ParDo(window_start)
    assert_that(starts, equal_to([("a", T0), ("b", T0 + 60_000)]))
    pipeline.run()


def test_late_clicks_within_the_allowed_lateness_update_their_window_and_later_ones_are_dropped():
    """On-time pane at the watermark, one accumulating late pane per late click, nothing past the lateness."""
    def count_per_window(counts, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        yield window.start.micros // 1000, counts, pane.timing

    stream = (TestStream()
              .add_elements(stream_batches([click(f"on{i}", second=i) for i in range(3)]))
              .advance_watermark_to(T0 / 1000 + 90)            # window [T0, T0+60) closes: on-time pane of 3
              .add_elements(stream_batches([click("late1", second=5)]))   # late, within 60 s
              .advance_watermark_to(T0 / 1000 + 200)           # past window end + lateness
              .add_elements(stream_batches([click("late2", second=6)]))   # too late: dropped
              .advance_watermark_to_infinity())
    pipeline = TestPipeline(options=PipelineOptions(streaming=True))
    panes = (pipeline | stream | WindowClicks(60, 60, 0, late_firing_seconds=0)
             | beam.Map(lambda table: ("all", len(table))) | beam.CombinePerKey(sum) | beam.Values()
             | beam.ParDo(count_per_window))
    ON_TIME, LATE = 1, 2
    assert_that(panes, equal_to([(T0, 3, ON_TIME), (T0, 4, LATE)]))
    pipeline.run()
