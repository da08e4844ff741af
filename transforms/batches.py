"""A stream's clicks move as Arrow batches (CLICK_SCHEMA), as a replay's do: one representation, and
each step one implementation over it.

A bundle's records are judged as one batch (transforms/parse.py), and the batch is split by
event-time window (`by_window`) so that each part has one window, and is stamped with its start:
what Beam's windows and lateness go by is the window of an element. A stateful step gathers its
bundle's outputs again by window (`WindowBatches`), so that the steps after it see few large
batches rather than one per key. Runners make a bundle of every element waiting for a stage
(Prism does), so batches grow with the load: the per-element cost of the runner and of Python is
paid per batch.
"""

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.packed import partitioned
from transforms.records import CLICK_SCHEMA, Click


def window_starts(clicks: pa.Table, size_ms: int) -> np.ndarray:
    """The start (epoch ms) of each click's fixed window."""
    click_ts = clicks["click_ts"].to_numpy()
    return click_ts - click_ts % size_ms


def window_of(clicks: pa.Table, size_ms: int) -> int:
    """The start of the window of a batch of one window (`by_window`'s parts): its first click's."""
    first = clicks["click_ts"][0].as_py()
    return first - first % size_ms


def by_window(clicks: pa.Table, size_ms: int) -> Iterator[Tuple[int, pa.Table]]:
    """(window start, its clicks) of each window the batch has clicks in."""
    yield from partitioned(clicks, window_starts(clicks, size_ms))


def stamped_by_window(clicks: pa.Table, size_ms: int) -> Iterator[TimestampedValue]:
    """The batch's parts of one window each, stamped with the window's start."""
    for start, rows in by_window(clicks, size_ms):
        yield TimestampedValue(rows, Timestamp(micros=start * 1_000))


def table_of(clicks: Sequence[Click]) -> pa.Table:
    """Clicks -> a batch of them."""
    return pa.table([pa.array(column, field.type) for column, field in zip(zip(*clicks), CLICK_SCHEMA)]
                    if clicks else [pa.array([], field.type) for field in CLICK_SCHEMA], schema=CLICK_SCHEMA)


class WindowBatches:
    """A bundle's batches of one window each, gathered by window, to be given out as one batch per
    window when it ends."""

    def __init__(self, size_ms: int):
        self._size_ms = size_ms
        self._parts: Dict[int, List[pa.Table]] = {}

    def add(self, clicks: pa.Table) -> None:
        self._parts.setdefault(window_of(clicks, self._size_ms), []).append(clicks)

    def windowed_values(self) -> List[WindowedValue]:
        """One batch per window, in the global window, stamped with the window's start; then none are left."""
        parts, self._parts = self._parts, {}
        return [GlobalWindows.windowed_value(pa.concat_tables(tables), Timestamp(micros=start * 1_000))
                for start, tables in parts.items()]
