import gzip
import json

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, strategies as st

from sources.files import ReadRawLogs, check_patterns, format_of, runs_of_lines
from transforms.records import RawBatch, RawLines, RawRecord

RECORDS = [
    {"event_id": "e1", "ad_id": "a1", "click_ts": 1767225600000, "country": "US"},
    {"event_id": "e2", "ad_id": "a2", "click_ts": 1767225660000, "country": None},
]


def chunked(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def read_lines(chunks, max_bytes):
    """(line number, line, full length) of every record, as the reader's runs and the parser's split have them."""
    found = []
    for first_line, data, oversize in runs_of_lines(chunks, max_bytes):
        numbers, lines, cut = RawLines("f", first_line, data, oversize).lines(max_bytes)
        found += [(n, line, cut.get(i, len(line))) for i, (n, line) in enumerate(zip(numbers, lines))]
    return found


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       st.integers(1, 50), st.integers(1, 30))
def test_every_line_is_read_across_chunk_boundaries(lines, chunk_size, max_bytes):
    data = b"\n".join(lines)
    expected = []
    for number, line in enumerate(lines, 1):
        if line.endswith(b"\r"):
            line = line[:-1]  # a CR before a newline (or the end) is no part of the line
        if line:
            expected.append((number, line[:max_bytes], len(line)))
    assert read_lines(chunked(data, chunk_size), max_bytes) == expected


def test_a_line_longer_than_the_limit_keeps_a_prefix_and_its_full_length():
    data = b"x" * 5000 + b"\r\n{}\n"
    assert read_lines(chunked(data, 7), max_bytes=100) == [(1, b"x" * 100, 5000), (2, b"{}", 2)]
    assert read_lines([data], max_bytes=100) == [(1, b"x" * 100, 5000), (2, b"{}", 2)]


def test_empty_lines_are_no_records_but_keep_their_numbers():
    assert read_lines([b"a\n\n\r\nb\n"], 100) == [(1, b"a", 1), (4, b"b", 1)]


def test_format_of_by_extension():
    patterns = ("a/*.avro", "b.PARQUET", "c.jsonl.gz", "d*")
    assert [format_of(pattern) for pattern in patterns] == ["avro", "parquet", "jsonl", "jsonl"]


def test_a_pattern_matching_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        check_patterns([str(tmp_path / "nothing-*.jsonl")])


@pytest.mark.parametrize("suffix", ["", "/"])
def test_a_directory_is_a_clear_error_not_all_its_files(tmp_path, suffix):
    """Beam matches 'dir/' as every file in it; 'dir' as the directory itself, which cannot be read."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_bytes(b"{}\n")
    with pytest.raises(ValueError, match="is a directory: name its files with a pattern"):
        check_patterns([str(tmp_path / "logs") + suffix])
    check_patterns([str(tmp_path / "logs" / "*")])


def read_all(patterns):
    """(source file name, offset, payload as a dict) of every record the sources yield."""
    def comparable(element):
        if isinstance(element, RawLines):
            numbers, lines, _ = element.lines()
            records = [RawRecord(line, element.source, n) for n, line in zip(numbers, lines)]
        elif isinstance(element, RawBatch):
            payloads = element.payloads
            payloads = payloads.to_pylist() if isinstance(payloads, pa.Table) else payloads
            records = [RawRecord(p, element.source, o) for o, p in zip(element.offsets, payloads)]
        else:
            records = [element]
        for raw in records:
            payload = raw.payload if isinstance(raw.payload, dict) else json.loads(raw.payload)
            yield raw.source.rsplit("/", 1)[-1], raw.offset, json.dumps(payload, sort_keys=True)
    pipeline = TestPipeline()
    records = pipeline | ReadRawLogs(patterns) | beam.FlatMap(comparable)
    return pipeline, records


def test_jsonl_gzip_avro_and_parquet_yield_the_same_records(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\n\n".join(json.dumps(r).encode() for r in RECORDS) + b"\n\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as handle:
        handle.write(b"\r\n".join(json.dumps(r).encode() for r in RECORDS))
    schema = fastavro.parse_schema({"type": "record", "name": "Click", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "ad_id", "type": "string"},
        {"name": "click_ts", "type": "long"}, {"name": "country", "type": ["null", "string"]}]})
    with open(tmp_path / "c.avro", "wb") as handle:
        fastavro.writer(handle, schema, RECORDS)
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")

    def key(name, offset, record):
        return name, offset, json.dumps(record, sort_keys=True)

    expected = ([key("a.jsonl", 2 * i + 1, r) for i, r in enumerate(RECORDS)]
                + [key("b.jsonl.gz", i + 1, r) for i, r in enumerate(RECORDS)]
                + [key("c.avro", i + 1, r) for i, r in enumerate(RECORDS)] + [key("d.parquet", -1, r) for r in RECORDS])
    pipeline, records = read_all([str(tmp_path / "*.jsonl*"), str(tmp_path / "*.avro"), str(tmp_path / "*.parquet")])
    assert_that(records, equal_to(expected))
    pipeline.run()
