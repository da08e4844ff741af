"""The TestStream suite on Prism: the same cases as on the DirectRunner, each pipeline built on PrismRunner.

Each case is the DirectRunner suite's own function, run with its module's `streaming_options` and
`TestPipeline` swapped for Prism's (the binary `make install` built, Python in LOOPBACK): one set of
expected answers for both runners. What Prism gets wrong is a strict xfail below, with its reproduction
in docs/runners.md, so the day it is fixed the canary fails and says so.
"""

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger, window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import PaneInfoTiming

from runners import prism
from tests import test_aggregates, test_hot_keys, test_risk, test_stream_dedup, test_stream_event_time, test_windowing

pytestmark = pytest.mark.prism

MODULES = (test_aggregates, test_hot_keys, test_risk, test_stream_dedup, test_stream_event_time, test_windowing)
EXPIRY_PANE = ("Prism fires a LATE pane without new elements when a window with allowed lateness expires "
               "(docs/runners.md, Prism: the expiry pane)")
NO_EARLY_PANE = ("Prism's TestStream fires no early pane on a processing-time advance when a stateful step comes "
                 "before the window (docs/runners.md, Prism: early panes)")
FANOUT_LOSES_LATE = ("Prism loses a late element behind CombinePerKey's hot-key fanout: the late pane repeats the "
                     "on-time count (docs/runners.md, Prism: hot-key fanout)")
LATE_STATE_LOST = ("Prism drops a window's user state once the watermark passes the window's end, before its "
                   "allowed lateness is over: a late pane's step finds it empty (transforms/risk.py keeps its "
                   "counts in the global window)")
CASES = (
    pytest.param(
        test_stream_event_time.test_early_on_time_and_late_panes_accumulate_and_too_late_clicks_are_set_aside,
        marks=pytest.mark.xfail(strict=True, reason=f"{EXPIRY_PANE}; {NO_EARLY_PANE}")),
    test_stream_event_time.test_lateness_is_judged_against_the_watermark_after_big_jumps,
    test_stream_event_time.test_the_detector_alone_at_the_boundary,
    pytest.param(test_stream_event_time.test_a_click_hours_ahead_is_set_aside_and_moves_nothing,
                 marks=pytest.mark.xfail(strict=True, reason=EXPIRY_PANE)),
    test_stream_dedup.test_same_as_deduplicate_per_key_across_bundles_windows_and_expiry,
    test_stream_dedup.test_with_one_ms_buckets_the_expiry_is_deduplicate_per_keys_to_the_millisecond,
    test_stream_dedup.test_the_per_key_variant_for_benchmarks_counts_like_ours,
    test_windowing.test_a_replay_windows_batches_by_column_and_a_stream_by_element_timestamp,
    test_windowing.test_late_clicks_within_the_allowed_lateness_update_their_window_and_later_ones_are_dropped,
    test_aggregates.test_a_replay_of_batches_matches_plain_python_counts,
    # Exact on Prism since late panes wait 1 s of processing time (WindowConfig.late_firing_seconds): the
    # expiry pane follows a trigger that counts elements (the minimal case below).
    test_aggregates.test_a_stream_of_batches_matches_plain_python_counts,
    test_risk.test_a_stream_flags_what_a_replay_flags_whatever_the_arrival_order,
    test_risk.test_a_late_click_is_ranked_after_the_clicks_judged_on_time,
    test_risk.test_block_lists_alone_need_no_shuffle_and_flag_the_same_in_a_replay_and_a_stream,
)


def on_prism(options: PipelineOptions = None) -> PipelineOptions:
    """A copy of `options` (streaming if none) for Prism."""
    flags = options.get_all_options(drop_default=True) if options is not None else {"streaming": True}
    options = PipelineOptions(**flags)
    options.view_as(StandardOptions).runner = "prism"
    return prism.configure(options)


class PrismTestPipeline(TestPipeline):
    def __init__(self, runner=None, options=None, **kwargs):
        super().__init__(options=on_prism(options), **kwargs)


@pytest.fixture
def prism_cases(monkeypatch):
    """Every case module builds its pipelines on Prism while the test runs."""
    for module in MODULES:
        if hasattr(module, "streaming_options"):
            monkeypatch.setattr(module, "streaming_options", on_prism)
        if hasattr(module, "TestPipeline"):
            monkeypatch.setattr(module, "TestPipeline", PrismTestPipeline)


def case_id(case) -> str:
    return f"{case.__module__.split('.')[-1]}.{case.__name__}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_direct_runners_case_on_prism(case, prism_cases):
    case()


def test_the_hot_key_fanout_case_on_prism(prism_cases, hot_log):
    test_hot_keys.test_a_stream_fans_the_hot_ad_out_before_its_final_combine(hot_log)


hot_log = test_hot_keys.hot_log


# The minimal reproductions of docs/runners.md, pure Beam: the DirectRunner shows the expected panes are
# Beam's model, Prism's strict xfail fails the day Prism agrees with it.

class _Panes(beam.DoFn):
    def process(self, key_count, pane=beam.DoFn.PaneInfoParam):
        yield key_count[1], pane.timing


class _Stateful(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", VarIntCoder())

    def process(self, key_value, seen=beam.DoFn.StateParam(SEEN)):
        seen.write(1)
        yield key_value[1]


def panes_of_one_window(runner: str, stream: TestStream, early_seconds: int = 0, stateful: bool = False):
    """(count, timing) of one 60 s window's accumulating panes, 120 s allowed lateness, late panes per element."""
    options = PipelineOptions(streaming=True)
    if runner == "prism":
        options = on_prism(options)
    pipeline = beam.Pipeline(options=options)
    elements = pipeline | stream
    if stateful:
        elements = elements | beam.Map(lambda element: (element, element)) | beam.ParDo(_Stateful())
    early = trigger.AfterProcessingTime(early_seconds) if early_seconds else None
    panes = (elements
             | beam.WindowInto(window.FixedWindows(60), trigger=trigger.AfterWatermark(early=early,
                                                                                       late=trigger.AfterCount(1)),
                               accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                               allowed_lateness=Duration(seconds=120))
             | beam.Map(lambda element: ("k", 1)) | beam.CombinePerKey(sum) | beam.ParDo(_Panes()))
    return pipeline, panes


def prism_xfail(reason: str):
    return [pytest.param("direct"), pytest.param("prism", marks=pytest.mark.xfail(strict=True, reason=reason))]


@pytest.mark.parametrize("runner", prism_xfail(EXPIRY_PANE))
def test_a_window_that_expires_fires_no_pane_without_new_elements(runner):
    stream = (TestStream().advance_watermark_to(0).add_elements([window.TimestampedValue("a", 5)])
              .advance_watermark_to_infinity())
    pipeline, panes = panes_of_one_window(runner, stream)
    assert_that(panes, equal_to([(1, PaneInfoTiming.ON_TIME)]))
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("runner", prism_xfail(NO_EARLY_PANE))
def test_a_processing_time_advance_fires_the_early_pane_after_a_stateful_step(runner):
    stream = (TestStream().advance_watermark_to(0).add_elements([window.TimestampedValue("a", 5)])
              .advance_processing_time(6).advance_processing_time(6).advance_watermark_to_infinity())
    pipeline, panes = panes_of_one_window(runner, stream, early_seconds=5, stateful=True)
    early = panes | beam.Filter(lambda count_timing: count_timing[1] == PaneInfoTiming.EARLY)
    assert_that(early, equal_to([(1, PaneInfoTiming.EARLY)]))
    pipeline.run().wait_until_finish()


@pytest.mark.parametrize("fanout", [1, pytest.param(4, marks=pytest.mark.xfail(strict=True, reason=FANOUT_LOSES_LATE))])
def test_a_late_element_reaches_the_late_pane_through_a_hot_key_fanout_on_prism(fanout):
    """Beam's model: the late element is in the late pane. Both local runners lose it behind a fanout (the
    DirectRunner fires no late pane at all), so adclick stream turns the fanout off on them."""
    stream = (TestStream().advance_watermark_to(0).add_elements([window.TimestampedValue("a", 5)])
              .advance_watermark_to(70).add_elements([window.TimestampedValue("late", 6)])
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=on_prism())
    panes = (pipeline | stream
             | beam.WindowInto(window.FixedWindows(60), trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                               accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                               allowed_lateness=Duration(seconds=120))
             | beam.Map(lambda element: ("k", 1)) | beam.CombinePerKey(sum).with_hot_key_fanout(fanout)
             | beam.ParDo(_Panes()))
    assert_that(panes, equal_to([(1, PaneInfoTiming.ON_TIME), (2, PaneInfoTiming.LATE)]))
    pipeline.run().wait_until_finish()


class _CountSoFar(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", VarIntCoder())

    def process(self, key_values, seen=beam.DoFn.StateParam(SEEN)):
        before = seen.read() or 0
        values = list(key_values[1])
        seen.write(before + len(values))
        yield before, sorted(values)


@pytest.mark.parametrize("runner", prism_xfail(LATE_STATE_LOST))
def test_a_late_pane_finds_the_state_its_window_left(runner):
    stream = (TestStream().advance_watermark_to(0)
              .add_elements([window.TimestampedValue(("k", second), second) for second in (10, 20, 30)])
              .advance_watermark_to(90).add_elements([window.TimestampedValue(("k", 5), 5)])
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=on_prism() if runner == "prism" else PipelineOptions(streaming=True))
    seen = (pipeline | stream
            | beam.WindowInto(window.FixedWindows(60), trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                              accumulation_mode=trigger.AccumulationMode.DISCARDING,
                              allowed_lateness=Duration(seconds=600))
            | beam.GroupByKey() | beam.ParDo(_CountSoFar()))
    assert_that(seen | beam.Filter(lambda before_values: before_values[1]), equal_to([(0, [10, 20, 30]), (3, [5])]))
    pipeline.run().wait_until_finish()
