"""The most clicked ads over the last M minutes, ranked every minute (a sliding window).

Built from the per-minute counts, not the clicks: in a stream those arrive as
accumulating panes, so an ad's minute may come several times with a growing
count; the latest (largest) is its count for that minute, and the ad's total is
the sum over the M minutes. A replay has one final count per ad and minute.
"""

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import SlidingWindows

from transforms.records import SlidingTopAds
from transforms.windowing import stream_windowing


class TopOverMinutesFn(beam.CombineFn):
    """AdCount panes of several minutes -> the N ads with most clicks over them, ties by ad_id.

    An ad's minute may come in several panes with a growing count: the latest
    (largest) is its count for that minute, and its total is the sum over the minutes.
    """

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return {}

    def add_input(self, by_ad, ad_count):
        by_minute = by_ad.setdefault(ad_count.ad_id, {})
        if ad_count.clicks > by_minute.get(ad_count.window_start, 0):
            by_minute[ad_count.window_start] = ad_count.clicks
        return by_ad

    def merge_accumulators(self, accumulators):
        merged = {}
        for by_ad in accumulators:
            for ad_id, by_minute in by_ad.items():
                into = merged.setdefault(ad_id, {})
                for minute, clicks in by_minute.items():
                    if clicks > into.get(minute, 0):
                        into[minute] = clicks
        return merged

    def extract_output(self, by_ad):
        totals = ((ad_id, sum(by_minute.values())) for ad_id, by_minute in by_ad.items())
        return tuple(sorted(totals, key=lambda total: (-total[1], total[0]))[:self._n])


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
    late), and one combine per window ranks its ads: a ranking needs every ad's
    total, and a combine per ad would put a key and its timers per ad in each of
    the M windows, which the DirectRunner scans between bundles (docs/streaming.md,
    Measured). A replay ranks its Arrow tables of final counts.
    """

    def __init__(self, minutes: int, n: int, window_seconds: int, allowed_lateness_seconds: int,
                 early_firing_seconds: int):
        super().__init__()
        self._minutes = minutes
        self._n = n
        self._window_seconds = window_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._early_firing_seconds = early_firing_seconds

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
            | "TopN" >> beam.CombineGlobally(TopOverMinutesFn(self._n)).without_defaults()
            | "ToSlidingTopAds" >> beam.ParDo(_ToSlidingTopAds(minutes)))
