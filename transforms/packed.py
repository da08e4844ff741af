"""Arrow tables packed for a shuffle: Arrow IPC bytes, compressed with LZ4 from
`COMPRESSED_FROM_ROWS` rows, or files of them.

Pickled, the dedup shuffle's columns take 75 bytes a click; packed with LZ4, 56
(zstd makes them 30, at twice the CPU). LZ4 costs about 70 us a table besides its
40 ns a row, though: a replay packs each 50k-click batch as 64 dedup shards of about
800 clicks, where LZ4 took 7 ms a batch to pack and 6 more to unpack, against 1 ms
uncompressed (76 bytes a click). Small tables go uncompressed.
A local replay spills them to files (`Spill`): its runner would hold the whole
shuffle in memory and copy it several times over when the next stage starts.
"""

import uuid
from typing import Hashable, Iterator, List, Tuple

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

COMPRESSED_FROM_ROWS = 8192  # LZ4's cost per table is then under a fifth of its cost per row
_COMPRESSED = pa.ipc.IpcWriteOptions(compression="lz4")
_UNCOMPRESSED = pa.ipc.IpcWriteOptions(compression=None)


def pack(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = _COMPRESSED if len(table) >= COMPRESSED_FROM_ROWS else _UNCOMPRESSED
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack(data: bytes) -> pa.Table:
    """The table `pack` was given."""
    return pa.ipc.open_stream(data).read_all()


def partitioned(table: pa.Table, keys: np.ndarray) -> Iterator[Tuple[int, pa.Table]]:
    """(key, its rows) for each distinct value of `keys` (one per row), in key order, the rows' order
    kept: one sort and one take, then a slice per key, which packs to only its own rows. Keys of
    8 or 16 bits (shards) sort by radix, 20x faster than 64-bit ones."""
    keys = np.asarray(keys)
    if not len(keys):
        return
    low, high = keys.min(), keys.max()
    if keys.dtype.kind in "iu" and low >= 0 and high < 2 ** 16:
        keys = keys.astype(np.uint8 if high < 2 ** 8 else np.uint16)
    order = np.argsort(keys, kind="stable")
    in_order = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], in_order[1:] != in_order[:-1])))
    table = table.take(order)
    for key, start, end in zip(in_order[starts].tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
        yield key, table.slice(start, end - start)


class Spill:
    """A bundle's packed tables by shuffle key, appended to one file per key in `directory` (named
    `what`-*.packed); the shuffle then moves (key, path) instead of the bytes. A path is given out
    only when the bundle ends (`paths`), so a retried bundle's files are never read."""

    def __init__(self, directory: str, what: str):
        self._directory = directory
        self._what = what
        self._files: dict = {}

    def add(self, key: Hashable, packed: bytes) -> None:
        if key not in self._files:
            path = FileSystems.join(self._directory, f"{self._what}-{uuid.uuid4().hex}.packed")
            self._files[key] = path, FileSystems.create(path)
        self._files[key][1].write(len(packed).to_bytes(8, "little") + packed)

    def paths(self) -> List[Tuple[Hashable, str]]:
        """(key, path) of each file, closed."""
        for _, handle in self._files.values():
            handle.close()
        paths, self._files = [(key, path) for key, (path, _) in self._files.items()], {}
        return paths


def unpacked(parts) -> Iterator[pa.Table]:
    """The tables of a shuffle key: packed bytes, or the paths of `Spill` files of them."""
    for part in parts:
        if isinstance(part, bytes):
            yield unpack(part)
            continue
        with FileSystems.open(part, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            while size := handle.read(8):
                yield unpack(handle.read(int.from_bytes(size, "little")))
