"""The most clicked ads over the last M minutes, ranked every minute (a sliding window).

Built from the per-minute counts, not the clicks: in a stream those arrive as
accumulating panes, so an ad's minute may come several times with a growing
count; the latest (largest) is its count for that minute, and the ad's total is
the sum over the M minutes. A replay has one final count per ad and minute.
"""

from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import SlidingWindows

from transforms.aggregates import TopAdsFn
from transforms.records import AdCount
from transforms.windowing import stream_windowing


class SlidingTopAds(NamedTuple):
    """The top ads of the `minutes` minutes that end (exclusive) at `window_end` (epoch ms): (ad_id, clicks), best first."""
    window_end: int
    minutes: int
    ranking: tuple


class ClicksOverMinutesFn(beam.CombineFn):
    """An ad's AdCount panes of several minutes -> its clicks over them (latest pane per minute)."""

    def create_accumulator(self):
        return {}

    def add_input(self, by_minute, ad_count):
        if ad_count.clicks > by_minute.get(ad_count.window_start, 0):
            by_minute[ad_count.window_start] = ad_count.clicks
        return by_minute

    def merge_accumulators(self, accumulators):
        merged = {}
        for by_minute in accumulators:
            for minute, clicks in by_minute.items():
                if clicks > merged.get(minute, 0):
                    merged[minute] = clicks
        return merged

    def extract_output(self, by_minute):
        return sum(by_minute.values())


class _ToTotal(beam.DoFn):
    def process(self, ad_and_clicks, window=beam.DoFn.WindowParam):
        ad_id, clicks = ad_and_clicks
        yield AdCount(ad_id, int(window.start.micros // 1000), clicks)


class _ToSlidingTopAds(beam.DoFn):
    def __init__(self, minutes: int):
        self._minutes = minutes

    def process(self, ranking, window=beam.DoFn.WindowParam):
        yield SlidingTopAds(int(window.end.micros // 1000), self._minutes, ranking)


def _rank(n: int, minutes: int):
    def rank(end_and_tables):
        window_end, tables = end_and_tables
        totals = pa.concat_tables(tables).group_by("ad_id", use_threads=False).aggregate([("clicks", "sum")])
        best = totals.take(pc.sort_indices(totals, [("clicks_sum", "descending"), ("ad_id", "ascending")])[:n])
        yield SlidingTopAds(window_end, minutes, tuple(zip(best["ad_id"].to_pylist(), best["clicks_sum"].to_pylist())))
    return rank


class TopAdsSliding(beam.PTransform):
    """Per-minute AdCounts -> SlidingTopAds of the last `minutes` windows, one per window end.

    In a stream the sliding windows fire like the minute ones (early, on time,
    late); a replay ranks its Arrow tables of final counts.
    """

    def __init__(self, minutes: int, n: int, window_seconds: int, allowed_lateness_seconds: int,
                 early_firing_seconds: int, hot_key_fanout: int):
        super().__init__()
        self._minutes = minutes
        self._n = n
        self._window_seconds = window_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._early_firing_seconds = early_firing_seconds
        self._fanout = hot_key_fanout

    def expand(self, per_ad):
        minutes, period_ms = self._minutes, self._window_seconds * 1000
        if per_ad.is_bounded:
            def spread(table):
                if table.num_rows:
                    window_end = table["window_start"][0].as_py() + period_ms
                    counts = table.select(["ad_id", "clicks"])
                    for later in range(minutes):
                        yield window_end + later * period_ms, counts

            return (per_ad
                    | "SpreadOverWindows" >> beam.FlatMap(spread)
                    | "GatherWindows" >> beam.GroupByKey()
                    | "Rank" >> beam.FlatMap(_rank(self._n, minutes)))
        return (
            per_ad
            | "SlidingWindows" >> stream_windowing(
                SlidingWindows(minutes * self._window_seconds, self._window_seconds),
                self._allowed_lateness_seconds, self._early_firing_seconds)
            | "KeyByAd" >> beam.Map(lambda ad_count: (ad_count.ad_id, ad_count))
            | "ClicksOverMinutes" >> beam.CombinePerKey(ClicksOverMinutesFn()).with_hot_key_fanout(self._fanout)
            | "ToTotal" >> beam.ParDo(_ToTotal())
            | "TopN" >> beam.CombineGlobally(TopAdsFn(self._n)).without_defaults()
            | "ToSlidingTopAds" >> beam.ParDo(_ToSlidingTopAds(minutes)))
