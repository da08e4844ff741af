"""Stream dedup against Beam's DeduplicatePerKey on the same TestStreams.

Each scenario's expected ids are worked out by hand from the TTL rule: a copy
counts again once the watermark has passed the first copy's event time plus
the TTL (with buckets: the end of the first copy's bucket plus the TTL).
"""

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.runners.direct import watermark_manager
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration
from hypothesis import given, strategies as st

from runners.summary import counters
from tests.clicks import click
from tests.stream_cases import ClickRows, at, stream_batches, streaming_options
from transforms.dedup import DedupByEventId, ids_blob, ids_of_blob

TTL = 120


def copies(*ids_and_seconds):
    """A bundle of clicks (event_id, second), as the stream's batches of one window each."""
    return stream_batches([click(event_id, second=second) for event_id, second in ids_and_seconds])


def event_ids(batches):
    return batches | "EventIds" >> beam.FlatMap(lambda table: table["event_id"].to_pylist())


def run(stream, bucket_seconds, expected_ours, expected_beam):
    """Checks the ids that count by our dedup and by DeduplicatePerKey; returns our counters."""
    pipeline = beam.Pipeline(options=streaming_options())
    batches = pipeline | stream
    ours = batches | "Ours" >> DedupByEventId(TTL, bucket_seconds=bucket_seconds, shards_per_bucket=4)
    beams = (batches
             | ClickRows()
             | beam.Map(lambda c: (c.event_id, c))
             | DeduplicatePerKey(event_time_duration=Duration(seconds=TTL)))
    assert_that(event_ids(ours), equal_to(expected_ours), label="Ours")
    assert_that(beams | "BeamIds" >> beam.Map(lambda kv: kv[0]), equal_to(expected_beam), label="Beam")
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result)


def across_bundles_windows_and_the_ttl():
    return (TestStream()
            .advance_watermark_to(at(0))
            .add_elements(copies(("e1", 5), ("e2", 10), ("e1", 5)))   # a resend in the same bundle
            .advance_watermark_to(at(61))                                      # minute 0 is over
            .add_elements(copies(("e1", 5), ("e3", 70)))                     # a resend in a later bundle and window
            .add_elements(copies(("e3", 70), ("e4", 65)))
            .advance_watermark_to(at(250))                                     # every TTL above has passed
            .add_elements(copies(("e1", 5), ("e3", 70), ("e5", 200)))   # e1, e3 count again
            .advance_watermark_to(at(300))
            .add_elements(copies(("e5", 200), ("e2", 10)))                   # e5 within its TTL; e2 counts again
            .advance_watermark_to_infinity())


@pytest.mark.usefixtures("beam_fixes")
def test_same_as_deduplicate_per_key_across_bundles_windows_and_expiry():
    expected = ["e1", "e1", "e2", "e2", "e3", "e3", "e4", "e5"]
    for bucket_seconds in (0.001, 60):
        totals = run(across_bundles_windows_and_the_ttl(), bucket_seconds, expected, expected)
        assert (totals["unique"], totals["duplicates"]) == (8, 4)


def test_with_one_ms_buckets_the_expiry_is_deduplicate_per_keys_to_the_millisecond():
    """e3 at 70 s: DeduplicatePerKey forgets it at 190 s. With 60 s buckets it is remembered until
    its bucket's end plus the TTL (240 s): a resend in between is dropped, as documented."""
    def stream():
        return (TestStream()
                .advance_watermark_to(at(0))
                .add_elements(copies(("e3", 70)))
                .advance_watermark_to(at(190))
                .add_elements(copies(("e3", 70)))
                .advance_watermark_to_infinity())

    run(stream(), 0.001, ["e3", "e3"], ["e3", "e3"])
    run(stream(), 60, ["e3"], ["e3", "e3"])


@pytest.mark.usefixtures("beam_fixes")
def test_the_per_key_variant_for_benchmarks_counts_like_ours():
    pipeline = beam.Pipeline(options=streaming_options())
    ids = (pipeline | across_bundles_windows_and_the_ttl()
           | DedupByEventId(TTL, per_key=True) | beam.FlatMap(lambda table: table["event_id"].to_pylist()))
    assert_that(ids, equal_to(["e1", "e1", "e2", "e2", "e3", "e3", "e4", "e5"]))
    result = pipeline.run()
    result.wait_until_finish()
    totals = counters(result)
    assert (totals["unique"], totals["duplicates"]) == (8, 4)


@pytest.mark.usefixtures("beam_fixes")
def test_the_runner_forgets_dedup_keys_whose_state_and_timers_are_gone(monkeypatch):
    """The DirectRunner keeps an entry per key a stateful step ever saw and scans them all between
    bundles; `beam_compat` drops the empty ones, so a long local stream does not scan ever more
    forgotten buckets. Here 40 one-second buckets × 4 shards expire along the stream."""
    scanned = []
    original = watermark_manager._TransformWatermarks.__init__

    def remember(self, clock, keyed_states, transform):
        original(self, clock, keyed_states, transform)
        if "FirstCopyInBucket" in str(transform):
            scanned.append(keyed_states)

    monkeypatch.setattr(watermark_manager._TransformWatermarks, "__init__", remember)
    stream = TestStream().advance_watermark_to(at(0))
    for second in range(0, 200, 5):
        stream.add_elements(copies(*[(f"e{second}-{n}", second) for n in range(8)]))
        stream.advance_watermark_to(at(second + TTL + 5))  # every earlier bucket's TTL has passed
    stream.advance_watermark_to_infinity()
    pipeline = beam.Pipeline(options=streaming_options())
    unique = pipeline | stream | DedupByEventId(TTL, bucket_seconds=1, shards_per_bucket=4)
    assert_that(event_ids(unique),
                equal_to([f"e{second}-{n}" for second in range(0, 200, 5) for n in range(8)]))
    pipeline.run().wait_until_finish()
    assert len(scanned) == 1 and len(scanned[0]) <= 4, f"{len(scanned[0])} keys left of up to 160"


@given(st.lists(st.text(), max_size=40), st.integers(0, 40), st.integers(0, 40))
def test_a_state_blob_gives_back_the_ids_of_any_slice(ids, start, length):
    """The dedup's state element: what a batch's new ids read back as, a slice of a larger array too
    (Arrow offsets that do not start at 0)."""
    part = pa.array(ids, pa.string()).slice(start, length)
    back = ids_of_blob(ids_blob(part))
    back.validate(full=True)
    assert back.to_pylist() == ids[start:start + length]
