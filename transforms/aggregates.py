"""Per-window aggregates: clicks per ad, per ad and filter, and the top N ads.

Clicks follow a Zipf law, so a few ads get most of them: the per-key combines
spread each key over `hot_key_fanout` partial sums before the final one.
"""

from typing import Sequence, Tuple

import apache_beam as beam

from transforms.records import AdCount, FilterCount, TopAds

UNKNOWN = "unknown"
FILTER_DIMENSIONS = ("country", "ip", "user_id")


def filter_values(click, dimensions: Sequence[str]) -> str:
    """The filter text of a click for a combination of dimensions, e.g. `country=US`."""
    return ",".join(f"{name}={getattr(click, name) or UNKNOWN}" for name in sorted(dimensions))


class _WithWindowStart(beam.DoFn):
    """Turns a (key, clicks) of a window into its aggregate row."""

    def __init__(self, make_row):
        self._make_row = make_row

    def process(self, key_and_clicks, window=beam.DoFn.WindowParam):
        key, clicks = key_and_clicks
        yield self._make_row(key, int(window.start.micros // 1000), clicks)


def _ad_count(ad_id, window_start, clicks):
    return AdCount(ad_id, window_start, clicks)


def _filter_count(key, window_start, clicks):
    ad_id, filter_text = key
    return FilterCount(ad_id, window_start, filter_text, clicks)


class CountPerAd(beam.PTransform):
    """Windowed clicks -> AdCount per (ad_id, window)."""

    def __init__(self, hot_key_fanout: int):
        super().__init__()
        self._fanout = hot_key_fanout

    def expand(self, clicks):
        return (
            clicks
            | "KeyByAd" >> beam.Map(lambda click: (click.ad_id, 1))
            | "Sum" >> beam.CombinePerKey(sum).with_hot_key_fanout(self._fanout)
            | "ToAdCount" >> beam.ParDo(_WithWindowStart(_ad_count)))


class CountPerAdAndFilter(beam.PTransform):
    """Windowed clicks -> FilterCount per (ad_id, window, filter) for each dimension combination."""

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], hot_key_fanout: int):
        super().__init__()
        self._filter_dimensions = [tuple(dims) for dims in filter_dimensions]
        self._fanout = hot_key_fanout

    def expand(self, clicks):
        dimension_sets = self._filter_dimensions

        def keys(click):
            for dimensions in dimension_sets:
                yield (click.ad_id, filter_values(click, dimensions)), 1

        return (
            clicks
            | "KeyByAdAndFilter" >> beam.FlatMap(keys)
            | "Sum" >> beam.CombinePerKey(sum).with_hot_key_fanout(self._fanout)
            | "ToFilterCount" >> beam.ParDo(_WithWindowStart(_filter_count)))


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


class AggregateClicks(beam.PTransform):
    """Windowed clicks -> {"per_ad", "per_filter", "top_ads"} PCollections, what every sink takes."""

    def __init__(self, filter_dimensions: Sequence[Tuple[str, ...]], top_n: int, hot_key_fanout: int):
        super().__init__()
        self._filter_dimensions = filter_dimensions
        self._top_n = top_n
        self._fanout = hot_key_fanout

    def expand(self, clicks):
        per_ad = clicks | "PerAd" >> CountPerAd(self._fanout)
        return {
            "per_ad": per_ad,
            "per_filter": clicks | "PerAdAndFilter" >> CountPerAdAndFilter(self._filter_dimensions, self._fanout),
            "top_ads": per_ad | "TopAds" >> TopAdsPerWindow(self._top_n),
        }
