"""The most clicked ads over the last M minutes, ranked every minute (a sliding window).

Built from the per-minute counts, not the clicks: in a stream those arrive as
accumulating panes, so an ad's minute may come several times with a growing
count; the latest (largest) is its count for that minute, and the ad's total is
the sum over the M minutes. A replay has one final count per ad and minute.
"""

from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindows, SlidingWindows

from pipelines.config import WindowConfig
from transforms.packed import Spill, pack, unpacked
from transforms.records import AdCount, SlidingTopAds, rows
from transforms.windowing import stream_windowing

ENDS_PER_KEY = 60  # a replay ranks the window ends of an hour (of one-minute windows) together


class TopOverMinutesFn(beam.CombineFn):
    """AdCount panes of several minutes -> the N ads with most clicks over them, ties by ad_id.

    An ad's minute may come in several panes with a growing count: the latest
    (largest) is its count for that minute, and its total is the sum over the minutes.
    """

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return {}

    def add_input(self, by_ad, ad_counts):
        """`ad_counts`: an AdCount, or a table of them (a pane of the per-ad counts)."""
        for ad_count in rows(ad_counts, AdCount):
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


class _SpreadOverEnds(beam.DoFn):
    """A minute's per-ad counts -> (key of window ends, packed counts) for each key whose ends count
    the minute (one or two), or with `spill_dir` (key, the path of a file of them): the shuffle holds
    each minute once or twice, not once per window that counts it."""

    def __init__(self, minutes: int, period_ms: int, spill_dir: Optional[str]):
        self._minutes, self._period_ms, self._spill_dir = minutes, period_ms, spill_dir

    def start_bundle(self):
        self._spill = Spill(self._spill_dir, "minute-counts") if self._spill_dir else None

    def process(self, table: pa.Table):
        if not table.num_rows:
            return
        start = table["window_start"][0].as_py()
        ends = range(start + self._period_ms, start + (self._minutes + 1) * self._period_ms, self._period_ms)
        packed = pack(table.select(["window_start", "ad_id", "clicks"]))
        for key in sorted({end // (self._period_ms * ENDS_PER_KEY) for end in ends}):
            if self._spill is None:
                yield key, packed
            else:
                self._spill.add(key, packed)

    def finish_bundle(self):
        for key, path in self._spill.paths() if self._spill else ():
            yield GlobalWindows.windowed_value((key, path))


def _rank(n: int, minutes: int, period_ms: int):
    def rank(key_and_parts):
        key, parts = key_and_parts
        counts = pa.concat_tables(unpacked(parts))
        starts = counts["window_start"].to_numpy()
        first_end, span = key * period_ms * ENDS_PER_KEY, minutes * period_ms
        ends = {start + k * period_ms for start in np.unique(starts).tolist() for k in range(1, minutes + 1)}
        for window_end in sorted(end for end in ends if first_end <= end < first_end + period_ms * ENDS_PER_KEY):
            rows = counts.filter((starts >= window_end - span) & (starts < window_end))
            totals = rows.group_by("ad_id", use_threads=False).aggregate([("clicks", "sum")])
            best = totals.take(pc.sort_indices(totals, [("clicks_sum", "descending"), ("ad_id", "ascending")])[:n])
            ranking = tuple(zip(best["ad_id"].to_pylist(), best["clicks_sum"].to_pylist()))
            yield SlidingTopAds(window_end, minutes, ranking)
    return rank


class TopAdsSliding(beam.PTransform):
    """Per-minute AdCounts -> SlidingTopAds of the last `minutes` windows, one per window end.

    In a stream the sliding windows fire like the minute ones (early, on time,
    late), and one combine per window ranks its ads: a ranking needs every ad's
    total, and a combine per ad would put a key and its timers per ad in each of
    the M windows, which the DirectRunner scans between bundles (docs/streaming.md,
    Measured). A replay ranks its Arrow tables of final counts, an hour of window ends at a time,
    shuffled in files in `spill_dir` if given.
    """

    def __init__(self, minutes: int, n: int, window_seconds: int, allowed_lateness_seconds: int,
                 early_firing_seconds: int, spill_dir: Optional[str] = None,
                 late_firing_seconds: int = WindowConfig.late_firing_seconds):
        super().__init__()
        self._late_firing_seconds = late_firing_seconds
        self._spill_dir = spill_dir
        self._minutes = minutes
        self._n = n
        self._window_seconds = window_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._early_firing_seconds = early_firing_seconds

    def expand(self, per_ad):
        minutes, period_ms = self._minutes, self._window_seconds * 1000
        if per_ad.is_bounded:
            return (per_ad
                    | "SpreadOverWindows" >> beam.ParDo(_SpreadOverEnds(minutes, period_ms, self._spill_dir))
                    | "GatherWindows" >> beam.GroupByKey()
                    | "Rank" >> beam.FlatMap(_rank(self._n, minutes, period_ms)))
        return (
            per_ad
            | "SlidingWindows" >> stream_windowing(
                SlidingWindows(minutes * self._window_seconds, self._window_seconds),
                self._allowed_lateness_seconds, self._early_firing_seconds, self._late_firing_seconds)
            | "TopN" >> beam.CombineGlobally(TopOverMinutesFn(self._n)).without_defaults()
            | "ToSlidingTopAds" >> beam.ParDo(_ToSlidingTopAds(minutes)))
