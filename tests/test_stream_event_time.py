"""The DAG as a stream on TestStream: panes, lateness, clock skew, run counters.

Expected values are worked out by hand from each scenario's events.
"""

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.windowed_value import PaneInfoTiming

from pipelines.click_pipeline import build_pipeline
from pipelines.config import AggregateConfig, PipelineConfig, WindowConfig
from runners.summary import counters
from tests.clicks import T0
from tests.stream_cases import PaneSink, at, raw, streaming_options
from transforms.event_time import StampEventTime
from transforms.lateness import SetAsideTooLate
from transforms.parse import VALID, ParseClicks
from transforms.set_aside import TOO_LATE
from transforms.windowing import LATENESS_GRACE_SECONDS

EARLY, ON_TIME, LATE = PaneInfoTiming.EARLY, PaneInfoTiming.ON_TIME, PaneInfoTiming.LATE
MINUTE = 60_000


def stream_config(window: WindowConfig, sliding_minutes: int) -> PipelineConfig:
    """No hot-key fanout: the Python DirectRunner drops late data in the fanout's discarding
    pre-combine (adclick stream turns it off there too; Flink and Dataflow keep it)."""
    return PipelineConfig(window=window, aggregates=AggregateConfig(hot_key_fanout=1, sliding_minutes=sliding_minutes))


def latest(expected: dict):
    """A matcher: the largest value seen per key (accumulating panes only grow) equals `expected`."""
    def match(pairs):
        seen = {}
        for key, value in pairs:
            seen[key] = max(seen.get(key, value), value)
        assert seen == expected, f"{seen} != {expected}"
    return match


def run_dag(stream, config, check):
    """Runs the DAG over `stream`; `check(name, pcoll)` gets each aggregate as (row, timing) and
    "dead_letters" as (reason, event_id)."""
    pipeline = beam.Pipeline(options=streaming_options())

    class DeadLetters(beam.PTransform):
        def expand(self, dead_letters):
            check("dead_letters", dead_letters | beam.Map(
                lambda d: (d.reason, orjson.loads(d.payload).get("event_id") if d.reason in ("too_late", "skewed")
                           else d.reason)))

    build_pipeline(pipeline, stream, PaneSink(check), DeadLetters(), config)
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result)


@pytest.mark.usefixtures("beam_fixes")
def test_early_on_time_and_late_panes_accumulate_and_too_late_clicks_are_set_aside():
    stream = (TestStream()
              .advance_watermark_to(at(0))
              .add_elements([raw("e1", 5), raw("e2", 10)])
              .advance_processing_time(6).advance_processing_time(6)   # early pane: e1, e2
              .add_elements([raw("e3", 20), raw("e1", 5)])             # e3, and a resend of e1
              .advance_watermark_to(at(60))                            # on time: e1, e2, e3
              .add_elements([raw("e4", 30)])                           # late, within 120 s: a late pane
              .add_elements([raw("e4", 30)])                           # its resend, in another bundle
              .advance_watermark_to(at(60 + 120 + 1))                  # the minute is closed
              .add_elements([raw("e5", 40), raw("e6", 185)])           # e5 too late; e6 in minute 3, on time
              .advance_watermark_to_infinity())
    # A pane per late click: TestStream's processing time never reaches a late pane's processing-time trigger.
    config = stream_config(WindowConfig(60, 120, 5, late_firing_seconds=0), sliding_minutes=2)

    def check(name, pcoll):
        if name == "per_ad":
            assert_that(pcoll, equal_to([
                (("ad-1", T0, 2), EARLY), (("ad-1", T0, 3), ON_TIME), (("ad-1", T0, 4), LATE),
                (("ad-1", T0 + 3 * MINUTE, 1), ON_TIME)]), label="PerAdPanes")
        elif name == "dead_letters":
            assert_that(pcoll, equal_to([("too_late", "e5")]), label="DeadLetters")
        elif name == "top_ads_sliding":
            rankings = pcoll | beam.Map(lambda row_timing: (row_timing[0].window_end, row_timing[0].ranking))
            assert_that(rankings, latest({
                T0 + MINUTE: (("ad-1", 4),), T0 + 2 * MINUTE: (("ad-1", 4),),
                T0 + 4 * MINUTE: (("ad-1", 1),), T0 + 5 * MINUTE: (("ad-1", 1),)}), label="SlidingFinal")

    totals = run_dag(stream, config, check)
    assert totals["read"] == 8
    assert (totals["unique"], totals["duplicates"], totals["too_late"]) == (5, 2, 1)
    assert totals.get("malformed", 0) == totals.get("skewed", 0) == 0


@pytest.mark.usefixtures("beam_fixes")
def test_lateness_is_judged_against_the_watermark_after_big_jumps():
    """Every click either reaches its window or is set aside: none is dropped unseen."""
    stream = (TestStream()
              .add_elements([raw("a", 5)])                     # watermark at the start of time
              .advance_watermark_to(at(90))
              .add_elements([raw("b", 10)])                    # minute 0 closes at 120: in time
              .advance_watermark_to(at(121))
              .add_elements([raw("c", 10), raw("d", 70)])      # c too late; minute 1 closes at 180
              .advance_watermark_to(at(36_000))                # ten hours on, in one jump
              .add_elements([raw("e", 35_000), raw("f", 35_950)])  # e closed at 35 100; f closes at 36 060
              .advance_watermark_to_infinity())
    config = stream_config(WindowConfig(60, 60, 0, late_firing_seconds=0), sliding_minutes=0)

    def check(name, pcoll):
        if name == "per_ad":
            counts = pcoll | beam.Map(lambda row_timing: (row_timing[0].window_start, row_timing[0].clicks))
            assert_that(counts, latest({T0: 2, T0 + MINUTE: 1, T0 + 599 * MINUTE: 1}), label="Final")
        elif name == "dead_letters":
            assert_that(pcoll, equal_to([("too_late", "c"), ("too_late", "e")]), label="TooLate")

    totals = run_dag(stream, config, check)
    assert (totals["unique"], totals["too_late"]) == (4, 2)


def test_the_detector_alone_at_the_boundary():
    """A window that closes exactly where the watermark stands is still open (the runner drops only
    beyond it); once the watermark is a probe step past the close, its clicks are too late."""
    stream = (TestStream()
              .advance_watermark_to(at(120))
              .add_elements([raw("edge", 59.999), raw("before", 1)])   # minute 0 closes at 120 s
              .advance_watermark_to(at(121))
              .add_elements([raw("after", 2), raw("next-minute", 61)])
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=streaming_options())
    judged = (pipeline | stream | ParseClicks())[VALID] | "Stamp" >> StampEventTime(60)
    judged = judged | SetAsideTooLate(60, 60)
    assert_that(judged[VALID] | "Ids" >> beam.FlatMap(lambda clicks: clicks["event_id"].to_pylist()),
                equal_to(["edge", "before", "next-minute"]), label="In")
    assert_that(judged[TOO_LATE] | "LateIds" >> beam.Map(lambda d: orjson.loads(d.payload)["event_id"]),
                equal_to(["after"]), label="Late")
    pipeline.run().wait_until_finish()


@pytest.mark.usefixtures("beam_fixes")
def test_a_click_hours_ahead_is_set_aside_and_moves_nothing():
    """A phone three hours ahead: its click is skewed, opens no future minute, and the clicks after
    it are on time, not late (had the watermark followed it, they would have been dropped)."""
    hours_ahead = 3 * 3600
    stream = (TestStream()
              .advance_watermark_to(at(0))
              .add_elements([raw("phone", 30 + hours_ahead, received_second=30), raw("a", 31)])
              .add_elements([raw("b", 40), raw("c", 50, received_second=50)])
              .advance_watermark_to(at(60))
              .add_elements([raw("slightly-ahead", 110, received_second=70)])  # 40 s ahead: within 300 s
              .advance_watermark_to_infinity())
    config = stream_config(WindowConfig(60, 0, 0), sliding_minutes=0)

    def check(name, pcoll):
        if name == "per_ad":
            assert_that(pcoll, equal_to([(("ad-1", T0, 3), ON_TIME), (("ad-1", T0 + MINUTE, 1), ON_TIME)]),
                        label="Panes")
        elif name == "dead_letters":
            assert_that(pcoll, equal_to([("skewed", "phone")]), label="Skewed")

    totals = run_dag(stream, config, check)
    assert totals["read"] == totals["unique"] + totals["skewed"] == 5
    assert totals["skewed"] == 1


def test_the_grace_period_covers_a_probe_step():
    from transforms.lateness import PROBE_STEP_MS
    assert LATENESS_GRACE_SECONDS * 1000 > PROBE_STEP_MS
