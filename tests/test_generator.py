"""The load generator: reproducible bytes, honest counts, and a truth that meets SPEC.md.

Validity is judged twice: by `tests.spec_reading.spec_click`, a plain reading of SPEC.md's event
table written independently of `transforms.parse`, and by `transforms.parse.validate`.
"""

import collections
import gzip
import ipaddress
import json
import statistics

import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest

from loadgen.generator import MALFORMED_KINDS, GeneratorConfig, generate, write_log
from runners import generate as generate_command
from tests.spec_reading import END_MS, spec_click
from transforms.records import Click
from transforms.validation import Malformed, validate

SMALL = GeneratorConfig(events=3_000, ads=100, users=500, malformed_rate=0.03, late_rate=0.02)
FIELDS = ("event_id", "ad_id", "click_ts", "user_id", "ip", "country")


def first_occurrences(records):
    """Unique valid events in order of first appearance, and how many valid records repeated one."""
    unique, repeats = {}, 0
    for record in records:
        event = spec_click(record)
        if event is None:
            continue
        if event["event_id"] in unique:
            repeats += 1
        else:
            unique[event["event_id"]] = event
    return list(unique.values()), repeats


@pytest.fixture(scope="module")
def log():
    return generate(SMALL)


def test_same_seed_gives_identical_bytes(log):
    again = generate(SMALL)
    assert again.lines == log.lines
    assert again.truth == log.truth


def test_different_seed_gives_a_different_log(log):
    other = generate(GeneratorConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert other.lines != log.lines
    assert {e["event_id"] for e in other.truth}.isdisjoint(e["event_id"] for e in log.truth)


def test_counts_add_up_and_match_an_independent_count(log):
    assert log.read == len(log.lines) == log.unique + log.duplicates + log.malformed
    assert log.duplicates == round(SMALL.duplicate_rate * SMALL.events) > 0
    assert log.malformed == round(SMALL.malformed_rate * SMALL.events) > 0
    unique, repeats = first_occurrences(log.lines)
    assert (len(unique), repeats) == (log.unique, log.duplicates)
    assert sum(spec_click(line) is None for line in log.lines) == log.malformed


def test_truth_is_the_unique_valid_events_in_first_emission_order(log):
    assert len({event["event_id"] for event in log.truth}) == len(log.truth) == SMALL.events
    unique, _ = first_occurrences(log.lines)
    assert log.truth == unique
    for event in log.truth:
        assert tuple(event) == FIELDS
        assert spec_click(json.dumps(event).encode()) == event


def test_resends_are_byte_identical_copies_emitted_later(log):
    first = {}
    for line in log.lines:
        event = spec_click(line)
        if event is not None:
            assert first.setdefault(event["event_id"], line) == line


def test_parse_agrees_with_the_generator(log):
    for line in log.malformed_lines:
        assert isinstance(validate(line), Malformed), line
    by_id = {event["event_id"]: event for event in log.truth}
    for line, event_time in log.emissions():
        if event_time is None:
            continue
        click = validate(line)
        assert isinstance(click, Click), (line, click)
        assert click._asdict() == {**by_id[click.event_id], "receive_ts": None}
        assert click.click_ts == event_time


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_every_malformed_kind_is_malformed_and_one_line(kind):
    rng = np.random.default_rng(1)
    event = {"event_id": "5f0c1d1e-8b7a-4c3e-9d2f-0a1b2c3d4e5f", "ad_id": "ad-000042", "click_ts": 1_767_225_600_123,
             "user_id": "user-0000042", "ip": "2a00:1450::1", "country": "DE"}
    for _ in range(20):
        line = MALFORMED_KINDS[kind](event, rng)
        assert b"\n" not in line and b"\r" not in line
        assert spec_click(line) is None, line
        assert isinstance(validate(line), Malformed), line


def test_emissions_carry_event_time_and_none_for_malformed(log):
    emissions = list(log.emissions())
    assert [line for line, _ in emissions] == log.lines
    assert [line for line, ts in emissions if ts is None] == log.malformed_lines
    assert all(ts == spec_click(line)["click_ts"] for line, ts in emissions if ts is not None)


def test_stream_is_out_of_order_with_late_events(log):
    lateness, newest = [], 0
    for _, ts in log.emissions():
        if ts is not None:
            lateness.append(newest - ts)
            newest = max(newest, ts)
    assert sum(lag > 0 for lag in lateness) > len(lateness) / 10
    late = [lag for lag in lateness if lag > SMALL.disorder_seconds * 1000]
    assert len(late) >= SMALL.events * SMALL.late_rate / 3
    assert max(late) <= SMALL.late_max_seconds * 1000
    times = [event["click_ts"] for event in log.truth]
    assert SMALL.start_ms <= min(times) and max(times) < SMALL.start_ms + SMALL.minutes * 60_000


def test_the_mix_of_values_is_realistic(log):
    raw = [json.loads(line) for line in log.lines if spec_click(line) is not None]
    stamps = [record["click_ts"] for record in raw if isinstance(record["click_ts"], str)]
    assert any(s.endswith("Z") for s in stamps) and any(s.endswith("+02:00") for s in stamps)
    assert 0.05 < len(stamps) / len(raw) < 0.15
    assert any("user_id" not in record for record in raw) and any(record.get("ip", 1) is None for record in raw)
    ips = [ipaddress.ip_address(event["ip"]) for event in log.truth if event["ip"]]
    assert {ip.version for ip in ips} == {4, 6}
    countries = collections.Counter(event["country"] for event in log.truth if event["country"])
    assert len(countries) >= 10 and countries.most_common(1)[0][0] == "US"
    assert len({event["user_id"] for event in log.truth}) > SMALL.users / 2


def test_ads_follow_zipf(log):
    clicks = collections.Counter(event["ad_id"] for event in log.truth)
    per_ad = [clicks.get(ad, 0) for ad in {f"ad-{k:06d}" for k in range(SMALL.ads)}]
    assert len(clicks) <= SMALL.ads
    assert max(per_ad) > 10 * statistics.median(per_ad)
    assert max(per_ad) / SMALL.events > 0.1


@pytest.mark.parametrize("ads", [10, 1_000, 100_000])
def test_hot_ad_share_puts_that_share_of_clicks_on_the_top_ad(ads):
    config = GeneratorConfig(events=20_000, ads=ads, users=500, hot_ad_share=0.3)
    s = config.effective_zipf_exponent
    assert abs(1 / sum(rank ** -s for rank in range(1, ads + 1)) - 0.3) < 1e-9
    clicks = collections.Counter(event["ad_id"] for event in generate(config).truth)
    assert abs(clicks.most_common(1)[0][1] / config.events - 0.3) < 0.015


def test_without_a_hot_ad_share_the_exponent_decides():
    assert GeneratorConfig(zipf_exponent=0.9).effective_zipf_exponent == 0.9
    assert generate(GeneratorConfig(events=500, hot_ad_share=None)).lines == generate(GeneratorConfig(events=500)).lines


def test_generate_command_takes_a_hot_ad_share(tmp_path):
    generate_command.run(["--out", str(tmp_path), "--events", "5000", "--ads", "50", "--hot-ad-share", "0.3"])
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    top = collections.Counter(event["ad_id"] for event in truth).most_common(1)[0][1]
    assert abs(top / len(truth) - 0.3) < 0.03
    assert json.loads((tmp_path / "manifest.json").read_bytes())["config"]["hot_ad_share"] == 0.3


def _read_jsonl(out, manifest):
    lines = []
    for name in manifest["files"]:
        data = (out / name).read_bytes()
        lines += (gzip.decompress(data) if name.endswith(".gz") else data).splitlines()
    return lines


@pytest.mark.parametrize("compressed", [False, True])
def test_jsonl_files_hold_the_log_in_order(tmp_path, log, compressed):
    manifest = write_log(SMALL, tmp_path, files=3, gzip=compressed)
    suffix = ".jsonl.gz" if compressed else ".jsonl"
    assert manifest["files"] == [f"clicks-{i:05d}{suffix}" for i in range(3)]
    assert sorted(p.name for p in tmp_path.glob("clicks-*")) == manifest["files"]
    assert _read_jsonl(tmp_path, manifest) == log.lines
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert truth == log.truth
    saved = json.loads((tmp_path / "manifest.json").read_bytes())
    assert saved == manifest
    assert (saved["read"], saved["unique"], saved["duplicates"], saved["malformed"]) == (
        log.read, log.unique, log.duplicates, log.malformed)
    assert saved["config"]["seed"] == SMALL.seed


def _read_typed(out, manifest):
    records = []
    for name in manifest["files"]:
        if manifest["format"] == "avro":
            with open(out / name, "rb") as avro:
                records += list(fastavro.reader(avro))
        else:
            records += pq.read_table(out / name).to_pylist()
    return records


@pytest.mark.parametrize("fmt", ["avro", "parquet"])
def test_typed_files_give_the_same_truth(tmp_path, log, fmt):
    manifest = write_log(SMALL, tmp_path, fmt=fmt, files=2)
    records = _read_typed(tmp_path, manifest)
    assert all(tuple(record) == FIELDS for record in records)
    unique, repeats = first_occurrences(records)
    assert unique == log.truth
    malformed = sum(spec_click(record) is None for record in records)
    assert (manifest["read"], manifest["unique"], manifest["duplicates"], manifest["malformed"]) == (
        len(records), log.unique, repeats, malformed)
    assert manifest["read"] == manifest["unique"] + manifest["duplicates"] + manifest["malformed"]
    assert 0 < malformed < log.malformed
    assert all(isinstance(validate(record), Malformed) == (spec_click(record) is None) for record in records)
    if fmt == "parquet":
        assert all(record["click_ts"] is None or isinstance(record["click_ts"], int) for record in records)
    assert [json.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()] == log.truth


@pytest.mark.parametrize("fmt, compressed", [("jsonl", True), ("avro", False), ("parquet", False)])
def test_written_files_are_reproducible(tmp_path, fmt, compressed):
    config = GeneratorConfig(events=500, ads=20, users=50)
    first = write_log(config, tmp_path / "a", fmt=fmt, gzip=compressed)
    write_log(config, tmp_path / "b", fmt=fmt, gzip=compressed)
    for name in first["files"] + ["truth.jsonl", "manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stale_files_of_another_log_are_refused(tmp_path):
    config = GeneratorConfig(events=100, ads=10, users=10)
    write_log(config, tmp_path, files=2)
    with pytest.raises(FileExistsError, match="clicks-00001.jsonl"):
        write_log(config, tmp_path, files=1)
    write_log(config, tmp_path, files=2)


@pytest.mark.parametrize("kwargs", [{"fmt": "csv"}, {"fmt": "avro", "gzip": True}, {"files": 0}])
def test_bad_write_options_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_log(GeneratorConfig(events=10), tmp_path, **kwargs)


@pytest.mark.parametrize("overrides", [
    {"events": 0}, {"duplicate_rate": 1.5}, {"malformed_rate": -0.1}, {"start_ms": 0},
    {"start_ms": END_MS - 60_000, "minutes": 2}, {"disorder_seconds": 400}, {"countries": ()},
    {"hot_ad_share": 1.0}, {"ads": 1_000, "hot_ad_share": 0.0009}, {"ads": 1, "hot_ad_share": 0.5},
])
def test_config_rejects_what_would_break_the_truth(overrides):
    with pytest.raises(ValueError):
        GeneratorConfig(**overrides)
