"""Per-window aggregates: clicks per ad, per ad and filter, and the top N ads.

Clicks follow a Zipf law, so a few ads get most of them. In a stream one
combine counts each ad and its filters, keyed by `AD_SHARDS` shards of the ads and
combined per bundle before the shuffle (a hot ad costs no more than another), and
`hot_key_fanout` spreads a shard over partial counts before the final one. A replay counts Arrow
batches: each bundle of deduplicated clicks (every dedup shard, so a hot ad is
spread over all of them) is counted on its own, and the partial counts meet in
`MERGE_SHARDS` shards of minutes, where one step sums them and ranks each minute's ads.
A bundle sends its counts on whenever they reach `MAX_PARTIAL_ROWS`, packed (or, with
`spill_dir`, in files: transforms/packed.py), so that neither the step nor the shuffle holds
every minute's counts at once. The top N over the last M minutes (`sliding_top`) is ranked
from the per-ad counts.
"""

from typing import Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindows

from pipelines.config import WindowConfig
from transforms.packed import Spill, pack, partitioned, unpacked
from transforms.records import (
    AdCount,
    Aggregates,
    TopAds,
    event_id_hashes,
    filter_text_column,
    rows,
)
from transforms.sliding_top import TopAdsSliding

MIN_ROWS_TO_SUM = 1_000_000  # partial counts pile up to at least this many rows before they are summed
MAX_PARTIAL_ROWS = 2_000_000  # a bundle's running counts go on to the shuffle once they hold this many rows
MERGE_SHARDS = 64  # the shuffle's keys per kind of count: each merge holds 1/64 of the minutes' counts
AD_SHARDS = 16  # a stream's keys of the per-ad count (a stable hash of ad_id)


def counts_by_ad(clicks: pa.Table, dimension_sets: Sequence[Tuple[str, ...]]) -> dict:
    """A batch's clicks -> {ad_id: {None: clicks, filter text: clicks}}, what `_CountsByAdFn` adds up."""
    by_ad: dict = {}
    per_ad = clicks.group_by(["ad_id"], use_threads=False).aggregate([([], "count_all")])
    for ad_id, count in zip(per_ad["ad_id"].to_pylist(), per_ad["count_all"].to_pylist()):
        by_ad[ad_id] = {None: count}
    for dimensions in dimension_sets:
        counts = clicks.group_by(["ad_id", *dimensions], use_threads=False).aggregate([([], "count_all")])
        for ad_id, text, count in zip(counts["ad_id"].to_pylist(), filter_text_column(counts, dimensions).to_pylist(),
                                      counts["count_all"].to_pylist()):
            by_ad[ad_id][text] = count
    return by_ad


class _CountsByAdFn(beam.CombineFn):
    """{ad_id: {None: clicks, filter text: clicks}} of a shard's batches (`counts_by_ad`), added up."""

    def create_accumulator(self):
        return {}

    def add_input(self, by_ad, counts_of_batch):
        for ad_id, counts in counts_of_batch.items():
            into = by_ad.setdefault(ad_id, {})
            for text, clicks in counts.items():
                into[text] = into.get(text, 0) + clicks
        return by_ad

    def merge_accumulators(self, accumulators):
        merged = {}
        for by_ad in accumulators:
            self.add_input(merged, by_ad)
        return merged

    def extract_output(self, by_ad):
        return by_ad


class _AdRows(beam.DoFn):
    """A shard's counts of a window -> one table of its ads' AdCounts (main output) and one of their
    FilterCounts (`per_filter`), a replay's tables: a pane carries every ad of its shard and its
    filters (17,000 rows a second at 10,000 clicks/s, over 1,000 ads and 17 countries, with early
    panes every second), which as one element per row cost the runner more than the clicks did."""

    def process(self, shard_and_counts, window=beam.DoFn.WindowParam):
        _, by_ad = shard_and_counts
        window_start = int(window.start.micros // 1000)
        ads, clicks, filter_ads, filters, filter_clicks = [], [], [], [], []
        for ad_id, counts in by_ad.items():
            for text, count in counts.items():
                if text is None:
                    ads.append(ad_id)
                    clicks.append(count)
                else:
                    filter_ads.append(ad_id)
                    filters.append(text)
                    filter_clicks.append(count)
        yield _counts_table(window_start, {"ad_id": ads}, clicks)
        if filters:
            yield beam.pvalue.TaggedOutput(
                "per_filter", _counts_table(window_start, {"ad_id": filter_ads, "filter": filters}, filter_clicks))


def _counts_table(window_start: int, keys: dict, clicks: list) -> pa.Table:
    """A pane's counts of one window as a replay's table: ad_id, window_start, [filter], clicks."""
    columns = {"ad_id": pa.array(keys["ad_id"], pa.string()),
               "window_start": pa.array(np.full(len(clicks), window_start, dtype=np.int64))}
    if "filter" in keys:
        columns["filter"] = pa.array(keys["filter"], pa.string())
    return pa.table({**columns, "clicks": pa.array(clicks, pa.int64())})


class CountPerAd(beam.PTransform):
    """Windowed batches of clicks -> AdCount per (ad_id, window) and, tagged `per_filter`, FilterCount
    per (ad_id, window, filter) for each combination of dimensions.

    One combine counts both, so that each click meets one trigger and an ad's panes carry its
    filters' counts along. Its keys are `AD_SHARDS` shards of the ads, not the ads: a runner
    fires a key's panes as a bundle of their own (Prism does), so a pane per ad would cost a
    bundle per ad at every early firing. Each pane carries every ad of its shard. A batch's
    clicks are counted per shard before they meet the combine, and the runner combines each
    bundle's counts before its shuffle, which is also what keeps a hot ad cheap;
    `hot_key_fanout` spreads a hot shard further.
    """

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], hot_key_fanout: int):
        super().__init__()
        self._filter_dimensions = [tuple(dims) for dims in filter_dimensions]
        self._fanout = hot_key_fanout

    def expand(self, clicks):
        dimension_sets = self._filter_dimensions

        def shards_and_counts(clicks):
            shards = event_id_hashes(clicks["ad_id"]) % np.uint64(AD_SHARDS)
            for shard, rows_of_shard in partitioned(clicks, shards):
                yield shard, counts_by_ad(rows_of_shard, dimension_sets)

        return (
            clicks
            | "KeyByAdShard" >> beam.FlatMap(shards_and_counts)
            | "Count" >> beam.CombinePerKey(_CountsByAdFn()).with_hot_key_fanout(self._fanout)
            | "ToRows" >> beam.ParDo(_AdRows()).with_outputs("per_filter", main="per_ad"))


def _rank_key(ad_and_clicks):
    ad_id, clicks = ad_and_clicks
    return -clicks, ad_id


class TopAdsFn(beam.CombineFn):
    """The N ads with most clicks, ties by ad_id.

    Inputs are accumulating panes of per-ad counts (tables of them), so one ad can arrive more
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

    def add_input(self, best, ad_counts):
        """`ad_counts`: an AdCount, or a table of them (a pane of the per-ad counts)."""
        for ad_count in rows(ad_counts, AdCount):
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
    for indices in np.split(order, bounds):
        if len(indices):
            yield int(starts[indices[0]]), table.take(indices)


def window_shards(starts: np.ndarray, shards: int) -> np.ndarray:
    """Each window start's shard, spread by a multiplicative hash (starts are multiples of the window size)."""
    return (starts.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(32)) % np.uint64(shards)


def _summed(tables, keys) -> pa.Table:
    return pa.concat_tables(tables).group_by(keys, use_threads=False).aggregate([("count_all", "sum")]).rename_columns(
        keys + ["count_all"])


class _RunningCounts:
    """Counts of rows by `keys`, added up as batches come, so that memory stays about the
    size of the sums, however many batches there are."""

    def __init__(self, keys):
        self._keys = keys
        self._tables, self._summed_rows, self._pending_rows = [], 0, 0

    @property
    def rows(self) -> int:
        return self._summed_rows + self._pending_rows

    def add(self, rows: pa.Table):
        """Counts `rows`: the keys' columns, one row a click, or with count_all, counts to add."""
        if "count_all" not in rows.column_names:
            rows = rows.append_column("count_all", pa.array(np.ones(len(rows), np.int64)))
        self._tables.append(rows)
        self._pending_rows += len(rows)
        if self._pending_rows > max(self._summed_rows, MIN_ROWS_TO_SUM):
            self._sum()

    def total(self) -> Optional[pa.Table]:
        """The counts so far: `keys` + count_all, one row per key."""
        if self._pending_rows:
            self._sum()
        return self._tables[0] if self._tables else None

    def taken(self) -> Optional[pa.Table]:
        """The counts so far, which start again from none."""
        total, self._tables, self._summed_rows, self._pending_rows = self.total(), [], 0, 0
        return total

    def _sum(self):
        self._tables = [_summed(self._tables, self._keys)]
        self._summed_rows, self._pending_rows = len(self._tables[0]), 0


class _PartialCounts(beam.DoFn):
    """Batches of unique clicks -> partial counts per ad and per ad and filter, as
    ((kind, shard of windows), packed counts), or with `spill_dir` (kind, shard) and the path of
    a file of them.

    Counts add up over the bundle before the shuffle, as a lifted combiner's
    would: a replay's bundle holds every dedup shard, and per shard there is
    nearly one count per click (few clicks share an ad, filter and minute within
    a shard), so the shuffle carries about one partial count per key and bundle instead;
    at `MAX_PARTIAL_ROWS` they go on (a long replay's minutes would not fit).
    Clicks are counted by their dimensions' values, the filter text made only for
    the sums, and the per-ad counts are summed from one combination's counts (every
    click has exactly one filter text per combination).
    """

    def __init__(self, filter_dimensions, spill_dir: Optional[str] = None):
        self._filter_dimensions = [tuple(sorted(dims)) for dims in filter_dimensions] or [()]
        self._spill_dir = spill_dir

    def start_bundle(self):
        self._counts = [_RunningCounts(["window_start", "ad_id", *dims]) for dims in self._filter_dimensions]
        self._spill = Spill(self._spill_dir, "counts") if self._spill_dir else None

    def process(self, clicks: pa.Table):
        for dimensions, counts in zip(self._filter_dimensions, self._counts):
            counts.add(clicks.select(["window_start", "ad_id", *dimensions]))
        if sum(counts.rows for counts in self._counts) > MAX_PARTIAL_ROWS:
            yield from self._sent_on()

    def finish_bundle(self):
        for key_and_part in self._sent_on() + (self._spill.paths() if self._spill else []):
            yield GlobalWindows.windowed_value(key_and_part)

    def _sent_on(self) -> list:
        """The counts so far, packed by (kind, shard) to be shuffled, or written to the spill (then [])."""
        totals = [counts.taken() for counts in self._counts]
        if totals[0] is None:
            return []
        per_ad = _summed([totals[0].drop_columns(list(self._filter_dimensions[0]))], ["window_start", "ad_id"])
        parts = [("per_ad", per_ad)]
        parts += [("per_filter", _with_filter_text(counts, dimensions))
                  for dimensions, counts in zip(self._filter_dimensions, totals) if dimensions]
        sent = []
        for kind, counts in parts:
            for shard, part in partitioned(counts, window_shards(counts["window_start"].to_numpy(), MERGE_SHARDS)):
                key, packed = (kind, shard), pack(part)
                if self._spill is None:
                    sent.append((key, packed))
                else:
                    self._spill.add(key, packed)
        return sent


def _with_filter_text(counts: pa.Table, dimensions) -> pa.Table:
    """Counts by dimension values -> window_start, ad_id, filter (`filter_text_column`), count_all."""
    return pa.table({"window_start": counts["window_start"], "ad_id": counts["ad_id"],
                     "filter": filter_text_column(counts, dimensions), "count_all": counts["count_all"]})


class _MergeWindows(beam.DoFn):
    """All partial counts of one kind and shard of windows -> per window, its AdCount or FilterCount
    table, and with the AdCounts its TopAds."""

    def __init__(self, top_n: int):
        self._top_n = top_n

    def process(self, key_and_parts):
        (kind, _), parts = key_and_parts
        keys = ["window_start", "ad_id"] + (["filter"] if kind == "per_filter" else [])
        counts = _RunningCounts(keys)
        for part in unpacked(parts):
            counts.add(part)
        for window_start, summed in _by_window(counts.total()):
            columns = {"ad_id": summed["ad_id"], "window_start": summed["window_start"]}
            if kind == "per_filter":
                columns["filter"] = summed["filter"]
            rows = pa.table({**columns, "clicks": summed["count_all"]})
            yield beam.pvalue.TaggedOutput(kind, rows)
            if kind == "per_ad":
                order = pc.sort_indices(rows, [("clicks", "descending"), ("ad_id", "ascending")])
                best = rows.take(order[:self._top_n])
                ranking = tuple(zip(best["ad_id"].to_pylist(), best["clicks"].to_pylist()))
                yield beam.pvalue.TaggedOutput("top_ads", TopAds(window_start, ranking))


class _CountBatches(beam.PTransform):
    """Bounded input: batches of unique clicks with window_start -> per_ad and per_filter tables, top_ads rows."""

    def __init__(self, filter_dimensions, top_n: int, spill_dir: Optional[str]):
        super().__init__()
        self._filter_dimensions = filter_dimensions
        self._top_n = top_n
        self._spill_dir = spill_dir

    def expand(self, clicks):
        outputs = (
            clicks
            | "PartialCounts" >> beam.ParDo(_PartialCounts(self._filter_dimensions, self._spill_dir))
            | "GatherWindows" >> beam.GroupByKey()
            | "MergeWindows" >> beam.ParDo(_MergeWindows(self._top_n)).with_outputs("per_ad", "per_filter", "top_ads"))
        return Aggregates(outputs.per_ad, outputs.per_filter, outputs.top_ads)


class AggregateClicks(beam.PTransform):
    """Windowed clicks -> `Aggregates` (transforms/records.py), what every sink takes: per ad, per ad
    and filter, the top N per window and, with `sliding_minutes`, the top N over the last M minutes
    every minute (`window` is the minute windows' settings, which its sliding windows follow). With
    `spill_dir` (a local replay's choice), a replay's shuffles of counts wait in files there."""

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], top_n: int, hot_key_fanout: int,
                 sliding_minutes: int = 0, window: Optional[WindowConfig] = None, spill_dir: Optional[str] = None):
        super().__init__()
        self._spill_dir = spill_dir
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
            window.early_firing_seconds, self._spill_dir, window.late_firing_seconds)
        return aggregates._replace(top_ads_sliding=sliding)

    def _counted(self, clicks) -> Aggregates:
        if clicks.is_bounded:
            return clicks | "CountBatches" >> _CountBatches(self._filter_dimensions, self._top_n, self._spill_dir)
        counts = clicks | "PerAd" >> CountPerAd(self._filter_dimensions, self._fanout)
        return Aggregates(counts.per_ad, counts.per_filter, counts.per_ad | "TopAds" >> TopAdsPerWindow(self._top_n))
