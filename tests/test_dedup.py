import subprocess
import sys
import tempfile

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings, strategies as st

from tests.clicks import batch, click, clicks_of
from transforms.dedup import DedupByEventId
from transforms.records import event_id_hashes


def counter(result, name):
    query = result.metrics().query(MetricsFilter().with_namespace("adclick").with_name(name))
    return sum(c.committed for c in query["counters"])


def test_a_replay_counts_each_event_id_once_across_batches_and_counts_resends():
    first = [click("e1"), click("e2", second=5), click("e1")]
    second = [click("e3", second=70), click("e1"), click("e3", second=70)]
    pipeline = TestPipeline()
    unique = (pipeline | beam.Create([batch(first), batch(second)]) | DedupByEventId(shards=4)
              | beam.FlatMap(clicks_of))
    assert_that(unique, equal_to([click("e1"), click("e2", second=5), click("e3", second=70)]))
    result = pipeline.run()
    result.wait_until_finish()
    assert counter(result, "unique") == 3
    assert counter(result, "duplicates") == 3


def test_the_earliest_copy_counts_when_copies_differ():
    copies = [click("e1", ad_id="ad-late", second=30), click("e1", ad_id="ad-early", second=10),
              click("e2", ad_id="ad-b", second=1, receive_ts=9), click("e2", ad_id="ad-a", second=1, receive_ts=5)]
    pipeline = TestPipeline()
    unique = (pipeline | beam.Create([batch(copies[:2]), batch(copies[2:])]) | DedupByEventId(shards=3)
              | beam.FlatMap(clicks_of))
    assert_that(unique, equal_to([copies[1], copies[3]]))
    pipeline.run()


@given(st.lists(st.text(max_size=40), min_size=1, max_size=50), st.integers(0, 49))
def test_equal_strings_hash_equal_however_the_array_is_cut(strings, cut):
    whole = event_id_hashes(pa.array(strings))
    cut = min(cut, len(strings))
    chunked = event_id_hashes(
        pa.chunked_array([pa.array(strings[:cut], pa.string()), pa.array(strings[cut:], pa.string())]))
    sliced = event_id_hashes(pa.array(["padding"] + strings).slice(1))
    assert whole.tolist() == chunked.tolist() == sliced.tolist()
    by_value = {}
    for text, value in zip(strings, whole.tolist()):
        assert by_value.setdefault(text, value) == value


def test_the_hash_is_the_same_in_another_process():
    strings = [f"event-{i}" for i in range(100)] + ["é" * 30, ""]
    code = ("import sys, pyarrow as pa; from transforms.records import event_id_hashes; "
            f"print(event_id_hashes(pa.array({strings!r})).tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str(event_id_hashes(pa.array(strings)).tolist())


def test_shards_are_balanced_for_sequential_ids():
    hashes = event_id_hashes(pa.array([f"click-{i:09d}" for i in range(16_000)]))
    counts = np.bincount((hashes % np.uint64(16)).astype(int))
    assert counts.min() > 800 and counts.max() < 1200


COPIES = st.lists(st.builds(
    click, st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"]) | st.uuids().map(str),
    ad_id=st.sampled_from(["ad-1", "ad-2"]), second=st.integers(0, 3), country=st.sampled_from([None, "US", "FR"]),
    receive_ts=st.none() | st.integers(0, 3)), min_size=1, max_size=40)


def first_copies(clicks):
    """Plain Python: per event_id the copy with the earliest click_ts, then receive time (unknown first),
    then ad_id and country (unknown first)."""
    def order(c):
        return (c.click_ts, (c.receive_ts is not None, c.receive_ts or 0), c.ad_id,
                (c.country is not None, c.country or ""))
    best = {}
    for c in clicks:
        if c.event_id not in best or order(c) < order(best[c.event_id]):
            best[c.event_id] = c
    return list(best.values())


@settings(max_examples=20, deadline=None)
@given(COPIES, st.integers(1, 4), st.booleans())
def test_dedup_keeps_the_first_copy_of_each_event(clicks, batches, spill):
    with tempfile.TemporaryDirectory() as spill_dir:
        pipeline = TestPipeline()
        parts = [batch(clicks[i::batches]) for i in range(batches) if clicks[i::batches]]
        unique = (pipeline | beam.Create(parts) | DedupByEventId(shards=3, spill_dir=spill_dir if spill else None)
                  | beam.FlatMap(clicks_of))
        assert_that(unique, equal_to(first_copies(clicks)))
        pipeline.run().wait_until_finish()
