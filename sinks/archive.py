"""The raw archive: every valid click the stream read, in Parquet files by event-time hour.

`ROOT/event_hour=YYYY-MM-DDTHH/clicks-<time>-<random>.parquet`, one file per
pane (every `every_seconds` of processing time) and hour. Rows are the clicks
as parsed (click_ts in epoch ms) with `receive_ts`, the time the stream
received each one (publish time, record timestamp), so a replay judges clock
skew as the stream did. Resends, skewed and too-late clicks are all kept:
the archive is the source of truth that `adclick replay --input
'ROOT/*/*.parquet'` recomputes from, exactly.
"""

import datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from sinks.panes import WriteInPanes
from transforms.packed import partitioned
from transforms.records import CLICK_SCHEMA

DEFAULT_EVERY_SECONDS = 60


HOUR_MS = 3_600_000


def event_hour(clicks: pa.Table) -> str:
    """The partition of a batch of one event-time hour (`by_hour`)."""
    moment = datetime.datetime.fromtimestamp(clicks["click_ts"][0].as_py() // 1000, datetime.timezone.utc)
    return moment.strftime("event_hour=%Y-%m-%dT%H")


def by_hour(clicks: pa.Table):
    """A batch of clicks -> its parts of one event-time hour each."""
    for _, rows in partitioned(clicks, clicks["click_ts"].to_numpy() // HOUR_MS):
        yield rows


def write_parquet(handle, batches) -> None:
    """Batches of clicks (CLICK_SCHEMA) -> one Parquet file (of no rows for none: a runner may fire an empty pane)."""
    pq.write_table(pa.concat_tables(batches) if batches else CLICK_SCHEMA.empty_table(), handle, compression="zstd")


class WriteRawArchive(beam.PTransform):
    """Batches of valid clicks -> Parquet files by event-time hour under `root`."""

    def __init__(self, root: str, every_seconds: int = DEFAULT_EVERY_SECONDS, shards: int = 1):
        super().__init__()
        self._root = root
        self._every_seconds = every_seconds
        self._shards = shards

    def expand(self, clicks):
        return (clicks
                | "ByHour" >> beam.FlatMap(by_hour)
                | "WriteParquetPanes" >> WriteInPanes(
                    self._root, event_hour, write_parquet, "clicks", ".parquet", self._every_seconds, self._shards))
