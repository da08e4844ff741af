"""A packed table comes back as it was, and smaller than pickled."""

import pickle
import random
import uuid

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from transforms.packed import pack, unpack


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
    clicks = table([str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5_000)],
                   [f"ad-{rng.randrange(1000):06d}" for _ in range(5_000)])
    assert len(pack(clicks)) < 0.85 * len(pickle.dumps(clicks))
