"""Count each event_id once: the first copy counts, the rest are duplicates.

A replay (bounded input) is exact over the whole input: Arrow batches of clicks
are split into shards by a stable hash of event_id, so every copy of an event
meets its twins in one shard, where a sort finds the first copy of each.

A stream (unbounded input, batches too: transforms/batches.py) remembers the
event_ids it has seen for `ttl_seconds` of event time. State that scales: the ids
of one event-time bucket (`bucket_seconds` of click_ts) are spread over
`shards_per_bucket` keys, each a bag of ids with one timer that forgets the whole
bag once the watermark passes the bucket's end plus the TTL. Beam's
DeduplicatePerKey keeps a state cell and a timer per event_id instead, which
costs a timer firing per click. A copy that arrives after its bucket was
forgotten counts again, as with DeduplicatePerKey;
in the DAG the TTL outlives the allowed lateness, so such a copy is too late
before it can be counted twice (docs/streaming.md).
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import BytesCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipelines.config import StreamConfig, WindowConfig
from transforms.batches import WindowBatches, table_of
from transforms.packed import Spill, pack, partitioned, unpack, unpacked
from transforms.records import Click, event_id_hashes, rows

DEFAULT_SHARDS = 64  # a replay's shuffle: a shard of a 100M-click replay is 1.6M clicks, sorted in memory
# The copy that counts: the earliest click_ts, then the earliest ingestion; the rest only break ties.
FIRST_COPY_ORDER = [(name, "ascending", "at_start")
                    for name in ("event_id", "click_ts", "receive_ts", "ad_id", "country", "user_id", "ip")]


def kept_columns(clicks: pa.Table, columns: Optional[Sequence[str]]) -> pa.Table:
    """event_id and `columns` (all if None): what the dedup moves and keeps."""
    return clicks if columns is None else clicks.select(["event_id"] + [name for name in columns if name != "event_id"])


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
        clicks = kept_columns(clicks, self._columns)
        for shard, part in partitioned(clicks, self.shard_of_rows(clicks)):
            packed = pack(part)
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


def _by_bucket_and_shard(clicks: pa.Table, bucket_ms: int, shards: int, columns: Optional[Sequence[str]]):
    """A stream's batch -> ((bucket start, shard), its clicks packed) for each key it has clicks of,
    with `kept_columns`. Packed: a slice of a table pickles with the whole table's buffers."""
    clicks = kept_columns(clicks, columns)
    buckets = clicks["click_ts"].to_numpy() // bucket_ms
    keys = buckets * shards + (event_id_hashes(clicks["event_id"]) % np.uint64(shards)).astype(np.int64)
    for key, rows_of_key in partitioned(clicks, keys):
        yield (key // shards * bucket_ms, key % shards), pack(rows_of_key)


def ids_blob(ids: pa.Array) -> bytes:
    """A string array as one state element: its length, its offsets and its UTF-8 bytes. One bytes
    element a batch is what a runner keeps and sends back cheapest (Prism: one slice each), and it
    reads back as an Arrow array with no per-id decode."""
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + len(ids) + 1]
    data = ids.buffers()[2]
    body = data[int(offsets[0]):int(offsets[-1])].to_pybytes() if data is not None else b""
    return len(ids).to_bytes(4, "little") + (offsets - offsets[0]).astype("<i4").tobytes() + body


def ids_of_blob(blob: bytes) -> pa.Array:
    """The string array `ids_blob` was given."""
    length = int.from_bytes(blob[:4], "little")
    buffer = pa.py_buffer(blob)
    end = 4 + 4 * (length + 1)
    return pa.StringArray.from_buffers(length, buffer[4:end], buffer[end:])


class _FirstCopyInBucketFn(beam.DoFn):
    """Per (bucket, shard) key: the event_ids seen, forgotten together when the TTL has passed.

    The ids are a bag, each element the new ids of one batch as one blob (`ids_blob`): a bag of
    strings cost a decode per id on every read, and the runner a slice per id to keep, for an hour
    of TTL. A key's ids are read from the runner once a bundle and kept here as one Arrow array
    until the bundle ends: each state read is a round trip to the runner (Prism grants no cache
    tokens). The DoFn instance runs one bundle at a time and every change to the key's state within
    it goes through this copy too, so the copy is the state. The unique clicks leave when the bundle
    ends, gathered by window (transforms/batches.py).
    """

    SEEN = BagStateSpec("seen", BytesCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, bucket_ms: int, ttl_ms: int, window_ms: int):
        self._bucket_ms = bucket_ms
        self._ttl_ms = ttl_ms
        self._window_ms = window_ms

    def setup(self):
        self.unique = Metrics.counter("adclick", "unique")
        self.duplicates = Metrics.counter("adclick", "duplicates")

    def start_bundle(self) -> None:
        self._seen_in_bundle: Dict[Tuple[int, int], pa.Array] = {}
        self._unique = WindowBatches(self._window_ms)

    def process(self, key_and_packed, seen=beam.DoFn.StateParam(SEEN), forget=beam.DoFn.TimerParam(FORGET)):
        key, packed = key_and_packed
        clicks = unpack(packed)
        known = self._seen_in_bundle.get(key)
        if known is None:
            known = pa.concat_arrays([pa.array([], pa.string())] + [ids_of_blob(blob) for blob in seen.read()])
        ids = clicks["event_id"].combine_chunks()
        # The first copy in arrival order counts: an id's first row in the batch, if not known before it.
        _, first_rows = np.unique(pc.dictionary_encode(ids).indices.to_numpy(), return_index=True)
        first = np.zeros(len(ids), dtype=bool)
        first[first_rows] = True
        first &= ~pc.is_in(ids, value_set=known).to_numpy(zero_copy_only=False)
        new = int(first.sum())
        self.duplicates.inc(len(clicks) - new)
        self._seen_in_bundle[key] = known
        if not new:
            return
        unique = clicks.filter(pa.array(first))
        new_ids = unique["event_id"].combine_chunks()
        seen.add(ids_blob(new_ids))
        self._seen_in_bundle[key] = pa.concat_arrays([known, new_ids])
        # The bucket's last millisecond plus the TTL: with 1 ms buckets, exactly DeduplicatePerKey's expiry.
        forget.set(Timestamp(micros=(key[0] + self._bucket_ms - 1 + self._ttl_ms) * 1_000))
        self.unique.inc(new)
        self._unique.add(unique)

    def finish_bundle(self):
        yield from self._unique.windowed_values()

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

        def copies_in(clicks):
            duplicates.inc(len(clicks))  # every copy, until it proves to be the first
            return [TimestampedValue((click.event_id, click), click.click_ts / 1000) for click in rows(clicks, Click)]

        def first_out(event_id_and_click):
            duplicates.dec()
            unique.inc()
            return table_of([event_id_and_click[1]])

        return (clicks
                | "KeyByEventId" >> beam.FlatMap(copies_in)
                | "PerKey" >> DeduplicatePerKey(event_time_duration=Duration(seconds=self._ttl_seconds))
                | "FirstCopies" >> beam.Map(first_out))


class DedupByEventId(beam.PTransform):
    """Drops resent copies of a click.

    Bounded input (Arrow batches of clicks): exact over the whole input, spread
    over `shards`; only event_id and `columns` (all if None) are shuffled and kept:
    a replay moves what the steps after it read, not whole clicks. The first copy is
    the same either way as far as those columns go. With `spill_dir` (a local replay's
    choice) the shuffled batches wait in files there. Unbounded input (batches of one
    window each, transforms/batches.py): the event_ids of each `bucket_seconds` of event
    time, over `shards_per_bucket` keys, remembered until the watermark passes the bucket's
    end plus `ttl_seconds`; only event_id, click_ts and `columns` are kept too, and a bundle's
    unique clicks leave as one batch per window of `window_seconds`.
    """

    def __init__(self, ttl_seconds: Optional[int] = None, shards: int = DEFAULT_SHARDS,
                 bucket_seconds: float = StreamConfig.dedup_bucket_seconds,
                 shards_per_bucket: int = StreamConfig.dedup_shards_per_bucket,
                 per_key: bool = False, columns: Optional[Sequence[str]] = None, spill_dir: Optional[str] = None,
                 window_seconds: int = WindowConfig.size_seconds):
        super().__init__()
        self._ttl_seconds = ttl_seconds
        self._window_ms = window_seconds * 1000
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
            return (
                clicks
                | "KeyByBucketAndShard" >> beam.FlatMap(
                    _by_bucket_and_shard, self._bucket_ms, self._shards_per_bucket, self._columns)
                | "FirstCopyInBucket" >> beam.ParDo(_FirstCopyInBucketFn(
                    self._bucket_ms, self._ttl_seconds * 1000, self._window_ms))
                .with_input_types(Tuple[Tuple[int, int], Any]))
        return (
            clicks
            | "ShardByEventId" >> beam.ParDo(ShardByEventId(self._shards, self._columns, self._spill_dir))
            | "GatherShards" >> beam.GroupByKey()
            | "FirstCopies" >> beam.ParDo(_FirstCopies()))
