"""A packed table comes back as it was, whatever its ids and strings."""

import random
import uuid

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from transforms.packed import pack, unpack

UUIDS = st.uuids().map(str)
IDS = UUIDS | UUIDS.map(str.upper) | st.text(max_size=40)


def table(ids, ads):
    return pa.table({"event_id": pa.array(ids, pa.string()), "click_ts": pa.array(range(len(ids)), pa.int64()),
                     "ad_id": pa.array(ads, pa.string()), "country": pa.array([None] * len(ids), pa.string())})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(IDS, st.sampled_from(["ad-1", "ad-2", ""]) | st.none()), max_size=30))
def test_a_table_survives_packing(rows):
    original = table([i for i, _ in rows], [a for _, a in rows])
    assert unpack(pack(original)).equals(original)


def test_uuids_travel_as_16_bytes():
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2_000)]
    as_text = table(ids + ["not-a-uuid"], ["ad-1"] * 2_001)
    as_uuids = table(ids + [str(uuid.UUID(int=0))], ["ad-1"] * 2_001)
    assert unpack(pack(as_uuids)).equals(as_uuids)
    assert len(pack(as_uuids)) < len(pack(as_text)) - 2_000 * 2  # hex text compresses to ~20 bytes, not 16
