import collections
from unittest import mock

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, strategies as st

from tests.clicks import T0, batch, click
from tests.stream_cases import stream_batches
from transforms import aggregates
from transforms.aggregates import AggregateClicks, TopAdsFn, _PartialCounts
from transforms.packed import unpack
from transforms.records import AdCount, FilterCount, TopAds, filter_text_column, rows
from transforms.sliding_top import TopOverMinutesFn
from transforms.windowing import WindowClicks

CLICKS = (
    [click(f"a{i}", "hot", second=i % 60, country="US") for i in range(30)]
    + [click(f"b{i}", "hot", second=61, country="FR") for i in range(5)]
    + [click(f"c{i}", "warm", second=i, country=None) for i in range(7)]
    + [click(f"d{i}", "cold", second=90, country="US") for i in range(7)]
)
FILTERS = (("country",),)


def expected_per_ad():
    counts = collections.Counter((c.ad_id, c.click_ts - c.click_ts % 60_000) for c in CLICKS)
    return [AdCount(ad, start, n) for (ad, start), n in counts.items()]


def expected_per_filter():
    counts = collections.Counter(
        (c.ad_id, c.click_ts - c.click_ts % 60_000, f"country={c.country or 'unknown'}") for c in CLICKS)
    return [FilterCount(ad, start, f, n) for (ad, start, f), n in counts.items()]


def expected_top(n):
    by_minute = collections.defaultdict(list)
    for row in expected_per_ad():
        by_minute[row.window_start].append((row.ad_id, row.clicks))
    return [TopAds(start, tuple(sorted(rows, key=lambda r: (-r[1], r[0]))[:n])) for start, rows in by_minute.items()]


def same_values(expected):
    """Every output is an expected value and every expected value is output; a pane
    repeated with the same (accumulated) value is allowed: the sink upserts it."""
    def match(actual):
        assert set(actual) == set(expected), f"{sorted(set(actual))} != {sorted(expected)}"
    return match


def assert_aggregates(aggregates, top_n, matcher=equal_to):
    per_ad = aggregates.per_ad | "AdRows" >> beam.FlatMap(rows, AdCount)
    per_filter = aggregates.per_filter | "FilterRows" >> beam.FlatMap(rows, FilterCount)
    assert_that(per_ad, matcher(expected_per_ad()), label="PerAd")
    assert_that(per_filter, matcher(expected_per_filter()), label="PerFilter")
    assert_that(aggregates.top_ads, matcher(expected_top(top_n)), label="Top")


def test_a_replay_of_batches_matches_plain_python_counts():
    for top_n in (100, 1):
        pipeline = TestPipeline()
        batches = pipeline | beam.Create([batch(CLICKS[:20]), batch(CLICKS[20:])])
        windowed = batches | WindowClicks(60, 600, 10)
        assert_aggregates(windowed | AggregateClicks(FILTERS, top_n, 4), top_n)
        pipeline.run()


def test_a_stream_of_batches_matches_plain_python_counts():
    for top_n, fanout in ((100, 4), (1, 1)):
        stream = (TestStream()
                  .add_elements(stream_batches(CLICKS[:25]))
                  .advance_watermark_to(T0 / 1000 + 30)
                  .add_elements(stream_batches(CLICKS[25:]))
                  .advance_watermark_to_infinity())
        pipeline = TestPipeline(options=beam.options.pipeline_options.PipelineOptions(streaming=True))
        windowed = pipeline | stream | WindowClicks(60, 600, 10)
        assert_aggregates(windowed | AggregateClicks(FILTERS, top_n, fanout), top_n, same_values)
        pipeline.run()


def test_filter_text_sorts_dimensions_and_names_unknown():
    batch_of_one = pa.table({"country": ["US"], "user_id": pa.array([None], pa.string())})
    assert filter_text_column(batch_of_one, ("user_id", "country")).to_pylist() == ["country=US,user_id=unknown"]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 50)), min_size=1, max_size=60),
       st.integers(1, 5), st.randoms(use_true_random=False))
def test_top_ads_of_accumulating_panes_equals_top_of_final_counts(panes, n, random):
    """Each ad's panes grow; the ranking must equal the top N of each ad's final (largest) count."""
    final = {}
    inputs = []
    for ad, increment in panes:
        final[ad] = final.get(ad, 0) + increment
        inputs.append(AdCount(ad, T0, final[ad]))
    random.shuffle(inputs)
    fn = TopAdsFn(n)
    accumulators = []
    for half in (inputs[::2], inputs[1::2]):
        accumulator = fn.create_accumulator()
        for row in half:
            accumulator = fn.add_input(accumulator, row)
        accumulators.append(accumulator)
    expected = tuple(sorted(final.items(), key=lambda item: (-item[1], item[0]))[:n])
    assert fn.extract_output(fn.merge_accumulators(accumulators)) == expected


@given(st.lists(st.lists(st.tuples(st.sampled_from([0, 60_000]), st.sampled_from("abc"),
                                   st.sampled_from(["US", "FR", None])), max_size=12), max_size=8),
       st.integers(1, 20), st.integers(1, 30))
def test_partial_counts_summed_along_the_way_equal_plain_counts(batches, min_rows_to_sum, max_partial_rows):
    """However often the running counts are summed or sent on while batches come, a bundle's
    per-ad and per-filter parts add up to plain counts of its clicks."""
    fn = _PartialCounts(FILTERS)
    clicks = [row for rows in batches for row in rows]
    with mock.patch.object(aggregates, "MIN_ROWS_TO_SUM", min_rows_to_sum), \
            mock.patch.object(aggregates, "MAX_PARTIAL_ROWS", max_partial_rows):
        fn.start_bundle()
        parts = []
        for rows in batches:
            parts += fn.process(pa.table({name: pa.array(column, kind) for name, column, kind in zip(
                ("window_start", "ad_id", "country"), zip(*rows) if rows else ([], [], []),
                (pa.int64(), pa.string(), pa.string()))}))
        parts += [output.value for output in fn.finish_bundle()]
    summed = collections.defaultdict(collections.Counter)
    for (kind, shard), packed in parts:
        part = unpack(packed)
        assert set(aggregates.window_shards(part["window_start"].to_numpy(), aggregates.MERGE_SHARDS)) <= {shard}
        keys = ["window_start", "ad_id"] if kind == "per_ad" else ["window_start", "ad_id", "filter"]
        for row in part.to_pylist():
            summed[kind][tuple(row[key] for key in keys)] += row["count_all"]
    assert summed["per_ad"] == collections.Counter((start, ad) for start, ad, _ in clicks)
    assert summed["per_filter"] == collections.Counter(
        (start, ad, f"country={country or 'unknown'}") for start, ad, country in clicks)


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([T0, T0 + 60_000, T0 + 120_000]),
                          st.integers(1, 20)), min_size=1, max_size=60),
       st.integers(1, 4), st.randoms(use_true_random=False))
def test_top_over_minutes_of_accumulating_panes_sums_each_ads_final_counts(panes, n, random):
    """Each (ad, minute)'s panes grow; the ranking must be the top N of each ad's final counts summed
    over the minutes, however the panes are split between accumulators."""
    final = collections.Counter()
    inputs = []
    for ad, minute, increment in panes:
        final[ad, minute] += increment
        inputs.append(AdCount(ad, minute, final[ad, minute]))
    random.shuffle(inputs)
    fn = TopOverMinutesFn(n)
    accumulators = []
    for part in (inputs[::3], inputs[1::3], inputs[2::3]):
        accumulator = fn.create_accumulator()
        for row in part:
            accumulator = fn.add_input(accumulator, row)
        accumulators.append(accumulator)
    totals = collections.Counter()
    for (ad, _), clicks in final.items():
        totals[ad] += clicks
    expected = tuple(sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:n])
    assert fn.extract_output(fn.merge_accumulators(accumulators)) == expected
