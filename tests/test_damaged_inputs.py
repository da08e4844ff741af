"""Damaged inputs are named, never read in part in silence; odd but harmless bytes are not records.

A truncated or corrupt file yields the records before the damage, then one `unreadable_file` dead
letter naming it, and the run summary lists it. Every answer here is computed in plain Python from
the bytes written (the stdlib's own streaming decompressors for what a cut file still holds).
"""

import bz2
import gzip
import io
import json
import lzma
import sqlite3
import zlib

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from loadgen.generator import GeneratorConfig, write_log
from runners import replay
from sources import files
from sources.files import ReadRawLogs, read_json_lines
from tests.spec_reading import spec_click
from transforms.parse import DEAD_LETTER, ParseClicks
from transforms.records import Click, DeadLetter, RawLines, rows

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CONFIG = GeneratorConfig(events=5_000, seed=5, ads=100, minutes=5, duplicate_rate=0.05, malformed_rate=0.01)


def replay_run(tmp_path, *inputs, extra=()):
    """A replay of `inputs` into a fresh SQLite file: (summary, dead letters, the database's path)."""
    db, dead = tmp_path / "out.db", tmp_path / "dead.jsonl"
    args = [arg for path in inputs for arg in ("--input", str(path))]
    summary = replay.run([*args, "--sink", f"sqlite:///{db}", "--dead-letter", str(dead), *extra])
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    return summary, letters, db


def expected_counts(lines):
    """read, unique, duplicates and malformed of whole lines, as SPEC.md's table reads them."""
    events = [spec_click(line) for line in lines if line.strip(b" \t\r")]
    valid = [event for event in events if event is not None]
    unique = len({event["event_id"] for event in valid})
    return {"read": len(events), "unique": unique, "duplicates": len(valid) - unique,
            "malformed": len(events) - len(valid)}


def test_a_truncated_gzip_log_is_read_to_the_cut_then_named_in_a_dead_letter_and_the_summary(tmp_path, capsys):
    write_log(CONFIG, tmp_path / "logs", "jsonl", gzip=True)
    log = tmp_path / "logs" / "clicks-00000.jsonl.gz"
    data = log.read_bytes()
    log.write_bytes(data[:len(data) // 2])
    held = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(data[:len(data) // 2])  # all the cut file holds
    whole, cut = held[:held.rfind(b"\n") + 1], held[held.rfind(b"\n") + 1:]
    lines = whole.split(b"\n")[:-1]

    summary, letters, db = replay_run(tmp_path, log)

    expected = expected_counts(lines)
    expected["read"] += 1
    expected["malformed"] += 1  # the damage: one record, whatever the cut line held
    assert {name: summary[name] for name in expected} == expected and summary["balanced"]
    assert summary["malformed_by_reason"]["unreadable_file"] == 1
    [incomplete] = summary["incomplete_files"]
    assert incomplete["file"] == str(log) and incomplete["offset"] == len(lines) + 1
    assert "truncated" in incomplete["detail"]
    [letter] = [letter for letter in letters if letter["reason"] == "unreadable_file"]
    assert (letter["source"], letter["offset"], letter["length"]) == (str(log), len(lines) + 1, len(cut))
    assert letter["payload"] == cut[:1024].decode("utf-8", "backslashreplace")
    assert f"WARNING: {log} was not read whole, stopped at {len(lines) + 1}: " in capsys.readouterr().out
    clicks = sqlite3.connect(db).execute("SELECT SUM(clicks) FROM clicks_per_minute").fetchone()[0]
    assert clicks == expected["unique"]


def lines_of(outputs):
    """The lines of the RawLines among a reader's outputs, as the parser has them."""
    return [line for output in outputs if isinstance(output, RawLines) for line in output.lines()[1]]


COMPRESSIONS = {
    "gz": (gzip.compress, lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)),
    "bz2": (bz2.compress, bz2.BZ2Decompressor),
    "xz": (lzma.compress, lzma.LZMADecompressor),
    "zst": (zstandard.ZstdCompressor(write_content_size=False).compress, lambda: zstandard.ZstdDecompressor()
            .decompressobj()),
}


@pytest.mark.parametrize("extension", sorted(COMPRESSIONS))
@pytest.mark.parametrize("share", [0.001, 0.3, 0.7, 0.999])
def test_a_cut_compressed_file_yields_its_whole_lines_then_one_dead_letter(extension, share, monkeypatch):
    """In chunks far smaller than the file, so that the cut falls after many of them."""
    monkeypatch.setattr(files, "COMPRESSED_CHUNK_BYTES", 512)
    monkeypatch.setattr(files, "CHUNK_BYTES", 512)
    compress, new_decompressor = COMPRESSIONS[extension]
    data = b"".join(b'{"event_id":"e%d","ad_id":"a","click_ts":%d}\n' % (i, T0 + i) for i in range(3_000))
    packed = compress(data)
    cut = packed[:int(len(packed) * share)]
    held = new_decompressor().decompress(cut)
    whole_lines = held[:held.rfind(b"\n") + 1].split(b"\n")[:-1]

    outputs = list(read_json_lines(f"/logs/a.jsonl.{extension}", io.BytesIO(cut)))

    assert lines_of(outputs) == whole_lines
    *_, letter = outputs
    assert isinstance(letter, DeadLetter) and letter.reason == "unreadable_file"
    assert (letter.source, letter.offset) == (f"/logs/a.jsonl.{extension}", len(whole_lines) + 1)
    assert letter.payload == held[held.rfind(b"\n") + 1:].decode() and "truncated" in letter.detail
    assert sum(isinstance(output, DeadLetter) for output in outputs) == 1


def test_a_whole_compressed_file_of_several_members_has_no_dead_letter():
    data = gzip.compress(b'{"a":1}\n{"a":2}\n') + gzip.compress(b'{"a":3}')
    assert lines_of(read_json_lines("/logs/a.jsonl.gz", io.BytesIO(data))) == [b'{"a":1}', b'{"a":2}', b'{"a":3}']


AVRO_SCHEMA = fastavro.parse_schema({"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "ad_id", "type": "string"}, {"name": "click_ts", "type": "long"}]})
RECORDS = [{"event_id": f"e{i}", "ad_id": f"ad-{i % 7}", "click_ts": T0 + i} for i in range(20_000)]  # 100 KiB gzipped
JSON_LINES = b"".join(json.dumps(record).encode() + b"\n" for record in RECORDS)


def avro_bytes(records) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, AVRO_SCHEMA, records, sync_interval=1_000)  # many blocks
    return out.getvalue()


def parquet_bytes(records) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), out)
    return out.getvalue()


def with_bad_checksum(gzipped: bytes) -> bytes:
    """A gzip file whose CRC-32 (the trailer's first 4 bytes) does not match its data."""
    return gzipped[:-8] + bytes(b ^ 0xFF for b in gzipped[-8:-4]) + gzipped[-4:]


DAMAGED = [
    pytest.param("a.jsonl.gz", b'{"event_id":"e1","ad_id":"a","click_ts":1767225600000}\n', (),
                 "incorrect header check", False, id="not-gzip-named-gz"),
    pytest.param("a.jsonl.gz", with_bad_checksum(gzip.compress(JSON_LINES)), (), "incorrect data check", True,
                 id="gzip-with-a-bad-checksum"),
    pytest.param("a.avro", bytes(range(256)) * 4, (), "not a whole Avro file", False, id="garbage-avro"),
    pytest.param("a.avro", avro_bytes(RECORDS)[:-500], (), "not a whole Avro file", True, id="cut-avro"),
    pytest.param("a.parquet", bytes(range(256)) * 4, (), "not a whole Parquet file", False, id="garbage-parquet"),
    pytest.param("a.parquet", parquet_bytes(RECORDS)[:-100], (), "not a whole Parquet file", False, id="cut-parquet"),
    pytest.param("a.jsonl", JSON_LINES, ("--input-format", "avro"), "not a whole Avro file", False,
                 id="json-lines-read-as-avro"),
]


@pytest.mark.parametrize("name, data, extra, detail, read_some", DAMAGED)
def test_a_damaged_file_is_one_dead_letter_after_the_records_before_the_damage(name, data, extra, detail, read_some,
                                                                               tmp_path):
    """No traceback: the records read before the damage are counted (each a prefix of what was
    written, so every one of them valid here), the damage is one malformed record, and the file is named."""
    path = tmp_path / name
    path.write_bytes(data)
    summary, letters, db = replay_run(tmp_path, path, extra=extra)
    [letter] = letters
    assert (letter["reason"], letter["source"]) == ("unreadable_file", str(path)) and detail in letter["detail"]
    read_before = summary["read"] - 1
    assert summary["unique"] == read_before <= len(RECORDS) and summary["malformed"] == 1 and summary["balanced"]
    assert (read_before > 0) == read_some
    assert letter["offset"] == (read_before + 1)
    assert [(f["file"], f["offset"]) for f in summary["incomplete_files"]] == [(str(path), read_before + 1)]
    stored = sqlite3.connect(db).execute("SELECT COALESCE(SUM(clicks), 0) FROM clicks_per_minute").fetchone()[0]
    assert stored == read_before


def test_a_whole_file_has_no_incomplete_files_in_its_summary(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(JSON_LINES))
    summary, letters, _ = replay_run(tmp_path, path)
    assert (summary["read"], summary["unique"], summary["incomplete_files"], letters) == (len(RECORDS),) * 2 + ([], [])


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_directory_as_input_is_one_clear_error_before_the_run(tmp_path, slash, capsys):
    write_log(GeneratorConfig(events=50, seed=1), tmp_path / "logs", "jsonl")
    with pytest.raises(SystemExit, match=r"adclick replay: --input '.*logs/?' is a directory: name its files"):
        replay_run(tmp_path, f"{tmp_path / 'logs'}{slash}")
    assert not (tmp_path / "out.db").exists()


def parse_file(path):
    """(clicks, dead letters as (offset, reason)) of one file read and parsed as a replay does."""
    pipeline = TestPipeline()
    parsed = pipeline | ReadRawLogs([str(path)]) | ParseClicks()
    return pipeline, parsed.valid | beam.FlatMap(rows, Click), parsed[DEAD_LETTER] | beam.Map(
        lambda letter: (letter.offset, letter.reason))


def test_whitespace_only_lines_are_empty_lines_not_records(tmp_path):
    lines = [b'{"event_id":"e1","ad_id":"a","click_ts":1767225600000}', b" ", b"\t\t", b"  \r", b"\r",
             b" \t {}", b'{"event_id":"e2","ad_id":"a","click_ts":1767225600000}', b" \x0c "]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\n")
    pipeline, clicks, letters = parse_file(path)
    assert_that(clicks | beam.Map(lambda click: click.event_id), equal_to(["e1", "e2"]), label="Clicks")
    # "{}" lacks fields; a form feed is not JSON whitespace, so that line is a record, and not JSON
    assert_that(letters, equal_to([(6, "missing_field"), (8, "invalid_json")]), label="DeadLetters")
    result = pipeline.run()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert (counters["read"], counters["valid"], counters["malformed"]) == (4, 2, 2)


@pytest.mark.parametrize("name, write", [("a.jsonl", lambda path, data: path.write_bytes(data)),
                                         ("a.jsonl.gz", lambda path, data: path.write_bytes(gzip.compress(data)))])
def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_line(tmp_path, name, write):
    line = b'{"event_id":"e%d","ad_id":"a","click_ts":1767225600000}'
    path = tmp_path / name
    write(path, b"\xef\xbb\xbf" + line % 1 + b"\n\xef\xbb\xbf" + line % 2 + b"\n")
    pipeline, clicks, letters = parse_file(path)
    assert_that(clicks | beam.Map(lambda click: click.event_id), equal_to(["e1"]), label="Clicks")
    assert_that(letters, equal_to([(2, "invalid_json")]), label="DeadLetters")  # a BOM inside a file is no BOM
    pipeline.run()


TIMESTAMP_SCHEMA = fastavro.parse_schema({"type": "record", "name": "Click", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "ad_id", "type": "string"},
    {"name": "click_ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "micros", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]}]})


def test_avro_timestamp_millis_is_a_click_ts(tmp_path):
    records = [{"event_id": "e1", "ad_id": "a", "click_ts": T0 + 123, "micros": None},
               {"event_id": "e2", "ad_id": "a", "click_ts": 946_684_799_999, "micros": None},  # 1999: out of range
               {"event_id": "e3", "ad_id": "a", "click_ts": 4_102_444_799_999, "micros": T0 * 1000}]
    with open(tmp_path / "a.avro", "wb") as handle:
        fastavro.writer(handle, TIMESTAMP_SCHEMA, records)
    pipeline, clicks, letters = parse_file(tmp_path / "a.avro")
    assert_that(clicks | beam.Map(lambda click: (click.event_id, click.click_ts)),
                equal_to([("e1", T0 + 123), ("e3", 4_102_444_799_999)]), label="Clicks")
    assert_that(letters, equal_to([(2, "out_of_range")]), label="DeadLetters")
    pipeline.run()


@pytest.mark.parametrize("unit, per_ms", [("ms", 1), ("us", 1_000), ("ns", 1_000_000)])
@pytest.mark.parametrize("tz", [None, "UTC", "+05:30"])
def test_parquet_timestamp_columns_are_a_click_ts(tmp_path, unit, per_ms, tz):
    """Any unit, with a zone or none (then UTC); the range rules of epoch ms."""
    values = [(T0 + 123) * per_ms + per_ms - 1, 946_684_800_000 * per_ms - 1, 4_102_444_800_000 * per_ms, 2 ** 62,
              None]
    table = pa.table({"event_id": [f"e{i}" for i in range(len(values))], "ad_id": ["a"] * len(values),
                      "click_ts": pa.array(values, pa.int64()).cast(pa.timestamp(unit, tz)),
                      "seen_at": pa.array([1_767_225_600_123_456_789] * len(values), pa.timestamp("ns"))})
    pq.write_table(table, tmp_path / "a.parquet")
    pipeline, clicks, letters = parse_file(tmp_path / "a.parquet")
    assert_that(clicks | beam.Map(lambda click: (click.event_id, click.click_ts)), equal_to([("e0", T0 + 123)]),
                label="Clicks")
    assert_that(letters, equal_to([(-1, "out_of_range")] * 3 + [(-1, "missing_field")]), label="DeadLetters")
    pipeline.run()
