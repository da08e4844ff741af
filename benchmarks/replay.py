"""`adclick bench`: the replay against DuckDB on the same generated log, same run, same answers.

DuckDB is what a user would reach for instead of a pipeline; the replay has to be
within a small factor of it while doing more (validation with dead letters, exact
dedup, three aggregates, an idempotent sink). Every run checks the replay's
per-(ad, minute) counts against the generator's ground truth, and against DuckDB's
unless `--skip-duckdb` (for a memory run whose baseline would not fit). A log of
more than CHUNK_EVENTS clicks is generated in chunks of that size (seeds and
minutes of their own, one after the other), since the generator draws a log in
memory: `--events 100000000` is about 17 GB of JSON lines.
"""

import argparse
import collections
import dataclasses
import json
import os
import pathlib
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import duckdb
import orjson
import psutil

from loadgen.generator import MINUTE_MS, GeneratorConfig, write_log
from transforms.validation import COUNTRY_CODES

CHUNK_EVENTS = 5_000_000  # about 5 GB of the generator's memory each
TRUTH_COUNTS = "truth-counts.json"
IPV4_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0..255, no leading zero
# The SPEC's rules as far as SQL goes: the baseline must count what the replay counts.
DUCKDB_COUNTS = """
WITH raw AS (
    SELECT * FROM {reader}
), strings AS (
    SELECT CASE WHEN json_type(event_id) = 'VARCHAR' THEN event_id ->> '$' END AS event_id,
           CASE WHEN json_type(ad_id) = 'VARCHAR' THEN ad_id ->> '$' END AS ad_id,
           CASE WHEN json_type(click_ts) IN ('BIGINT', 'UBIGINT') THEN TRY_CAST(click_ts AS BIGINT)
                WHEN json_type(click_ts) = 'VARCHAR'
                     AND regexp_matches(click_ts ->> '$', '(Z|[+-][0-9]{{2}}:?[0-9]{{2}})$')
                THEN epoch_ms(TRY_CAST(click_ts ->> '$' AS TIMESTAMPTZ)) END AS ts,
           coalesce(json_type(user_id), 'NULL') IN ('NULL', 'VARCHAR') AND length(user_id ->> '$') <= 256
               IS NOT FALSE AS user_ok,
           CASE WHEN coalesce(json_type(ip), 'NULL') = 'NULL' THEN 'none' WHEN json_type(ip) = 'VARCHAR'
                THEN ip ->> '$' END AS ip,
           CASE WHEN coalesce(json_type(country), 'NULL') = 'NULL' THEN 'none' WHEN json_type(country) = 'VARCHAR'
                THEN upper(country ->> '$') END AS country
    FROM raw
), valid AS (
    SELECT event_id, ad_id, ts FROM strings
    WHERE length(event_id) BETWEEN 1 AND 256 AND length(ad_id) BETWEEN 1 AND 256
      AND ts >= 946684800000 AND ts < 4102444800000 AND user_ok
      AND (country = 'none' OR country IN ({countries}))
      AND (ip = 'none' OR regexp_full_match(ip, '({octet}\\.){{3}}{octet}')
           OR regexp_full_match(ip, '[0-9a-fA-F:.]*:[0-9a-fA-F:.]*'))
), first_copies AS (
    SELECT arg_min(ad_id, ts) AS ad_id, min(ts) AS ts FROM valid GROUP BY event_id
)
SELECT ad_id, ts // 60000 * 60000 AS window_start, count(*) AS clicks FROM first_copies GROUP BY ALL
"""
JSONL_READER = ("read_json('{pattern}', format='newline_delimited', ignore_errors=true, columns={{event_id: 'JSON', "
                "ad_id: 'JSON', click_ts: 'JSON', user_id: 'JSON', ip: 'JSON', country: 'JSON'}})")
PARQUET_READER = ("(SELECT to_json(event_id) AS event_id, to_json(ad_id) AS ad_id, to_json(click_ts) AS click_ts, "
                  "to_json(user_id) AS user_id, to_json(ip) AS ip, to_json(country) AS country "
                  "FROM read_parquet('{pattern}'))")


def duckdb_counts(pattern: str, fmt: str) -> tuple:
    reader = (JSONL_READER if fmt == "jsonl" else PARQUET_READER).format(pattern=pattern)
    countries = ", ".join(f"'{code}'" for code in sorted(COUNTRY_CODES))
    started, cpu = time.perf_counter(), _cpu_seconds(resource.RUSAGE_SELF)
    rows = duckdb.connect().sql(DUCKDB_COUNTS.format(reader=reader, countries=countries, octet=IPV4_OCTET)).fetchall()
    return (time.perf_counter() - started, _cpu_seconds(resource.RUSAGE_SELF) - cpu,
            {(ad, start): clicks for ad, start, clicks in rows})


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def sqlite_counts(db: str) -> dict:
    connection = sqlite3.connect(db)
    return {(ad, start): clicks for ad, start, clicks in connection.execute("SELECT * FROM clicks_per_minute")}


def run_measured(command) -> tuple:
    """Runs a command; returns (wall seconds, peak RSS in bytes of its whole process tree, CPU seconds of that
    tree: on a shared machine less swayed by others' load than the wall time)."""
    started, cpu = time.perf_counter(), _cpu_seconds(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command)
    root, peak = psutil.Process(process.pid), 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    stop.set()
    sampler.join()
    if code:
        sys.exit(f"adclick bench: {' '.join(command)} failed with exit code {code}")
    return time.perf_counter() - started, peak, _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adclick bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="unique clicks to generate (default 1M)")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "parquet"))
    parser.add_argument("--files", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hot-ad-share", type=float, help="the top ad's share of clicks (default: Zipf s=1.1)")
    parser.add_argument("--iso-timestamp-rate", type=float, default=GeneratorConfig().iso_timestamp_rate,
                        help="share of click_ts written as ISO-8601 strings (default: %(default)s)")
    parser.add_argument("--skip-duckdb", action="store_true",
                        help="no DuckDB baseline (a memory run): the counts are checked against the truth only")
    parser.add_argument("--workdir", help="keep the log and database here (default: a temporary directory)")
    parser.add_argument("--profile", metavar="PATH.html|PATH.txt",
                        help="also profile the replay with pyinstrument (slower: time it without)")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="time DuckDB and the replay N times on the same log, one after the other, and report "
                             "each run's ratio and their median (a shared machine's load sways single runs)")
    return parser


def run(argv=None) -> dict:
    """The last run's figures; with `--runs`, every run's ratio and load and their median too."""
    args, replay_args = parser().parse_known_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(args.workdir or scratch)
        manifest, pattern, truth = _log(args, work)
        for number in range(1, max(1, args.runs) + 1):
            if args.runs > 1:
                print(f"run {number}/{args.runs}, load average {os.getloadavg()[0]:.2f}", flush=True)
            runs.append(_timed_run(args, replay_args, work, pattern, manifest, truth))
    result = runs[-1]
    if args.runs > 1:
        result["runs"] = [{key: run[key] for key in RUN_FIGURES} for run in runs]
        _print_runs(result["runs"])
    return result


RUN_FIGURES = ("duckdb_seconds", "replay_seconds", "ratio_to_duckdb", "duckdb_cpu_seconds", "replay_cpu_seconds",
               "load_before", "load_average")


def _timed_run(args, replay_args, work: pathlib.Path, pattern: str, manifest: dict, truth: dict) -> dict:
    """DuckDB, then the replay, over the same files; exits if the replay's counts differ from the truth or DuckDB's."""
    load_before = os.getloadavg()[0]
    duck_seconds, duck_cpu, duck = (None, None, None) if args.skip_duckdb else duckdb_counts(pattern, args.format)
    wall, peak_rss, cpu, summary, replay_counts = _replay(args, replay_args, work, pattern)
    lines = manifest["read"]
    result = {
        "events": args.events, "lines": lines, "format": args.format, "cpus": os.cpu_count(),
        "iso_timestamp_rate": args.iso_timestamp_rate, "hot_ad_share": args.hot_ad_share,
        "input_gb": round(manifest.get("bytes", 0) / 1e9, 2),
        "duckdb_seconds": duck_seconds and round(duck_seconds, 3),
        "duckdb_lines_per_s": duck_seconds and round(lines / duck_seconds),
        "replay_seconds": summary["seconds"], "replay_lines_per_s": round(lines / summary["seconds"]),
        "replay_wall_seconds": round(wall, 2), "replay_peak_rss_mb": round(peak_rss / 2**20),
        "duckdb_cpu_seconds": duck_cpu and round(duck_cpu, 2), "replay_cpu_seconds": round(cpu, 2),
        "ratio_to_duckdb": duck_seconds and round(duck_seconds / summary["seconds"], 3),
        "same_counts": replay_counts == truth and (duck is None or replay_counts == duck),
        "same_counts_as_truth": replay_counts == truth,
        "same_counts_as_duckdb": None if duck is None else replay_counts == duck,
        "balanced": summary["balanced"],
        "load_before": load_before,
        "load_average": list(os.getloadavg()),
    }
    _print(result, _differing(replay_counts, truth), duck and _differing(replay_counts, duck))
    if not result["same_counts"]:
        sys.exit("adclick bench: the replay's per-(ad, minute) counts differ (above)")
    return result


def _print_runs(runs: list) -> None:
    print(f"{len(runs)} runs (1-minute load before, after):")
    for run in runs:
        ratio = "" if run["ratio_to_duckdb"] is None else f"  replay / DuckDB {run['ratio_to_duckdb']:.3f}"
        duck = "" if run["duckdb_seconds"] is None else f"DuckDB {run['duckdb_seconds']:.2f} s  "
        print(f"  {duck}replay {run['replay_seconds']:.2f} s{ratio}  load {run['load_before']:.2f}, "
              f"{run['load_average'][0]:.2f}")
    ratios = sorted(run["ratio_to_duckdb"] for run in runs if run["ratio_to_duckdb"] is not None)
    if ratios:
        print(f"replay / DuckDB throughput: median {statistics.median(ratios):.3f}, "
              f"{ratios[0]:.3f}-{ratios[-1]:.3f} over {len(ratios)} runs")


def _differing(ours: dict, theirs: dict) -> set:
    return {key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)}


def _log(args, work: pathlib.Path):
    """(the manifest, the input pattern, the truth's per-(ad, minute) counts) of the generated log, generated
    unless the workdir has it."""
    name = f"log-{args.events}-{args.format}"
    if args.hot_ad_share:
        name += f"-hot{args.hot_ad_share}"
    if args.iso_timestamp_rate != GeneratorConfig().iso_timestamp_rate:
        name += f"-iso{args.iso_timestamp_rate}"
    log_dir = work / name
    config = GeneratorConfig(args.events, minutes=max(10, args.events // 20_000), hot_ad_share=args.hot_ad_share,
                             iso_timestamp_rate=args.iso_timestamp_rate)
    if not (log_dir / "manifest.json").exists():
        print(f"generating {args.events:,} clicks into {log_dir} ...", flush=True)
        if args.events <= CHUNK_EVENTS:
            write_log(config, log_dir, args.format, files=args.files)
            _truth_counts(log_dir)
        else:
            _write_chunked_log(config, log_dir, args.format, args.files)
    manifest = json.loads((log_dir / "manifest.json").read_text())
    truth = {(ad, start): clicks for ad, start, clicks in json.loads((log_dir / TRUTH_COUNTS).read_text())}
    return manifest, str(log_dir / "clicks-*"), truth


def _truth_counts(log_dir: pathlib.Path) -> collections.Counter:
    """The generator's truth counted per (ad, minute) into TRUTH_COUNTS, truth.jsonl removed (as large as the log);
    the log's size in bytes added to its manifest."""
    counts: collections.Counter = collections.Counter()
    with open(log_dir / "truth.jsonl", "rb") as truth:
        for line in truth:
            click = orjson.loads(line)
            counts[click["ad_id"], click["click_ts"] // MINUTE_MS * MINUTE_MS] += 1
    (log_dir / "truth.jsonl").unlink()
    (log_dir / TRUTH_COUNTS).write_bytes(orjson.dumps([[ad, start, n] for (ad, start), n in counts.items()]))
    manifest = json.loads((log_dir / "manifest.json").read_text())
    manifest["bytes"] = sum((log_dir / name).stat().st_size for name in manifest["files"])
    (log_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return counts


def _write_chunked_log(config: GeneratorConfig, log_dir: pathlib.Path, fmt: str, files: int) -> None:
    """CHUNK_EVENTS clicks at a time, each chunk with its own seed and its own minutes after the last one's."""
    chunks = -(-config.events // CHUNK_EVENTS)
    totals = collections.Counter()
    counts: collections.Counter = collections.Counter()
    names = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for k in range(chunks):
        events = min(CHUNK_EVENTS, config.events - k * CHUNK_EVENTS)
        minutes = max(10, events // 20_000)
        chunk = dataclasses.replace(config, events=events, seed=config.seed + k, minutes=minutes,
                                    start_ms=config.start_ms + k * CHUNK_EVENTS // 20_000 * MINUTE_MS)
        part = log_dir / f"chunk-{k:03d}"
        manifest = write_log(chunk, part, fmt, files=max(1, files // chunks) if files >= chunks else 1)
        counts.update(_truth_counts(part))
        for name in manifest["files"]:
            (part / name).rename(log_dir / f"clicks-{k:03d}-{name[len('clicks-'):]}")
            names.append(f"clicks-{k:03d}-{name[len('clicks-'):]}")
        for key in ("read", "unique", "duplicates", "malformed"):
            totals[key] += manifest[key]
        for leftover in part.iterdir():
            leftover.unlink()
        part.rmdir()
        print(f"  chunk {k + 1}/{chunks}: {totals['read']:,} lines so far", flush=True)
    (log_dir / TRUTH_COUNTS).write_bytes(orjson.dumps([[ad, start, n] for (ad, start), n in counts.items()]))
    manifest = {"format": fmt, "files": names, "chunks": chunks, "chunk_events": CHUNK_EVENTS, **totals,
                "bytes": sum((log_dir / name).stat().st_size for name in names)}
    (log_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _replay(args, replay_args, work: pathlib.Path, pattern: str):
    """(wall seconds, peak RSS, CPU seconds, summary, per-(ad, minute) counts) of `adclick replay` into a fresh
    database (wall and CPU with start-up)."""
    db = work / "bench.db"
    for stale in work.glob("bench.db*"):
        stale.unlink()
    summary_path = work / "summary.json"
    profiler = ["-m", "pyinstrument", "-o", args.profile] if args.profile else []
    wall, peak_rss, cpu = run_measured([
        sys.executable, *profiler, "-m", "runners.cli", "replay", "--input", pattern, "--sink", f"sqlite:///{db}",
        "--dead-letter", str(work / "dead-letters.jsonl"), "--summary", str(summary_path), *replay_args])
    return wall, peak_rss, cpu, json.loads(summary_path.read_text()), sqlite_counts(str(db))


def _print(result: dict, from_truth: set, from_duckdb) -> None:
    print(f"{result['lines']:,} lines ({result['format']}, {result['input_gb']} GB), {result['cpus']} CPUs, "
          f"load average {' '.join(f'{load:.2f}' for load in result['load_average'])}")
    if result["duckdb_seconds"] is not None:
        print(f"DuckDB  {result['duckdb_seconds']:8.2f} s  {result['duckdb_lines_per_s']:>10,} lines/s "
              f"(CPU {result['duckdb_cpu_seconds']:.1f} s)")
    print(f"replay  {result['replay_seconds']:8.2f} s  {result['replay_lines_per_s']:>10,} lines/s "
          f"(wall {result['replay_wall_seconds']:.1f} s with start-up; CPU {result['replay_cpu_seconds']:.1f} s with "
          f"start-up; peak RSS {result['replay_peak_rss_mb']:,} MB)")
    if result["ratio_to_duckdb"] is not None:
        print(f"replay / DuckDB throughput: {result['ratio_to_duckdb']:.3f}")
    for name, differing in (("the truth", from_truth), ("DuckDB", from_duckdb)):
        if differing is not None:
            verdict = f"NO, {len(differing)} differ" if differing else "yes"
            print(f"same per-(ad, minute) counts as {name}: {verdict}")
