"""Count each event_id once: the first copy counts, the rest are duplicates.

A replay (bounded input) is exact over the whole input: Arrow batches of clicks
are split into shards by a stable hash of event_id, so every copy of an event
meets its twins in one shard, where a sort finds the first copy of each.

A stream (unbounded input) remembers the event_ids it has seen for `ttl_seconds`
of event time. State that scales: the ids of one event-time bucket
(`bucket_seconds` of click_ts) are spread over `shards_per_bucket` keys, each a
set of ids with one timer that forgets the whole set once the watermark passes
the bucket's end plus the TTL. Beam's DeduplicatePerKey keeps a state cell and a
timer per event_id instead, which costs a timer firing per click. A copy that
arrives after its bucket was forgotten counts again, as with DeduplicatePerKey;
in the DAG the TTL outlives the allowed lateness, so such a copy is too late
before it can be counted twice (docs/streaming.md).
"""

from typing import Any, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from pipelines.config import StreamConfig
from transforms.packed import Spill, pack, partitioned, unpacked
from transforms.records import event_id_hashes, event_id_shard

DEFAULT_SHARDS = 64  # a replay's shuffle: a shard of a 100M-click replay is 1.6M clicks, sorted in memory
# The copy that counts: the earliest click_ts, then the earliest ingestion; the rest only break ties.
FIRST_COPY_ORDER = [(name, "ascending", "at_start")
                    for name in ("event_id", "click_ts", "receive_ts", "ad_id", "country", "user_id", "ip")]


class ShardByEventId(beam.DoFn):
    """Splits a batch of clicks into (shard, packed batch) by event_id, keeping event_id and
    `columns` (all if None).

    With `spill_dir`, a bundle's packed batches are written instead to one file per
    shard there, and the shuffle moves (shard, path): a local runner holds a
    shuffle in memory, several copies of it at once when the next stage starts.
    A file is named when the bundle ends, so a retried bundle never mixes in.
    """

    def __init__(self, shards: int, columns: Optional[Sequence[str]], spill_dir: Optional[str]):
        self._shards = shards
        self._columns = columns
        self._spill_dir = spill_dir

    def start_bundle(self):
        self._spill = Spill(self._spill_dir, "clicks") if self._spill_dir else None

    def shard_of_rows(self, clicks: pa.Table) -> np.ndarray:
        """Each row's shard (the risk filter's shuffle shards by other columns)."""
        return event_id_hashes(clicks["event_id"]) % np.uint64(self._shards)

    def process(self, clicks: pa.Table):
        if self._columns is not None:
            clicks = clicks.select(["event_id"] + [name for name in self._columns if name != "event_id"])
        for shard, rows in partitioned(clicks, self.shard_of_rows(clicks)):
            packed = pack(rows)
            if self._spill is None:
                yield shard, packed
            else:
                self._spill.add(shard, packed)

    def finish_bundle(self):
        for shard, path in self._spill.paths() if self._spill else ():
            yield GlobalWindows.windowed_value((shard, path))


class _FirstCopies(beam.DoFn):
    """All copies of the events of one shard -> the first copy of each, counted."""

    def __init__(self):
        self.unique = Metrics.counter("adclick", "unique")
        self.duplicates = Metrics.counter("adclick", "duplicates")

    def process(self, shard_and_parts):
        _, parts = shard_and_parts
        clicks = pa.concat_tables(unpacked(parts)).combine_chunks()
        # Most events come once: only the rows of an event_id seen more than once are sorted.
        ids = pc.dictionary_encode(clicks["event_id"]).chunk(0).indices.to_numpy()
        repeated = np.bincount(ids)[ids] > 1
        copies = clicks.filter(repeated)
        order = pc.sort_indices(copies, sort_keys=[key for key in FIRST_COPY_ORDER if key[0] in copies.column_names])
        order = order.to_numpy()
        event_ids = copies["event_id"].take(order)
        first = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            first[1:] = pc.not_equal(event_ids[1:], event_ids[:-1]).to_numpy(zero_copy_only=False)
        unique = pa.concat_tables([clicks.filter(~repeated), copies.take(order[first])])
        self.unique.inc(len(unique))
        self.duplicates.inc(len(clicks) - len(unique))
        yield unique


class _FirstCopyInBucketFn(beam.DoFn):
    """Per (bucket, shard) key: the event_ids seen, forgotten together when the TTL has passed.

    The ids are a bag, appended to: Beam's Python `SetState` rebuilds and rewrites its whole set on
    half of its adds. A key's ids are read from the runner once a bundle and kept here as a set until
    the bundle ends: each state read is a round trip to the runner (Prism grants no cache tokens).
    The DoFn instance runs one bundle at a time and every change to the key's state within it goes
    through this copy too, so the copy is the state.
    """

    SEEN = BagStateSpec("seen", StrUtf8Coder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, bucket_ms: int, ttl_ms: int):
        self._bucket_ms = bucket_ms
        self._ttl_ms = ttl_ms

    def setup(self):
        self.unique = Metrics.counter("adclick", "unique")
        self.duplicates = Metrics.counter("adclick", "duplicates")

    def start_bundle(self):
        self._seen_in_bundle = {}

    def process(self, key_and_click, seen=beam.DoFn.StateParam(SEEN), forget=beam.DoFn.TimerParam(FORGET)):
        key, click = key_and_click
        bucket_start = key[0]
        known = self._seen_in_bundle.get(key)
        if known is None:
            known = self._seen_in_bundle[key] = set(seen.read())
        if click.event_id in known:
            self.duplicates.inc()
            return
        known.add(click.event_id)
        seen.add(click.event_id)
        # The bucket's last millisecond plus the TTL: with 1 ms buckets, exactly DeduplicatePerKey's expiry.
        forget.set(Timestamp(micros=(bucket_start + self._bucket_ms - 1 + self._ttl_ms) * 1_000))
        self.unique.inc()
        yield click

    @on_timer(FORGET)
    def forget_bucket(self, key=beam.DoFn.KeyParam, seen=beam.DoFn.StateParam(SEEN)):
        self._seen_in_bundle.pop(key, None)
        seen.clear()


class _BeamDeduplicatePerKey(beam.PTransform):
    """Beam's DeduplicatePerKey (a state cell and a timer per event_id), counted like ours: for
    comparison (`adclick bench-stream --dedup per-key`)."""

    def __init__(self, ttl_seconds: int):
        super().__init__()
        self._ttl_seconds = ttl_seconds

    def expand(self, clicks):
        from apache_beam.transforms.deduplicate import DeduplicatePerKey
        from apache_beam.utils.timestamp import Duration
        unique = Metrics.counter("adclick", "unique")
        duplicates = Metrics.counter("adclick", "duplicates")

        def copy_in(click):
            duplicates.inc()  # every copy, until it proves to be the first
            return click.event_id, click

        def first_out(event_id_and_click):
            duplicates.dec()
            unique.inc()
            return event_id_and_click[1]

        return (clicks
                | "KeyByEventId" >> beam.Map(copy_in)
                | "PerKey" >> DeduplicatePerKey(event_time_duration=Duration(seconds=self._ttl_seconds))
                | "FirstCopies" >> beam.Map(first_out))


class DedupByEventId(beam.PTransform):
    """Drops resent copies of a click.

    Bounded input (Arrow batches of clicks): exact over the whole input, spread
    over `shards`; only event_id and `columns` (all if None) are shuffled and kept:
    a replay moves what the steps after it read, not whole clicks. The first copy is
    the same either way as far as those columns go. With `spill_dir` (a local replay's
    choice) the shuffled batches wait in files there. Unbounded input (one Click per element, stamped with its
    click_ts): the event_ids of each `bucket_seconds` of event time, over
    `shards_per_bucket` keys, remembered until the watermark passes the bucket's
    end plus `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: Optional[int] = None, shards: int = DEFAULT_SHARDS,
                 bucket_seconds: float = StreamConfig.dedup_bucket_seconds,
                 shards_per_bucket: int = StreamConfig.dedup_shards_per_bucket,
                 per_key: bool = False, columns: Optional[Sequence[str]] = None, spill_dir: Optional[str] = None):
        super().__init__()
        self._ttl_seconds = ttl_seconds
        self._columns = columns
        self._spill_dir = spill_dir
        self._shards = shards
        self._bucket_ms = max(1, round(bucket_seconds * 1000))
        self._shards_per_bucket = shards_per_bucket
        self._per_key = per_key

    def expand(self, clicks):
        if not clicks.is_bounded:
            if self._ttl_seconds is None:
                raise ValueError("a stream's dedup needs a TTL: its state must expire")
            if self._per_key:
                return clicks | "DeduplicatePerKey" >> _BeamDeduplicatePerKey(self._ttl_seconds)
            bucket_ms, shards = self._bucket_ms, self._shards_per_bucket

            def bucket_and_shard(click):
                return (click.click_ts - click.click_ts % bucket_ms, event_id_shard(click.event_id, shards)), click

            return (
                clicks
                | "KeyByBucketAndShard" >> beam.Map(bucket_and_shard)
                | "FirstCopyInBucket" >> beam.ParDo(_FirstCopyInBucketFn(bucket_ms, self._ttl_seconds * 1000))
                .with_input_types(Tuple[Tuple[int, int], Any]))
        return (
            clicks
            | "ShardByEventId" >> beam.ParDo(ShardByEventId(self._shards, self._columns, self._spill_dir))
            | "GatherShards" >> beam.GroupByKey()
            | "FirstCopies" >> beam.ParDo(_FirstCopies()))
