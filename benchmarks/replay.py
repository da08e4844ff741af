"""`adclick bench`: the replay against DuckDB on the same generated log, same run, same answers.

DuckDB is what a user would reach for instead of a pipeline; the replay has to be
within a small factor of it while doing more (validation with dead letters, exact
dedup, three aggregates, an idempotent sink).
"""

import argparse
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import duckdb
import psutil

from loadgen.generator import GeneratorConfig, write_log
from transforms.validation import COUNTRY_CODES

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
    started = time.perf_counter()
    rows = duckdb.connect().sql(DUCKDB_COUNTS.format(reader=reader, countries=countries, octet=IPV4_OCTET)).fetchall()
    return time.perf_counter() - started, {(ad, start): clicks for ad, start, clicks in rows}


def sqlite_counts(db: str) -> dict:
    connection = sqlite3.connect(db)
    return {(ad, start): clicks for ad, start, clicks in connection.execute("SELECT * FROM clicks_per_minute")}


def run_measured(command) -> tuple:
    """Runs a command; returns (wall seconds, peak RSS in bytes of its whole process tree)."""
    started = time.perf_counter()
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
    return time.perf_counter() - started, peak


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adclick bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="unique clicks to generate (default 1M)")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "parquet"))
    parser.add_argument("--files", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hot-ad-share", type=float, help="the top ad's share of clicks (default: Zipf s=1.1)")
    parser.add_argument("--workdir", help="keep the log and database here (default: a temporary directory)")
    parser.add_argument("--profile", metavar="PATH.html|PATH.txt",
                        help="also profile the replay with pyinstrument (slower: time it without)")
    return parser


def run(argv=None) -> dict:
    args, replay_args = parser().parse_known_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(args.workdir or scratch)
        manifest, pattern = _log(args, work)
        duck_seconds, duck = duckdb_counts(pattern, args.format)
        wall, peak_rss, summary, replay_counts = _replay(args, replay_args, work, pattern)
    lines = manifest["read"]
    result = {
        "events": args.events, "lines": lines, "format": args.format, "cpus": os.cpu_count(),
        "duckdb_seconds": round(duck_seconds, 3), "duckdb_lines_per_s": round(lines / duck_seconds),
        "replay_seconds": summary["seconds"], "replay_lines_per_s": round(lines / summary["seconds"]),
        "replay_wall_seconds": round(wall, 2), "replay_peak_rss_mb": round(peak_rss / 2**20),
        "ratio_to_duckdb": round(duck_seconds / summary["seconds"], 3),
        "same_counts": replay_counts == duck,
        "balanced": summary["balanced"],
    }
    differing = {key for key in replay_counts.keys() | duck.keys() if replay_counts.get(key) != duck.get(key)}
    _print(result, differing)
    return result


def _log(args, work: pathlib.Path):
    """(the manifest, the input pattern) of the generated log, generated unless the workdir has it."""
    log_dir = work / f"log-{args.events}-{args.format}{f'-hot{args.hot_ad_share}' if args.hot_ad_share else ''}"
    config = GeneratorConfig(args.events, minutes=max(10, args.events // 20_000), hot_ad_share=args.hot_ad_share)
    if not (log_dir / "manifest.json").exists():
        print(f"generating {args.events:,} clicks into {log_dir} ...", flush=True)
        write_log(config, log_dir, args.format, files=args.files)
    return json.loads((log_dir / "manifest.json").read_text()), str(log_dir / "clicks-*")


def _replay(args, replay_args, work: pathlib.Path, pattern: str):
    """(wall seconds, peak RSS, summary, per-(ad, minute) counts) of `adclick replay` into a fresh database."""
    db = work / "bench.db"
    for stale in work.glob("bench.db*"):
        stale.unlink()
    summary_path = work / "summary.json"
    profiler = ["-m", "pyinstrument", "-o", args.profile] if args.profile else []
    wall, peak_rss = run_measured([
        sys.executable, *profiler, "-m", "runners.cli", "replay", "--input", pattern, "--sink", f"sqlite:///{db}",
        "--dead-letter", str(work / "dead-letters.jsonl"), "--summary", str(summary_path), *replay_args])
    return wall, peak_rss, json.loads(summary_path.read_text()), sqlite_counts(str(db))


def _print(result: dict, differing: set) -> None:
    print(f"{result['lines']:,} lines ({result['format']}), {result['cpus']} CPUs")
    print(f"DuckDB  {result['duckdb_seconds']:8.2f} s  {result['duckdb_lines_per_s']:>10,} lines/s")
    print(f"replay  {result['replay_seconds']:8.2f} s  {result['replay_lines_per_s']:>10,} lines/s "
          f"(wall {result['replay_wall_seconds']:.1f} s with start-up; peak RSS {result['replay_peak_rss_mb']:,} MB)")
    print(f"replay / DuckDB throughput: {result['ratio_to_duckdb']:.3f}")
    print("same per-(ad, minute) counts: " + ("yes" if not differing else f"NO, {len(differing)} differ"))
