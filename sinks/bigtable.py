"""Google Cloud Bigtable, the production sink: row keys for the two reads the API makes.

One table holds five kinds of rows (docs/bigtable-and-serving.md explains why):

  ad#{h4}#{ad_id}#{minute}      per ad, per minute: one ad over a time range is one scan
  min#{b}#{minute}#{ad_id}      per minute, per ad: all ads of a minute are 16 scans in one request
  top#{reversed minute}         the top N ads of a minute: one row; the newest minute sorts first
  tops#{M}#{reversed end}       the top N ads of the M minutes ending (exclusive) at `end`: one row
  meta                          the window size and filters the table holds (sinks/meta.py)

`h4` is 4 hex digits of a hash of the ad_id and `b` its first digit (16 salt buckets), so
no kind of high-volume row starts with a time and writes never pile onto one tablet.
`minute` is the window start in epoch ms, 13 digits, zero-padded.

Family `c` holds counts: qualifier `all` for every click, `country=US` (a filter) for one
filter, each an 8-byte big-endian int64. Family `t` holds the ranking as JSON, and the `meta`
row's cells. Each count and ranking cell is written with the pane's full (accumulated) value at
a version (timestamp) equal to the window start, so a later pane, a retried bundle or a replay
overwrites the same cell: the write is idempotent and never an increment.
"""

import datetime
import hashlib
import logging
import random
import struct
import time
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import orjson
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import GlobalWindows

from sinks.restatement import count_restatement, restatement_of
from transforms.records import AGGREGATE_ROWS, MINUTE_MS, AdCount, Aggregates, FilterCount, SlidingTopAds, TopAds, rows

COUNTS = "c"
TOP = "t"
FAMILIES = (COUNTS, TOP)
ALL_CLICKS = b"all"
RANKING = b"ranking"
SALT_BUCKETS = 16
MINUTE_DIGITS = 13
MAX_MINUTE = 10 ** MINUTE_DIGITS - 1
AD_PREFIX, MINUTE_PREFIX, TOP_PREFIX, SLIDING_PREFIX = "ad#", "min#", "top#", "tops#"
META_ROW = b"meta"  # no '#': no other kind of row, whatever its ad_id, can have this key
CHECK_DEADLINE_SECONDS = 5  # retries of the check before a run, in all
# The writes of one batch keep retrying a transient error for this long, then the bundle fails (and the
# runner retries it): long enough for an outage of a minute or two, such as a 20 s freeze, a tablet move or
# a restart of the emulator's host; short enough that a table gone for good fails the bundle, not hangs it.
WRITE_DEADLINE_SECONDS = 120
WRITE_ATTEMPT_SECONDS = 10  # one MutateRows call; a server that does not answer costs this much per attempt
BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS = 0.5, 8.0  # doubled after each failed attempt, up to the max
FLUSH_COUNT = 1000  # DirectRows per MutateRows call
_COUNT = struct.Struct(">q")

# The client warns on every connection to the emulator; the emulator is what tests and local runs use.
warnings.filterwarnings("ignore", message="Connecting to Bigtable emulator", category=RuntimeWarning)


@dataclass(frozen=True)
class TableRef:
    """Where the aggregates live: `bigtable://PROJECT/INSTANCE/TABLE`."""
    project: str
    instance: str
    table: str

    @property
    def url(self) -> str:
        return f"bigtable://{self.project}/{self.instance}/{self.table}"


def ad_hash(ad_id: str) -> str:
    """4 hex digits, stable across processes and languages (BLAKE2b of the UTF-8 bytes)."""
    return hashlib.blake2b(ad_id.encode("utf-8", "surrogatepass"), digest_size=2).hexdigest()


def _minute(window_start: int) -> str:
    if not 0 <= window_start <= MAX_MINUTE:
        raise ValueError(f"window start {window_start} out of range")
    return f"{window_start:0{MINUTE_DIGITS}d}"


def ad_key(ad_id: str, window_start: int) -> bytes:
    return f"{AD_PREFIX}{ad_hash(ad_id)}#{ad_id}#{_minute(window_start)}".encode("utf-8", "surrogatepass")


def minute_key(window_start: int, ad_id: str) -> bytes:
    bucket = ad_hash(ad_id)[0]
    return f"{MINUTE_PREFIX}{bucket}#{_minute(window_start)}#{ad_id}".encode("utf-8", "surrogatepass")


def top_key(window_start: int) -> bytes:
    return f"{TOP_PREFIX}{_minute(MAX_MINUTE - window_start)}".encode()


def top_sliding_key(window_end: int, minutes: int) -> bytes:
    return f"{SLIDING_PREFIX}{minutes:04d}#{_minute(MAX_MINUTE - window_end)}".encode()


def parse_ad_key(key: bytes) -> Tuple[str, int]:
    """(ad_id, window_start) of an `ad#` row; fixed-width parts make any ad_id unambiguous."""
    text = key.decode("utf-8", "surrogatepass")
    head = len(AD_PREFIX) + 5
    return text[head:-MINUTE_DIGITS - 1], int(text[-MINUTE_DIGITS:])


def parse_minute_key(key: bytes) -> Tuple[int, str]:
    """(window_start, ad_id) of a `min#` row."""
    text = key.decode("utf-8", "surrogatepass")
    head = len(MINUTE_PREFIX) + 2
    return int(text[head:head + MINUTE_DIGITS]), text[head + MINUTE_DIGITS + 1:]


def parse_top_key(key: bytes) -> int:
    return MAX_MINUTE - int(key.decode()[len(TOP_PREFIX):])


def ad_range(ad_id: str, start: int, end: int) -> Tuple[bytes, bytes]:
    """Row keys [first, last) of one ad's minutes in [start, end)."""
    return ad_key(ad_id, start), ad_key(ad_id, end)


def minute_ranges(start: int, end: int) -> List[Tuple[bytes, bytes]]:
    """Row key ranges [first, last), one per salt bucket, of every ad's minutes in [start, end)."""
    return [(f"{MINUTE_PREFIX}{bucket:x}#{_minute(start)}#".encode(),
             f"{MINUTE_PREFIX}{bucket:x}#{_minute(end)}#".encode())
            for bucket in range(SALT_BUCKETS)]


def split_keys() -> List[bytes]:
    """Initial tablet boundaries: one per salt bucket of each high-volume row kind."""
    return ([f"{AD_PREFIX}{bucket:x}".encode() for bucket in range(1, SALT_BUCKETS)]
            + [f"{MINUTE_PREFIX}{bucket:x}".encode() for bucket in range(SALT_BUCKETS)]
            + [TOP_PREFIX.encode(), SLIDING_PREFIX.encode()])


def encode_count(clicks: int) -> bytes:
    return _COUNT.pack(clicks)


def decode_count(value: bytes) -> int:
    return _COUNT.unpack(value)[0]


def encode_ranking(ranking) -> bytes:
    return orjson.dumps([[ad_id, clicks] for ad_id, clicks in ranking])


def decode_ranking(value: bytes) -> List[Tuple[str, int]]:
    return [(ad_id, clicks) for ad_id, clicks in orjson.loads(value)]


def window_version(window_start: int) -> datetime.datetime:
    """The cell version of a window: its start, so every pane of it lands on the same cell."""
    return datetime.datetime.fromtimestamp(window_start / 1000, datetime.timezone.utc)


def count_cells(ad_id: str, window_start: int, qualifier: bytes, clicks: int):
    """(row key, family, qualifier, value, version) of the two cells one count is written to."""
    value, version = encode_count(clicks), window_version(window_start)
    yield ad_key(ad_id, window_start), COUNTS, qualifier, value, version
    yield minute_key(window_start, ad_id), COUNTS, qualifier, value, version


def per_ad_cells(count: AdCount):
    return count_cells(count.ad_id, count.window_start, ALL_CLICKS, count.clicks)


def per_filter_cells(count: FilterCount):
    return count_cells(count.ad_id, count.window_start, count.filter.encode("utf-8", "surrogatepass"), count.clicks)


def top_ads_cells(top: TopAds):
    yield top_key(top.window_start), TOP, RANKING, encode_ranking(top.ranking), window_version(top.window_start)


def top_sliding_cells(top: SlidingTopAds):
    yield (top_sliding_key(top.window_end, top.minutes), TOP, RANKING, encode_ranking(top.ranking),
           window_version(top.window_end - top.minutes * MINUTE_MS))


# The cells of each aggregate, by its name in `Aggregates`.
CELLS = {"per_ad": per_ad_cells, "per_filter": per_filter_cells, "top_ads": top_ads_cells,
         "top_ads_sliding": top_sliding_cells}


def direct_rows(cells):
    """DirectRow mutations, one per cell, for `write_rows`."""
    from google.cloud.bigtable.row import DirectRow
    for key, family, qualifier, value, version in cells:
        row = DirectRow(key)
        row.set_cell(family, qualifier, value, timestamp=version)
        yield row


def client(project: str, admin: bool = False):
    """A Bigtable client; it honours BIGTABLE_EMULATOR_HOST."""
    from google.cloud.bigtable import Client
    return Client(project=project, admin=admin)


class BigtableNotReady(ValueError):
    """The table cannot take writes or serve reads: missing, missing families, unreachable."""


def describe_error(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return " ".join(message.split())[:300]


class BigtableWriteError(RuntimeError):
    """A write failed for good (not transient) or kept failing past WRITE_DEADLINE_SECONDS; one line."""


def _retryable_codes() -> frozenset:
    from google.cloud.bigtable.table import RETRYABLE_CODES
    return frozenset(RETRYABLE_CODES)  # ABORTED, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE


def _status_text(status) -> str:
    from google.rpc import code_pb2
    return f"{code_pb2.Code.Name(status.code)} {' '.join(status.message.split())[:200]}".strip()


def write_rows(table, rows: list, url: str, deadline_seconds: float = WRITE_DEADLINE_SECONDS) -> int:
    """Writes DirectRows, and again those that failed with a transient error, with exponential backoff
    (BACKOFF_FIRST_SECONDS doubled up to BACKOFF_MAX_SECONDS, jittered) until `deadline_seconds` after the
    first attempt; returns how many retries it took. Rewriting a row is safe: every cell is a full value at a
    fixed version. Raises BigtableWriteError on a permanent error or at the deadline."""
    from google.cloud.bigtable.table import DEFAULT_RETRY
    from google.rpc import code_pb2
    no_retry = DEFAULT_RETRY.with_deadline(0.0)  # the client's "do nothing": this loop retries, logs and counts
    retryable, pending, retries = _retryable_codes(), list(rows), 0
    delay, give_up = BACKOFF_FIRST_SECONDS, time.monotonic() + deadline_seconds
    while True:
        statuses = table.mutate_rows(pending, retry=no_retry, timeout=WRITE_ATTEMPT_SECONDS)
        failed = [(row, status) for row, status in zip(pending, statuses) if status.code != code_pb2.OK]
        if not failed:
            return retries
        permanent = [status for _, status in failed if status.code not in retryable]
        if permanent:
            raise BigtableWriteError(f"Bigtable table {url}: a write failed: {_status_text(permanent[0])}")
        wait = delay * random.uniform(0.5, 1.0)
        if time.monotonic() + wait > give_up:
            raise BigtableWriteError(f"Bigtable table {url}: {len(failed)} writes still failing after "
                                     f"{deadline_seconds:.0f} s of retries: {_status_text(failed[0][1])}")
        retries += 1
        logging.warning("Bigtable table %s: %d of %d writes failed (%s); retry %d in %.1f s",
                        url, len(failed), len(pending), _status_text(failed[0][1]), retries, wait)
        time.sleep(wait)
        delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        pending = [row for row, _ in failed]


def check_table(ref: TableRef) -> None:
    """Raises BigtableNotReady with a one-line reason unless the table and its families exist."""
    from google.api_core import exceptions, retry
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.bigtable_admin_v2.types import Table
    create = f"create it with: adclick bigtable create-table --sink {ref.url}"
    try:
        admin = client(ref.project, admin=True)
        name = admin.instance(ref.instance).table(ref.table).name
        table = admin.table_admin_client.get_table(
            request={"name": name, "view": Table.View.SCHEMA_VIEW}, timeout=CHECK_DEADLINE_SECONDS,
            retry=retry.Retry(retry.if_transient_error, initial=0.25, maximum=2, timeout=CHECK_DEADLINE_SECONDS))
    except exceptions.NotFound:
        raise BigtableNotReady(f"Bigtable table {ref.url} does not exist; {create}") from None
    except (exceptions.GoogleAPICallError, exceptions.RetryError, DefaultCredentialsError) as error:
        raise BigtableNotReady(f"cannot reach Bigtable table {ref.url}: {describe_error(error)}") from None
    missing = sorted(set(FAMILIES) - set(table.column_families))
    if missing:
        raise BigtableNotReady(
            f"Bigtable table {ref.url} lacks column families {', '.join(missing)}; {create}")


def create_table(ref: TableRef) -> List[str]:
    """Creates the table and its families, pre-split on the salt buckets; idempotent.

    Returns what it created (empty if everything was already there). Each family keeps one
    version per cell: the version is the window, so older ones are only overwritten panes.
    """
    from google.api_core import exceptions
    from google.cloud.bigtable import column_family
    table = client(ref.project, admin=True).instance(ref.instance).table(ref.table)
    gc_rule = column_family.MaxVersionsGCRule(1)
    created = []
    try:
        table.create(initial_split_keys=split_keys(), column_families={name: gc_rule for name in FAMILIES})
        created.append(f"table {ref.url} with families {', '.join(FAMILIES)}")
    except exceptions.AlreadyExists:
        for name in sorted(set(FAMILIES) - set(table.list_column_families())):
            table.column_family(name, gc_rule).create()
            created.append(f"column family {name}")
    return created


def held_clicks(table, window_start: int) -> Dict[str, int]:
    """{ad_id: clicks} a table holds for one window: its `min#` rows, 16 ranges in one ReadRows."""
    from google.cloud.bigtable import row_filters
    from google.cloud.bigtable.row_set import RowSet
    row_set = RowSet()
    for first, last in minute_ranges(window_start, window_start + 1):  # exactly this window's rows
        row_set.add_row_range_from_keys(first, last)
    only_all_clicks = row_filters.RowFilterChain([
        row_filters.ColumnRangeFilter(COUNTS, ALL_CLICKS, ALL_CLICKS), row_filters.CellsColumnLimitFilter(1)])
    return {parse_minute_key(row.row_key)[1]: decode_count(row.cells[COUNTS][ALL_CLICKS][0].value)
            for row in table.read_rows(row_set=row_set, filter_=only_all_clicks)}


class _LoweredFn(beam.DoFn):
    """(window_start, [(ad_id, clicks)]) of a replay -> (window_start, whether the window's total in the table
    goes down when these cells overwrite the ones it holds). Ads the replay did not see keep their cells."""

    def __init__(self, ref: TableRef):
        self._ref = ref

    def setup(self):
        self._table = client(self._ref.project).instance(self._ref.instance).table(self._ref.table)

    def process(self, window_counts):
        window_start, counts = window_counts
        held = held_clicks(self._table, window_start)
        yield window_start, sum(clicks - held.get(ad_id, 0) for ad_id, clicks in counts) < 0


def _counted(windows):
    restatement = restatement_of(windows)
    count_restatement(restatement)
    return restatement


class _Restatement(beam.PTransform):
    """A replay's per-ad counts -> the one Restatement of the table, counted as Beam metrics for the summary.

    It reads what the table holds for each window the replay covers, so the writes must wait for it.
    Like SQLite's `swap_in`, every window the replay holds is restated, including one the table held nothing for.
    """

    def __init__(self, ref: TableRef):
        super().__init__()
        self._ref = ref

    def expand(self, per_ad):
        return (per_ad
                | "ByWindow" >> beam.FlatMap(lambda element: (
                    (count.window_start, (count.ad_id, count.clicks)) for count in rows(element, AdCount)))
                | "Global" >> beam.WindowInto(GlobalWindows())
                | "GroupByWindow" >> beam.GroupByKey()
                | "Lowered" >> beam.ParDo(_LoweredFn(self._ref))
                | "Windows" >> beam.combiners.ToList()
                | "Count" >> beam.Map(_counted))


class _ToDirectRows(beam.DoFn):
    """Aggregates of one kind -> DirectRow mutations, counting cells written."""

    def __init__(self, kind: str):
        self._row_type, self._cells_of = AGGREGATE_ROWS[kind], CELLS[kind]
        self.cells = Metrics.counter("adclick", "bigtable.cells")

    def process(self, element, *_read_first):  # a replay's restatement, as a side input: the writes wait for it
        for aggregate in rows(element, self._row_type):  # a replay's elements are Arrow tables of rows
            for row in direct_rows(self._cells_of(aggregate)):
                self.cells.inc()
                yield row


class _WriteRowsFn(beam.DoFn):
    """DirectRows -> the table, FLUSH_COUNT at a time and the rest at the end of the bundle, with `write_rows`'s
    retries. Not Beam's WriteToBigTable: its batcher waits up to 10 minutes per batch and 60 s per attempt,
    neither can be set, and it retries silently; these retries are logged and counted (`bigtable.write_retries`)."""

    def __init__(self, ref: TableRef, flush_count: int):
        self._ref, self._flush_count = ref, flush_count
        self.retries = Metrics.counter("adclick", "bigtable.write_retries")

    def setup(self):
        self._table = client(self._ref.project).instance(self._ref.instance).table(self._ref.table)

    def start_bundle(self):
        self._rows = []

    def process(self, row):
        self._rows.append(row)
        if len(self._rows) >= self._flush_count:
            self._flush()

    def finish_bundle(self):
        if self._rows:
            self._flush()

    def _flush(self):
        rows, self._rows = self._rows, []
        self.retries.inc(write_rows(self._table, rows, self._ref.url))


class WriteToBigtable(beam.PTransform):
    """Writes `Aggregates` to a Bigtable table, retrying transient errors for up to WRITE_DEADLINE_SECONDS.

    A replay (bounded input) first reads what the table holds for its windows and reports what it restated
    (`_Restatement`); no cell is written before that read. It overwrites the cells of the ads it saw, but cannot
    delete those of an ad it did not see in a window: unlike SQLite, a partial replay does not restate a window
    whole. Building it touches nothing: the launcher checks the table before any pipeline runs
    (`sinks.meta.check_sink`, which calls `check_table`). Transient errors (unavailable, deadline exceeded,
    aborted, internal) are retried with bounded exponential backoff for WRITE_DEADLINE_SECONDS (2 minutes: a
    20 s outage stalls the writes, it loses none), and a bundle that still fails is retried by the runner: both
    are safe because every write is idempotent.
    """

    def __init__(self, ref: TableRef, flush_count: Optional[int] = None):
        super().__init__()
        self._ref = ref
        self._flush_count = flush_count

    def expand(self, aggregates: Aggregates):
        read_first = ([beam.pvalue.AsSingleton(aggregates.per_ad | "Restatement" >> _Restatement(self._ref))]
                      if aggregates.per_ad.is_bounded else [])
        return (
            [rows | f"{Aggregates.label(kind)}Cells" >> beam.ParDo(_ToDirectRows(kind), *read_first)
             for kind, rows in aggregates.made()]
            | "Flatten" >> beam.Flatten()
            | "WriteToBigTable" >> beam.ParDo(_WriteRowsFn(self._ref, self._flush_count or FLUSH_COUNT)))
