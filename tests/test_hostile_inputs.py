"""Hostile files given to `adclick replay`, run as the user runs it (a subprocess, its terminal read):
each is a dead letter or one clear error naming the file, never a traceback, never a hang, and the
records around it are all counted.

tests/test_damaged_inputs.py has the reader's cases one by one; here are the ones it has not (garbled
data inside a compressed stream, an Avro block, a Parquet page; empty files; a FIFO; a 50 MB line),
end to end and all in one run where they can be. Each file's clicks are of its own ad, so that the sink
says how many of each file's records were counted, and every count is computed here from the bytes
written.
"""

import bz2
import gzip
import io
import json
import lzma
import os
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from sources.files import read_json_lines
from transforms.records import MAX_RECORD_BYTES

REPO = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600_000
BIG_LINE_BYTES = 50 << 20
AVRO_SCHEMA = fastavro.parse_schema({"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "ad_id", "type": "string"}, {"name": "click_ts", "type": "long"}]})


def clicks(ad_id: str, count: int) -> list:
    return [{"event_id": f"{ad_id}-{i}", "ad_id": ad_id, "click_ts": T0 + i * 7} for i in range(count)]


def json_lines(records) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def avro_bytes(records, codec: str) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, AVRO_SCHEMA, records, codec=codec, sync_interval=2_000)
    return out.getvalue()


def parquet_bytes(records) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), out, row_group_size=500, write_page_checksum=True,
                   compression="none")
    return out.getvalue()


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]


def replay(tmp_path, *inputs, timeout=300):
    """`adclick replay` of `inputs` as a subprocess: (exit code, stdout + stderr, summary, dead letters, db)."""
    db, dead, summary = tmp_path / "out.db", tmp_path / "dead.jsonl", tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "runners.cli", "replay", *[arg for path in inputs for arg in ("--input", str(path))],
         "--sink", f"sqlite:///{db}", "--dead-letter", str(dead), "--summary", str(summary)],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    return result.returncode, output, json.loads(summary.read_text()) if summary.exists() else None, letters, db


def counted(db) -> dict:
    """Clicks in the sink by ad."""
    return dict(sqlite3.connect(db).execute("SELECT ad_id, SUM(clicks) FROM clicks_per_minute GROUP BY ad_id"))


def test_damaged_files_of_every_kind_in_one_replay_are_each_one_dead_letter_and_the_rest_is_counted(tmp_path):
    """Garbled data in a gzip stream (not its checksum), a truncated zstd and xz log, an Avro file with a
    garbled deflate block, a Parquet file with a garbled page (page checksums written), empty files of
    each format: each named once, after every record read before its damage; the whole logs around
    them counted in full."""
    gz = gzip.compress(json_lines(clicks("gz", 20_000)))
    avro, parquet = avro_bytes(clicks("avro", 10_000), "deflate"), parquet_bytes(clicks("parquet", 3_000))
    made = {
        "whole-before.jsonl": json_lines(clicks("before", 300)),
        "garbled.jsonl.gz": flipped(gz, len(gz) // 2),
        "cut.jsonl.zst": zstandard.ZstdCompressor().compress(json_lines(clicks("zst", 5_000)))[:-200],
        "cut.jsonl.xz": lzma.compress(json_lines(clicks("xz", 5_000)))[:-200],
        "cut.jsonl.bz2": bz2.compress(json_lines(clicks("bz2", 5_000)))[:-200],
        "garbled.avro": flipped(avro, len(avro) // 2),
        "garbled.parquet": flipped(parquet, len(parquet) // 3),
        "empty.jsonl.gz": b"", "empty.avro": b"", "empty.parquet": b"", "empty.jsonl": b"",
        "whole-after.jsonl.gz": gzip.compress(json_lines(clicks("after", 400))),
    }
    paths = []
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    code, output, summary, letters, db = replay(tmp_path, *paths)

    assert code == 0, output[-3000:]
    damaged = sorted(str(tmp_path / name) for name in made if name not in
                     ("whole-before.jsonl", "whole-after.jsonl.gz", "empty.jsonl"))
    assert sorted(f["file"] for f in summary["incomplete_files"]) == damaged
    unreadable = {Path(letter["source"]).name: letter for letter in letters if letter["reason"] == "unreadable_file"}
    assert sorted(str(tmp_path / name) for name in unreadable) == damaged
    for path in damaged:
        assert f"WARNING: {path} was not read whole, stopped at " in output
    by_ad = counted(db)
    assert (by_ad["before"], by_ad["after"]) == (300, 400)
    for name, ad in [("garbled.jsonl.gz", "gz"), ("cut.jsonl.zst", "zst"), ("cut.jsonl.xz", "xz"),
                     ("cut.jsonl.bz2", "bz2"), ("garbled.avro", "avro"), ("garbled.parquet", "parquet")]:
        # Every record read before the damage is counted, nothing after it. Garbled data may read as other
        # records first (gzip's checksum, at the member's end, tells; Avro's deflate blocks have none).
        garbage = sum(1 for letter in letters if Path(letter["source"]).name == name
                      and letter["reason"] != "unreadable_file")
        assert by_ad.get(ad, 0) + garbage == unreadable[name]["offset"] - 1, name
    assert 0 < by_ad["gz"] < 20_000 and 0 < by_ad["avro"] < 10_000
    assert 0 < by_ad["parquet"] < 3_000 and by_ad["parquet"] % 500 == 0  # the whole row groups before the damage
    assert summary["read"] == sum(by_ad.values()) + len(letters) and summary["balanced"]


def test_a_fifo_is_refused_with_one_line_whether_or_not_a_writer_feeds_it(tmp_path):
    """A FIFO could be read once only (a runner that reads a file again would find nothing), and with no
    writer it blocks: a replay refuses it before it starts, alone or matched by a pattern. The writer
    feeding it is released at the end, and no sink is made."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_bytes(json_lines(clicks("a", 10)))
    fifo = logs / "b.jsonl"
    os.mkfifo(fifo)
    written = []

    def feed():
        try:
            with open(fifo, "wb") as pipe:  # blocks until something opens the FIFO to read
                pipe.write(json_lines(clicks("b", 10)))
                written.append(True)
        except BrokenPipeError:
            written.append(False)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    for pattern in (fifo, logs / "*"):
        code, output, summary, letters, db = replay(tmp_path, pattern, timeout=120)
        lines = [line for line in output.splitlines() if line and " INFO " not in line]
        assert code == 1 and len(lines) == 1, output
        assert lines[0].startswith(f"adclick replay: --input '{pattern}' names {fifo}, a FIFO (named pipe)"), lines
        assert summary is None and not db.exists()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer go
    writer.join(10)
    os.close(reader)
    assert not writer.is_alive()
    # with no writer at all: the same line, no hang
    code, output, _, _, _ = replay(tmp_path, fifo, timeout=120)
    assert code == 1 and "a FIFO (named pipe)" in output


def big_line_log(tail: bytes = b"") -> tuple:
    """(a log with a 50 MB line between good lines, the good lines' count)."""
    before, after = json_lines(clicks("before", 1_000)), json_lines(clicks("after", 1_000))
    big = b'{"event_id":"big","ad_id":"' + b"x" * BIG_LINE_BYTES + b'","click_ts":1767225600000}'
    return before + big + b"\n" + after + tail, 2_000, len(big)


@pytest.mark.parametrize("name, compress", [("big.jsonl", lambda data: data), ("big.jsonl.gz", gzip.compress),
                                           ("big.jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_a_50_mb_line_between_good_lines_is_one_too_long_dead_letter(tmp_path, name, compress):
    data, good, big = big_line_log()
    (tmp_path / name).write_bytes(compress(data))
    code, output, summary, letters, db = replay(tmp_path, tmp_path / name)
    assert code == 0, output[-3000:]
    assert (summary["read"], summary["unique"], summary["malformed"]) == (good + 1, good, 1)
    assert summary["malformed_by_reason"] == {"too_long": 1} and summary["incomplete_files"] == []
    [letter] = letters
    assert (letter["reason"], letter["offset"], letter["length"]) == ("too_long", 1_001, big)
    assert len(letter["payload"]) == 1024 and letter["payload"].startswith('{"event_id":"big"')
    assert counted(db) == {"before": 1_000, "after": 1_000}


@pytest.mark.parametrize("name, compress", [
    ("big.jsonl", lambda data: data), ("big.jsonl.gz", gzip.compress), ("big.jsonl.bz2", bz2.compress),
    ("big.jsonl.xz", lzma.compress), ("big.jsonl.zst", zstandard.ZstdCompressor().compress)])
def test_reading_a_50_mb_line_never_holds_it_whole(name, compress):
    """The reader keeps a bounded prefix of a long line (1 MiB) and its chunks (8 MiB), never the line:
    a gzip of 50 MB of one byte is 50 KB, which one call of a decompressor would turn into 50 MB."""
    data, good, big = big_line_log()
    packed = compress(data)
    del data
    tracemalloc.start()
    try:
        outputs = list(read_json_lines(f"/logs/{name}", io.BytesIO(packed)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BIG_LINE_BYTES, f"the reader held {peak / 2 ** 20:.0f} MiB at its peak"
    assert sum(len(output.data) for output in outputs) < 2 * MAX_RECORD_BYTES + 400_000
    assert [output.oversize for output in outputs if output.oversize] == [{0: big}]
