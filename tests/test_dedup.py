import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.clicks import click
from transforms.dedup import DedupByEventId, FirstCopyFn
from transforms.event_time import StampEventTime


def counter(result, name):
    query = result.metrics().query(MetricsFilter().with_namespace("adclick").with_name(name))
    return sum(c.committed for c in query["counters"])


def test_each_event_id_counts_once_and_resends_are_counted():
    clicks = [click("e1"), click("e2", second=5), click("e1"), click("e3", second=70), click("e1"), click("e3", second=70)]
    pipeline = TestPipeline()
    unique = pipeline | beam.Create(clicks) | StampEventTime() | DedupByEventId()
    assert_that(unique, equal_to([click("e1"), click("e2", second=5), click("e3", second=70)]))
    result = pipeline.run()
    result.wait_until_finish()
    assert counter(result, "unique") == 3
    assert counter(result, "duplicates") == 3


def test_the_earliest_copy_counts_when_copies_differ():
    late_copy, early_copy = click("e1", ad_id="ad-2", second=30), click("e1", ad_id="ad-2", second=10)
    fn = FirstCopyFn()
    left = fn.add_input(fn.create_accumulator(), late_copy)
    right = fn.add_input(fn.create_accumulator(), early_copy)
    assert fn.merge_accumulators([left, right]) == (early_copy, 2)
    assert fn.merge_accumulators([right, left]) == (early_copy, 2)


def test_dedup_keeps_event_time_for_windowing():
    def window_start(element, window=beam.DoFn.WindowParam):
        yield element.event_id, window.start.micros // 1000

    pipeline = TestPipeline()
    starts = (pipeline
              | beam.Create([click("e1", second=61), click("e1", second=61)])
              | StampEventTime() | DedupByEventId()
              | beam.WindowInto(beam.window.FixedWindows(60))
              | beam.ParDo(window_start))
    assert_that(starts, equal_to([("e1", click("e1").click_ts + 60_000)]))
    pipeline.run()
