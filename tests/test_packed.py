"""A packed table comes back as it was, and smaller than pickled."""

import pickle
import random
import uuid

import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from transforms.packed import COMPRESSED_FROM_ROWS, pack, partitioned, unpack


def table(ids, ads):
    return pa.table({"event_id": pa.array(ids, pa.string()), "click_ts": pa.array(range(len(ids)), pa.int64()),
                     "ad_id": pa.array(ads, pa.string()), "receive_ts": pa.array([None] * len(ids), pa.int64())})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.sampled_from(["ad-1", "ad-2", ""]) | st.none()), max_size=30))
def test_a_table_survives_packing(rows):
    original = table([i for i, _ in rows], [a for _, a in rows])
    assert unpack(pack(original)).equals(original)


def test_packed_clicks_are_smaller_than_pickled():
    rng = random.Random(7)
    rows = COMPRESSED_FROM_ROWS  # smaller tables go uncompressed: LZ4's cost per table outweighs its gain
    clicks = table([str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(rows)],
                   [f"ad-{rng.randrange(1000):06d}" for _ in range(rows)])
    packed = pack(clicks)
    assert len(packed) < 0.85 * len(pickle.dumps(clicks))
    assert unpack(packed).equals(clicks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300) | st.integers(-2**40, 2**40), max_size=60), st.sampled_from(["int64", "uint64"]))
def test_partitioned_gives_each_keys_rows_in_order(keys, dtype):
    if dtype == "uint64":
        keys = [abs(key) for key in keys]
    original = pa.table({"row": pa.array(range(len(keys)), pa.int64())})
    parts = list(partitioned(original, np.array(keys, dtype=dtype)))
    expected = {key: [row for row, k in enumerate(keys) if k == key] for key in sorted(set(keys))}
    assert [key for key, _ in parts] == list(expected)
    assert {key: rows["row"].to_pylist() for key, rows in parts} == expected
    assert all(type(key) is int for key, _ in parts)
