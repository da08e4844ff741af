import collections

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, strategies as st

from tests.clicks import T0, click
from transforms.aggregates import AggregateClicks, TopAdsFn, filter_values
from transforms.event_time import StampEventTime
from transforms.records import AdCount, FilterCount, TopAds

CLICKS = (
    [click(f"a{i}", "hot", second=i % 60, country="US") for i in range(30)]
    + [click(f"b{i}", "hot", second=61, country="FR") for i in range(5)]
    + [click(f"c{i}", "warm", second=i, country=None) for i in range(7)]
    + [click(f"d{i}", "cold", second=90, country="US") for i in range(7)]
)


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


def run_aggregates(top_n, fanout):
    pipeline = TestPipeline()
    windowed = (pipeline | beam.Create(CLICKS) | StampEventTime()
                | beam.WindowInto(beam.window.FixedWindows(60)))
    aggregates = windowed | AggregateClicks((("country",),), top_n, fanout)
    assert_that(aggregates["per_ad"], equal_to(expected_per_ad()), label="PerAd")
    assert_that(aggregates["per_filter"], equal_to(expected_per_filter()), label="PerFilter")
    assert_that(aggregates["top_ads"], equal_to(expected_top(top_n)), label="Top")
    pipeline.run()


def test_aggregates_match_plain_python_counts():
    run_aggregates(top_n=100, fanout=4)


def test_top_n_cuts_ties_by_ad_id_without_fanout():
    run_aggregates(top_n=1, fanout=1)


def test_filter_text_sorts_dimensions_and_names_unknown():
    c = click("e", country="US", user_id=None)
    assert filter_values(c, ("user_id", "country")) == "country=US,user_id=unknown"


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
    halves = [inputs[::2], inputs[1::2]]
    accumulators = []
    for half in halves:
        accumulator = fn.create_accumulator()
        for row in half:
            accumulator = fn.add_input(accumulator, row)
        accumulators.append(accumulator)
    expected = tuple(sorted(final.items(), key=lambda item: (-item[1], item[0]))[:n])
    assert fn.extract_output(fn.merge_accumulators(accumulators)) == expected
