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
from transforms.records import CLICK_SCHEMA, Click

DEFAULT_EVERY_SECONDS = 60


def event_hour(click: Click) -> str:
    moment = datetime.datetime.fromtimestamp(click.click_ts // 1000, datetime.timezone.utc)
    return moment.strftime("event_hour=%Y-%m-%dT%H")


def write_parquet(handle, clicks) -> None:
    table = pa.Table.from_pylist([click._asdict() for click in clicks], schema=CLICK_SCHEMA)
    pq.write_table(table, handle, compression="zstd")


class WriteRawArchive(beam.PTransform):
    """Valid Clicks (one per element) -> Parquet files by event-time hour under `root`."""

    def __init__(self, root: str, every_seconds: int = DEFAULT_EVERY_SECONDS, shards: int = 1):
        super().__init__()
        self._root = root
        self._every_seconds = every_seconds
        self._shards = shards

    def expand(self, clicks):
        return clicks | "WriteParquetPanes" >> WriteInPanes(
            self._root, event_hour, write_parquet, "clicks", ".parquet", self._every_seconds, self._shards)
