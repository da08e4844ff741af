"""Hot keys: with 30% of all clicks on one ad, no step funnels that ad through one worker.

A replay counts each dedup shard of clicks on its own; shards follow a hash of
event_id, so the hot ad is spread over all of them, and the merge of a minute
takes one partial count per shard, never the clicks. A stream's per-ad combine
fans each key out over `hot_key_fanout` sub-keys before the final combine.
Each test measures where the hot ad's clicks go and checks the counts against
plain Python over the generator's truth.
"""

import collections
import json
import sqlite3

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that

from loadgen.generator import GeneratorConfig, generate, write_log
from runners import replay
from tests.clicks import batch
from tests.stream_cases import stream_batches, streaming_options
from tests.stream_truth import clicks_per_minute, sink_clicks_per_minute
from transforms.aggregates import AD_SHARDS, AggregateClicks
from transforms.dedup import DedupByEventId
from transforms.records import AdCount, Click, FilterCount, event_id_hashes, rows
from transforms.windowing import WindowClicks

HOT = GeneratorConfig(events=20_000, seed=5, ads=1_000, minutes=4, hot_ad_share=0.3)
SHARDS = 16
SLACK = 0.02  # a shard may carry up to 1/SHARDS + SLACK of the hot ad's clicks
FANOUT = 4
FILTERS = (("country",),)
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def hot_log():
    return generate(HOT)


def hot_ad(truth) -> str:
    return collections.Counter(event["ad_id"] for event in truth).most_common(1)[0][0]


def per_filter(truth) -> dict:
    return dict(collections.Counter(
        (e["ad_id"], e["click_ts"] - e["click_ts"] % MINUTE_MS, f"country={e['country'] or 'unknown'}")
        for e in truth))


def as_clicks(truth):
    return [Click(**event) for event in truth]


def applied_transforms(pipeline):
    """Every AppliedPTransform of the pipeline's graph, composites and leaves."""
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            found.append(node)

        def visit_transform(self, node):
            found.append(node)

    pipeline.visit(Visitor())
    return found


def final_counts(count_rows) -> dict:
    """Panes accumulate, so the largest count of a key is its final one."""
    final = {}
    for row in count_rows:
        key = row[:-1]
        final[key] = max(final.get(key, 0), row.clicks)
    return final


def final_counts_equal(expected, what):
    def match(count_rows):
        final = final_counts(count_rows)
        differing = {key for key in final.keys() | expected.keys() if final.get(key) != expected.get(key)}
        assert not differing, f"{what}: {len(differing)} keys differ, e.g. {sorted(differing)[:3]}"
    return match


def at_most(bound, what):
    def match(values):
        assert values and max(values) <= bound, f"{what}: {max(values, default=None)} > {bound}"
    return match


def test_the_log_puts_30_percent_of_clicks_on_one_ad(hot_log):
    clicks = collections.Counter(event["ad_id"] for event in hot_log.truth)
    (_, top), (_, second) = clicks.most_common(2)
    assert abs(top / hot_log.unique - 0.3) < 0.01
    assert top > 2 * second


@pytest.mark.slow
def test_a_replay_of_a_hot_log_counts_like_plain_python(tmp_path):
    out = tmp_path / "log"
    manifest = write_log(HOT, out, "jsonl", files=2)
    db = tmp_path / "hot.db"
    summary = replay.run(["--input", str(out / "clicks-*"), "--sink", f"sqlite:///{db}", "--top-n", "3",
                          "--dead-letter", str(tmp_path / "dead.jsonl"), "--summary", str(tmp_path / "summary.json")])
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert sink_clicks_per_minute(db) == clicks_per_minute(truth)
    assert summary["unique"] == manifest["unique"] == len(truth)
    with sqlite3.connect(db) as connection:
        by_filter = {(ad, start, text): n for ad, start, text, n in
                     connection.execute("SELECT ad_id, window_start, filter, clicks FROM clicks_per_minute_by_filter")}
        firsts = {ad for (ad,) in connection.execute("SELECT ad_id FROM top_ads WHERE rank = 1")}
    assert by_filter == per_filter(truth)
    assert firsts == {hot_ad(truth)}


def test_a_replay_spreads_the_hot_ad_over_every_shard_and_merges_partial_counts(hot_log):
    """Measured inside the DAG: the hot ad's rows in each shard the partial counts run on, and
    how many values any key of a shuffle inside the aggregate receives."""
    truth = hot_log.truth
    hot = hot_ad(truth)
    hot_clicks = sum(event["ad_id"] == hot for event in truth)
    resends = truth[::20]
    batches = [batch(as_clicks(truth[k::4] + resends[k::4])) for k in range(4)]

    pipeline = TestPipeline()
    shards = (pipeline | beam.Create(batches) | DedupByEventId(shards=SHARDS)
              | WindowClicks(60, 600, 10))
    aggregates = shards | "Aggregate" >> AggregateClicks(FILTERS, 10, FANOUT)
    shuffles = [node for node in applied_transforms(pipeline)
                if node.full_label.startswith("Aggregate/") and isinstance(node.transform, beam.GroupByKey)]
    assert shuffles, "a replay's aggregate merges its shards somewhere"

    def check_shards(hot_rows):
        carrying = [n for n in hot_rows if n]
        assert sum(carrying) == hot_clicks
        assert len(carrying) >= SHARDS
        assert max(carrying) <= (1 / SHARDS + SLACK) * hot_clicks, sorted(carrying)

    hot_rows = shards | "HotRowsPerShard" >> beam.Map(lambda table: table["ad_id"].to_pylist().count(hot))
    assert_that(hot_rows, check_shards, label="HotAdPerShard")

    # The merge gets at most one partial count per shard, minute and aggregate (a bundle sums its
    # shards' counts first), whatever the clicks.
    most_values = SHARDS * (1 + len(FILTERS))
    hot_per_minute = {start: n for (ad, start), n in clicks_per_minute(truth).items() if ad == hot}
    assert len(hot_per_minute) == HOT.minutes and most_values < min(hot_per_minute.values()) / 10
    for k, shuffle in enumerate(shuffles):
        values_per_key = (shuffle.inputs[0] | f"ValuesPerKey{k}" >> beam.combiners.Count.PerKey()
                          | f"Values{k}" >> beam.Values())
        assert_that(values_per_key, at_most(most_values, shuffle.full_label), label=f"AtMostPartials{k}")

    per_ad = aggregates.per_ad | "AdRows" >> beam.FlatMap(rows, AdCount)
    by_filter = aggregates.per_filter | "FilterRows" >> beam.FlatMap(rows, FilterCount)
    assert_that(per_ad, final_counts_equal(clicks_per_minute(truth), "per ad"), label="PerAd")
    assert_that(by_filter, final_counts_equal(per_filter(truth), "per filter"), label="PerFilter")
    pipeline.run()


def ad_shards(ad_ids) -> list:
    return (event_id_hashes(pa.array(ad_ids)) % np.uint64(AD_SHARDS)).tolist()


def test_a_stream_fans_the_hot_ad_out_before_its_final_combine(hot_log):
    """The per-ad combine (keyed by shards of the ads) sits behind Beam's hot-key fanout: the hot
    ad's shard reaches the pre-combine under several (nonce, shard) sub-keys, one per bundle's choice."""
    truth = sorted(hot_log.truth[:3_000], key=lambda event: event["click_ts"])
    hot = hot_ad(truth)
    stream = TestStream()
    for start in range(0, len(truth), 100):  # a bundle each: each picks its own sub-key
        stream.add_elements(stream_batches(as_clicks(truth[start:start + 100])))
    stream.advance_watermark_to_infinity()

    pipeline = TestPipeline(options=streaming_options())
    clicks = pipeline | stream | WindowClicks(60, 600, 10)  # batches of one window, as after StampEventTime
    aggregates = clicks | "Aggregate" >> AggregateClicks(FILTERS, 10, FANOUT)
    splits = [node for node in applied_transforms(pipeline)
              if node.full_label.startswith("Aggregate/PerAd/") and "SplitHotCold" in node.full_label
              and not node.parts]
    assert len(splits) == 1, "the per-ad combine has one hot-key fanout"

    def check_sub_keys(sub_keys_and_clicks):
        per_sub_key = collections.Counter()
        for sub_key, clicks in sub_keys_and_clicks:
            per_sub_key[sub_key] += clicks
        assert sum(per_sub_key.values()) == sum(shard == hot_shard for shard in ad_shards([e["ad_id"] for e in truth]))
        assert 2 <= len(per_sub_key) <= FANOUT, per_sub_key

    [hot_shard] = ad_shards([hot])
    hot_sub_keys = (splits[0].outputs["hot"]
                    | "HotShard" >> beam.Filter(lambda element: element[0][1] == hot_shard)
                    | "SubKey" >> beam.Map(  # a batch's counts per ad of the shard: {ad_id: {None: clicks, ...}}
                        lambda element: (element[0][0], sum(counts[None] for counts in element[1].values()))))
    assert_that(hot_sub_keys, check_sub_keys, label="FannedOut")

    per_ad = aggregates.per_ad | "AdRows" >> beam.FlatMap(rows, AdCount)
    by_filter = aggregates.per_filter | "FilterRows" >> beam.FlatMap(rows, FilterCount)
    assert_that(per_ad, final_counts_equal(clicks_per_minute(truth), "per ad"), label="PerAd")
    assert_that(by_filter, final_counts_equal(per_filter(truth), "per filter"), label="PerFilter")
    pipeline.run()
