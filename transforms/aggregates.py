"""Per-window aggregates: clicks per ad, per ad and filter, and the top N ads.

Clicks follow a Zipf law, so a few ads get most of them. In a stream one
combine per ad counts the ad and its filters, and spreads each ad over
`hot_key_fanout` partial counts before the final one. A replay counts Arrow
batches: each bundle of deduplicated clicks (every dedup shard, so a hot ad is
spread over all of them) is counted on its own, and the partial counts meet per
minute, where one step sums them and ranks the minute's ads. The top N over the last M minutes
(`sliding_top`) is ranked from the per-ad counts.
"""

from typing import Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindows

from pipelines.config import WindowConfig
from transforms.records import AdCount, Aggregates, FilterCount, TopAds, click_filter_text, filter_text_column
from transforms.sliding_top import TopAdsSliding

MIN_ROWS_TO_SUM = 1_000_000  # partial counts pile up to at least this many rows before they are summed


class _CountsByFilterFn(beam.CombineFn):
    """One ad's clicks, each given as its filter texts -> {None: clicks, filter text: clicks, ...}."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, filter_texts):
        counts[None] = counts.get(None, 0) + 1
        for text in filter_texts:
            counts[text] = counts.get(text, 0) + 1
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for text, clicks in counts.items():
                merged[text] = merged.get(text, 0) + clicks
        return merged

    def extract_output(self, counts):
        return counts


class _AdRows(beam.DoFn):
    """An ad's counts of a window -> its AdCount (main output) and FilterCounts (`per_filter`)."""

    def process(self, ad_and_counts, window=beam.DoFn.WindowParam):
        ad_id, counts = ad_and_counts
        window_start = int(window.start.micros // 1000)
        for text, clicks in counts.items():
            if text is None:
                yield AdCount(ad_id, window_start, clicks)
            else:
                yield beam.pvalue.TaggedOutput("per_filter", FilterCount(ad_id, window_start, text, clicks))


class CountPerAd(beam.PTransform):
    """Windowed clicks -> AdCount per (ad_id, window) and, tagged `per_filter`, FilterCount per
    (ad_id, window, filter) for each combination of dimensions.

    One combine per ad counts both, so that each click meets one trigger and an ad's
    panes carry its filters' counts along; `hot_key_fanout` spreads a hot ad first.
    """

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], hot_key_fanout: int):
        super().__init__()
        self._filter_dimensions = [tuple(dims) for dims in filter_dimensions]
        self._fanout = hot_key_fanout

    def expand(self, clicks):
        dimension_sets = self._filter_dimensions

        def ad_and_filters(click):
            return click.ad_id, tuple(click_filter_text(click, dimensions) for dimensions in dimension_sets)

        return (
            clicks
            | "KeyByAd" >> beam.Map(ad_and_filters)
            | "Count" >> beam.CombinePerKey(_CountsByFilterFn()).with_hot_key_fanout(self._fanout)
            | "ToRows" >> beam.ParDo(_AdRows()).with_outputs("per_filter", main="per_ad"))


def _rank_key(ad_and_clicks):
    ad_id, clicks = ad_and_clicks
    return -clicks, ad_id


class TopAdsFn(beam.CombineFn):
    """The N ads with most clicks, ties by ad_id.

    Inputs are accumulating panes of per-ad counts, so one ad can arrive more
    than once with a growing count: the latest (largest) value wins. Keeping
    only the N best stays exact because a later pane always carries the ad's
    full count.
    """

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return {}

    def _trim(self, best):
        if len(best) <= 2 * self._n:
            return best
        return dict(sorted(best.items(), key=_rank_key)[:self._n])

    def add_input(self, best, ad_count):
        if ad_count.clicks > best.get(ad_count.ad_id, 0):
            best[ad_count.ad_id] = ad_count.clicks
        return self._trim(best)

    def merge_accumulators(self, accumulators):
        merged = {}
        for best in accumulators:
            for ad_id, clicks in best.items():
                if clicks > merged.get(ad_id, 0):
                    merged[ad_id] = clicks
        return self._trim(merged)

    def extract_output(self, best):
        return tuple(sorted(best.items(), key=_rank_key)[:self._n])


class _ToTopAds(beam.DoFn):
    def process(self, ranking, window=beam.DoFn.WindowParam):
        yield TopAds(int(window.start.micros // 1000), ranking)


class TopAdsPerWindow(beam.PTransform):
    """AdCount per window -> the window's TopAds."""

    def __init__(self, n: int):
        super().__init__()
        self._n = n

    def expand(self, ad_counts):
        return (
            ad_counts
            | "TopN" >> beam.CombineGlobally(TopAdsFn(self._n)).without_defaults()
            | "ToTopAds" >> beam.ParDo(_ToTopAds()))


def _by_window(table: pa.Table):
    """(window_start, the rows of that window) — taken, not sliced, so each pickles alone."""
    starts = table["window_start"].to_numpy()
    order = np.argsort(starts, kind="stable")
    bounds = np.flatnonzero(np.diff(starts[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows):
            yield int(starts[rows[0]]), table.take(rows)


def _summed(tables, keys) -> pa.Table:
    return pa.concat_tables(tables).group_by(keys, use_threads=False).aggregate([("count_all", "sum")]).rename_columns(
        keys + ["count_all"])


class _RunningCounts:
    """Counts of rows by `keys`, added up as batches come, so that memory stays about the
    size of the sums, however many batches there are."""

    def __init__(self, keys):
        self._keys = keys
        self._tables, self._summed_rows, self._pending_rows = [], 0, 0

    def add(self, rows: pa.Table):
        """Counts `rows` (the keys' columns, one row a click)."""
        self._tables.append(rows.append_column("count_all", pa.array(np.ones(len(rows), np.int64))))
        self._pending_rows += len(rows)
        if self._pending_rows > max(self._summed_rows, MIN_ROWS_TO_SUM):
            self._sum()

    def total(self) -> Optional[pa.Table]:
        """The counts so far: `keys` + count_all, one row per key."""
        if self._pending_rows:
            self._sum()
        return self._tables[0] if self._tables else None

    def _sum(self):
        self._tables = [_summed(self._tables, self._keys)]
        self._summed_rows, self._pending_rows = len(self._tables[0]), 0


class _PartialCounts(beam.DoFn):
    """Batches of unique clicks -> partial counts per ad and per ad and filter, keyed by window.

    Counts add up over the whole bundle before the shuffle, as a lifted combiner's
    would: a replay's bundle holds every dedup shard, and per shard there is
    nearly one count per click (few clicks share an ad, filter and minute within
    a shard), so the shuffle carries one partial count per key and bundle instead.
    Clicks are counted by their dimensions' values, the filter text made only for
    the sums, and the per-ad counts are summed from one combination's counts (every
    click has exactly one filter text per combination).
    """

    def __init__(self, filter_dimensions):
        self._filter_dimensions = [tuple(sorted(dims)) for dims in filter_dimensions] or [()]

    def start_bundle(self):
        self._counts = [_RunningCounts(["window_start", "ad_id", *dims]) for dims in self._filter_dimensions]

    def process(self, clicks: pa.Table):
        for dimensions, counts in zip(self._filter_dimensions, self._counts):
            counts.add(clicks.select(["window_start", "ad_id", *dimensions]))

    def finish_bundle(self):
        totals = [counts.total() for counts in self._counts]
        if totals[0] is None:
            return
        per_ad = _summed([totals[0].drop_columns(list(self._filter_dimensions[0]))], ["window_start", "ad_id"])
        parts = [("per_ad", per_ad)]
        parts += [("per_filter", _with_filter_text(counts, dimensions))
                  for dimensions, counts in zip(self._filter_dimensions, totals) if dimensions]
        for kind, counts in parts:
            for window_start, part in _by_window(counts):
                yield GlobalWindows.windowed_value((window_start, (kind, part)))


def _with_filter_text(counts: pa.Table, dimensions) -> pa.Table:
    """Counts by dimension values -> window_start, ad_id, filter (`click_filter_text`), count_all."""
    return pa.table({"window_start": counts["window_start"], "ad_id": counts["ad_id"],
                     "filter": filter_text_column(counts, dimensions), "count_all": counts["count_all"]})


class _MergeWindow(beam.DoFn):
    """All partial counts of one window -> its AdCount and FilterCount tables and its TopAds."""

    def __init__(self, top_n: int):
        self._top_n = top_n

    def process(self, window_and_parts):
        window_start, parts = window_and_parts
        per_ad = self._sum([part for kind, part in parts if kind == "per_ad"], ["ad_id"], window_start)
        yield beam.pvalue.TaggedOutput("per_ad", per_ad)
        filter_parts = [part for kind, part in parts if kind == "per_filter"]
        if filter_parts:
            yield beam.pvalue.TaggedOutput("per_filter", self._sum(filter_parts, ["ad_id", "filter"], window_start))
        best = per_ad.take(pc.sort_indices(per_ad, [("clicks", "descending"), ("ad_id", "ascending")])[:self._top_n])
        ranking = tuple(zip(best["ad_id"].to_pylist(), best["clicks"].to_pylist()))
        yield beam.pvalue.TaggedOutput("top_ads", TopAds(window_start, ranking))

    @staticmethod
    def _sum(parts, keys, window_start) -> pa.Table:
        summed = pa.concat_tables(parts).group_by(keys, use_threads=False).aggregate([("count_all", "sum")])
        columns = {"ad_id": summed["ad_id"], "window_start": pa.array(np.full(len(summed), window_start), pa.int64())}
        if "filter" in keys:
            columns["filter"] = summed["filter"]
        columns["clicks"] = summed["count_all_sum"]
        return pa.table(columns)


class _CountBatches(beam.PTransform):
    """Bounded input: batches of unique clicks with window_start -> per_ad and per_filter tables, top_ads rows."""

    def __init__(self, filter_dimensions, top_n: int):
        super().__init__()
        self._filter_dimensions = filter_dimensions
        self._top_n = top_n

    def expand(self, clicks):
        outputs = (
            clicks
            | "PartialCounts" >> beam.ParDo(_PartialCounts(self._filter_dimensions))
            | "GatherWindows" >> beam.GroupByKey()
            | "MergeWindows" >> beam.ParDo(_MergeWindow(self._top_n)).with_outputs("per_ad", "per_filter", "top_ads"))
        return Aggregates(outputs.per_ad, outputs.per_filter, outputs.top_ads)


class AggregateClicks(beam.PTransform):
    """Windowed clicks -> `Aggregates` (transforms/records.py), what every sink takes: per ad, per ad
    and filter, the top N per window and, with `sliding_minutes`, the top N over the last M minutes
    every minute (`window` is the minute windows' settings, which its sliding windows follow)."""

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], top_n: int, hot_key_fanout: int,
                 sliding_minutes: int = 0, window: Optional[WindowConfig] = None):
        super().__init__()
        self._filter_dimensions = filter_dimensions
        self._top_n = top_n
        self._fanout = hot_key_fanout
        self._sliding_minutes = sliding_minutes
        self._window = window or WindowConfig()

    def expand(self, clicks):
        aggregates = self._counted(clicks)
        if not self._sliding_minutes:
            return aggregates
        window = self._window
        sliding = aggregates.per_ad | "TopAdsSliding" >> TopAdsSliding(
            self._sliding_minutes, self._top_n, window.size_seconds, window.allowed_lateness_seconds,
            window.early_firing_seconds)
        return aggregates._replace(top_ads_sliding=sliding)

    def _counted(self, clicks) -> Aggregates:
        if clicks.is_bounded:
            return clicks | "CountBatches" >> _CountBatches(self._filter_dimensions, self._top_n)
        counts = clicks | "PerAd" >> CountPerAd(self._filter_dimensions, self._fanout)
        return Aggregates(counts.per_ad, counts.per_filter, counts.per_ad | "TopAds" >> TopAdsPerWindow(self._top_n))
