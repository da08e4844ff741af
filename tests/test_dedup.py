import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, strategies as st

from tests.clicks import batch, click, clicks_of
from transforms.dedup import DedupByEventId, stable_hash


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
    whole = stable_hash(pa.array(strings))
    cut = min(cut, len(strings))
    chunked = stable_hash(pa.chunked_array([pa.array(strings[:cut], pa.string()), pa.array(strings[cut:], pa.string())]))
    sliced = stable_hash(pa.array(["padding"] + strings).slice(1))
    assert whole.tolist() == chunked.tolist() == sliced.tolist()
    by_value = {}
    for text, value in zip(strings, whole.tolist()):
        assert by_value.setdefault(text, value) == value


def test_the_hash_is_the_same_in_another_process():
    strings = [f"event-{i}" for i in range(100)] + ["é" * 30, ""]
    code = ("import sys, pyarrow as pa; from transforms.dedup import stable_hash; "
            f"print(stable_hash(pa.array({strings!r})).tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other.strip() == str(stable_hash(pa.array(strings)).tolist())


def test_shards_are_balanced_for_sequential_ids():
    counts = np.bincount((stable_hash(pa.array([f"click-{i:09d}" for i in range(16_000)])) % np.uint64(16)).astype(int))
    assert counts.min() > 800 and counts.max() < 1200
