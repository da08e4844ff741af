"""A replay's counts shuffled through files (--spill-dir), sent on in pieces, still equal plain Python's.

A long replay's minutes do not fit in one step's memory: the partial counts go on to the shuffle
whenever they reach MAX_PARTIAL_ROWS and meet in shards of minutes, and the sliding top N ranks an
hour of window ends at a time; both shuffles wait in files. Lowered here, the bound is crossed many
times, and the log spans more than two hours of window ends.
"""

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from tests.clicks import T0, batch, click
from tests.replay_truth import read_truth
from tests.stream_truth import expected_tables, sink_tables
from transforms import aggregates, packed
from transforms.aggregates import AggregateClicks
from transforms.records import AdCount, FilterCount, rows
from transforms.windowing import WindowClicks

CONFIG = GeneratorConfig(events=12_000, seed=23, ads=40, minutes=150, duplicate_rate=0.08, malformed_rate=0.01)
TOP_N, SLIDING = 5, 3


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("long-log")
    write_log(CONFIG, out, "jsonl", files=2)
    return out


def test_a_long_replay_sends_its_counts_through_files_and_counts_exactly(log, tmp_path, monkeypatch):
    monkeypatch.setattr(aggregates, "MAX_PARTIAL_ROWS", 500)
    created = []
    create = FileSystems.create
    monkeypatch.setattr(packed.FileSystems, "create",
                        lambda path, *a, **k: created.append(path) or create(path, *a, **k))
    spill, db = tmp_path / "spill", tmp_path / "sink.db"
    summary = replay.run(["--input", str(log / "clicks-*"), "--sink", f"sqlite:///{db}", "--top-n", str(TOP_N),
                          "--top-sliding-minutes", str(SLIDING), "--dead-letter", str(tmp_path / "dead.jsonl"),
                          "--spill-dir", str(spill)])
    assert summary["balanced"] and summary["unique"] == CONFIG.events
    assert sink_tables(db) == expected_tables(read_truth(log), TOP_N, SLIDING)
    names = [path.rsplit("/", 1)[-1] for path in created if path.startswith(str(spill))]
    # Every kind and shard of counts of the bundle has its file; the minutes' per-ad counts, one per hour of ends.
    assert sum(name.startswith("counts-") for name in names) > aggregates.MERGE_SHARDS
    assert sum(name.startswith("minute-counts-") for name in names) >= 3
    assert all(name.startswith(("clicks-", "counts-", "minute-counts-")) for name in names)  # the dedup's: clicks-
    assert not list(spill.iterdir())


CLICKS = [click(f"e{i}", f"ad-{i % 7}", second=i * 13, country=("US", "FR", None)[i % 3]) for i in range(900)]


@pytest.mark.parametrize("spilled", [False, True])
def test_batches_over_hours_count_exactly_packed_or_spilled(spilled, tmp_path):
    """The same steps without a spill directory (a remote runner's shuffle) move packed bytes instead."""
    truth = [{"ad_id": c.ad_id, "click_ts": c.click_ts, "country": c.country} for c in CLICKS]
    expected = expected_tables(truth, TOP_N, SLIDING)
    pipeline = TestPipeline()
    windowed = (pipeline | beam.Create([batch(CLICKS[i::4]) for i in range(4)]) | WindowClicks(60, 600, 10))
    made = windowed | AggregateClicks((("country",),), TOP_N, 4, SLIDING, spill_dir=str(tmp_path) if spilled else None)
    assert_that(made.per_ad | "AdRows" >> beam.FlatMap(rows, AdCount) | "AdTuple" >> beam.Map(
        lambda r: (r.ad_id, r.window_start, r.clicks)), equal_to(expected["clicks_per_minute"]), label="PerAd")
    assert_that(made.per_filter | "FilterRows" >> beam.FlatMap(rows, FilterCount) | "FilterTuple" >> beam.Map(
        lambda r: (r.ad_id, r.window_start, r.filter, r.clicks)), equal_to(expected["clicks_per_minute_by_filter"]),
        label="PerFilter")
    assert_that(made.top_ads | "TopRows" >> beam.FlatMap(
        lambda t: [(t.window_start, rank, ad, n) for rank, (ad, n) in enumerate(t.ranking, 1)]),
        equal_to(expected["top_ads"]), label="Top")
    assert_that(made.top_ads_sliding | "SlidingRows" >> beam.FlatMap(
        lambda t: [(t.window_end, t.minutes, rank, ad, n) for rank, (ad, n) in enumerate(t.ranking, 1)]),
        equal_to(expected["top_ads_sliding"]), label="Sliding")
    pipeline.run().wait_until_finish()
    assert (CLICKS[-1].click_ts - T0) // 60_000 > 2 * aggregates.MERGE_SHARDS  # more minutes than shards, twice
