"""`adclick bench-api`: a sink's write rate and the query API's throughput and latency over HTTP, on
synthetic aggregates (Zipf-like counts, `--ads` ads x `--minutes` minutes, three countries each).

Writes go through the sink's own PTransform on the DirectRunner, as a replay writes them. The API is
a real `adclick serve` process on a free loopback port (its own CPU, not this one's); `--clients`
keep-alive connections (default 20) send each kind of query as fast as it answers, from one asyncio
loop whose client costs a few tens of microseconds a request.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from urllib.parse import urlencode

import apache_beam as beam

from sinks import sink_for
from transforms.records import MINUTE_MS, AdCount, Aggregates, FilterCount, TopAds

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
COUNTRIES = ("US", "IN", "BR")
CLIENTS = 20
_LISTENING = re.compile(rb"dashboard at http://(\S+?):(\d+)/dashboard/")


def synthetic_aggregates(ads: int, minutes: int, top_n: int = 100):
    """Per-ad, per-filter and top-N rows as AggregateClicks would emit them."""
    per_ad, per_filter, top_ads = [], [], []
    for m in range(minutes):
        window = T0 + m * MINUTE_MS
        counts = [(f"ad-{a:07d}", 1 + 10_000 // (1 + (a * 7 + m) % ads)) for a in range(ads)]
        per_ad += [AdCount(ad_id, window, clicks) for ad_id, clicks in counts]
        per_filter += [FilterCount(ad_id, window, f"country={country}", max(1, clicks // (k + 2)))
                       for ad_id, clicks in counts for k, country in enumerate(COUNTRIES)]
        top_ads.append(TopAds(window, tuple(sorted(counts, key=lambda c: (-c[1], c[0]))[:top_n])))
    return per_ad, per_filter, top_ads


def write(url: str, per_ad, per_filter, top_ads) -> float:
    """Seconds to write the aggregates through the sink's PTransform."""
    sink = sink_for(url)
    started = time.monotonic()
    with beam.Pipeline() as pipeline:
        Aggregates(pipeline | "PerAd" >> beam.Create(per_ad), pipeline | "PerFilter" >> beam.Create(per_filter),
                   pipeline | "TopAds" >> beam.Create(top_ads)) | "Sink" >> sink
    return time.monotonic() - started


def summary(seconds, wall: float, failures: int) -> dict:
    """Requests/s over the wall time, and latency percentiles (nearest rank) in ms."""
    ms = sorted(s * 1000 for s in seconds)

    def rank(q):
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)

    return {"requests": len(ms), "requests_per_second": round(len(ms) / wall),
            "p50_ms": round(statistics.median(ms), 2), "p95_ms": rank(0.95), "p99_ms": rank(0.99),
            "max_ms": round(ms[-1], 2), "not_200": failures}


async def _client(host: str, port: int, requests, headers: bytes, seconds: list, failed: list):
    """One keep-alive HTTP/1.1 connection sending `requests` (an iterator shared by every client) in turn."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for target in requests:
            started = time.perf_counter()
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: bench\r\n" + headers + b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            seconds.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                failed.append(head.split(b"\r\n", 1)[0])
    finally:
        writer.close()


async def _load(host: str, port: int, targets, clients: int, headers: bytes):
    seconds, failed = [], []
    shared = iter(targets)
    started = time.perf_counter()
    await asyncio.gather(*(_client(host, port, shared, headers, seconds, failed) for _ in range(clients)))
    return seconds, time.perf_counter() - started, failed


def load(host: str, port: int, targets, clients: int = CLIENTS, token: str = None) -> dict:
    """`targets` (path?query, bytes) sent over `clients` concurrent connections: their summary()."""
    headers = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    seconds, wall, failed = asyncio.run(_load(host, port, targets, clients, headers))
    return summary(seconds, wall, len(failed))


def queries(ads: int, minutes: int):
    """{name: a function of i giving the i-th request's path?query}."""
    last = T0 + (minutes - 1) * MINUTE_MS

    def target(path, **params):
        return (path + "?" + urlencode(params)).encode()

    return {
        "aggregated_count (one ad, all minutes)": lambda i: target(
            f"/v1/ads/ad-{i * 7919 % ads:07d}/aggregated_count", **{"from": T0, "to": last + MINUTE_MS}),
        "aggregated_count (one ad, all minutes, country=US)": lambda i: target(
            f"/v1/ads/ad-{i * 7919 % ads:07d}/aggregated_count",
            **{"from": T0, "to": last + MINUTE_MS, "filter": "country=US"}),
        "popular_ads (window=1: the stored top 100)": lambda i: target(
            "/v1/ads/popular_ads", at=T0 + (i % minutes) * MINUTE_MS),
        f"popular_ads (window={minutes}, country=US: sums {ads * minutes:,} rows)": lambda i: target(
            "/v1/ads/popular_ads", at=last, window=minutes, filter="country=US"),
    }


def serve(url: str, minutes: int, extra=()):
    """`adclick serve` on a free loopback port: (process, host, port) once it has said where it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "serve", "--sink", url, "--port", "0", "--log-level", "warning",
         "--max-window-minutes", str(max(60, minutes)), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    line = process.stdout.readline()
    found = _LISTENING.search(line)
    if not found:
        process.kill()
        sys.exit(f"adclick bench-api: adclick serve did not start: {(line + process.stdout.read()).decode()[-500:]}")
    return process, found.group(1).decode(), int(found.group(2))


def _cpu_seconds(pid: int) -> float:
    """CPU time of `adclick serve` and its workers: what a request costs the server whatever else the machine
    runs (requests/s and latency depend on what the other processes leave it)."""
    import psutil
    processes = [psutil.Process(pid)]
    processes += processes[0].children(recursive=True)
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def _wait_healthy(url: str, seconds: float = 120) -> None:
    """Until /healthz answers 200: workers of --workers N start after the socket listens (each imports Beam)."""
    import httpx
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"adclick bench-api: adclick serve did not answer {url} within {seconds:.0f} s")
        time.sleep(0.1)


def time_queries(url: str, ads: int, minutes: int, requests: int, clients: int = CLIENTS, serve_args=()) -> dict:
    """Throughput and latency of each kind of query through a real `adclick serve` process."""
    process, host, port = serve(url, minutes, serve_args)
    results = {}
    try:
        _wait_healthy(f"http://{host}:{port}/healthz")
        for name, make in queries(ads, minutes).items():
            count = requests if "sums" not in name else max(clients, requests // 20)
            load(host, port, [make(i) for i in range(min(count, 200))], clients)  # warm: connections, caches
            cpu = _cpu_seconds(process.pid)
            results[name] = load(host, port, [make(i) for i in range(count)], clients)
            results[name]["server_cpu_ms_per_request"] = round((_cpu_seconds(process.pid) - cpu) * 1000 / count, 3)
    finally:
        process.terminate()
        process.wait(15)
    return results


def _table(report: dict) -> str:
    wrote = (f"wrote {report['aggregates']:,} aggregates in {report['write_seconds']} s "
             f"({report['aggregates_per_second']:,}/s)" if report["write_seconds"] else "not written again")
    lines = [f"{report['sink']}: {wrote}; {report['clients']} concurrent clients, {report['workers']} worker(s)",
             f"{'query':<62} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'not 200':>8} {'CPU ms':>7}"]
    for name, q in report["queries"].items():
        lines.append(f"{name:<62} {q['requests_per_second']:>7,} {q['p50_ms']:>8} {q['p95_ms']:>8} {q['p99_ms']:>8} "
                     f"{q['not_200']:>8} {q['server_cpu_ms_per_request']:>7}")
    lines.append("CPU ms: the server's CPU time per request, its workers' included (the machine's load leaves it be)")
    return "\n".join(lines)


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="adclick bench-api",
        description="Time a sink's writes and the query API's throughput and latency on synthetic aggregates, "
                    "against a real `adclick serve` process. Bigtable: create the table first "
                    "(adclick bigtable create-table) and set BIGTABLE_EMULATOR_HOST for the emulator.")
    parser.add_argument("--sink", required=True, help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")
    parser.add_argument("--ads", type=int, default=2_000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--requests", type=int, default=4_000,
                        help="requests per kind of query (a twentieth for the summing one; default: %(default)s)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent connections (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="`adclick serve --workers` (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true",
                        help="query what the sink holds from an earlier bench-api with the same --ads and --minutes")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if min(args.ads, args.minutes, args.requests, args.clients, args.workers) < 1:
        sys.exit("adclick bench-api: --ads, --minutes, --requests, --clients and --workers must be at least 1")
    per_ad, per_filter, top_ads = synthetic_aggregates(args.ads, args.minutes)
    aggregates = len(per_ad) + len(per_filter) + len(top_ads)
    cells = 2 * (len(per_ad) + len(per_filter)) + len(top_ads)  # the Bigtable cells (SQLite: rows, about half)
    seconds = None
    if not args.no_write:
        try:
            seconds = write(args.sink, per_ad, per_filter, top_ads)
        except (ValueError, FileNotFoundError) as error:
            sys.exit(f"adclick bench-api: {error}")
    report = {"sink": args.sink, "ads": args.ads, "minutes": args.minutes, "aggregates": aggregates,
              "bigtable_cells": cells, "write_seconds": seconds and round(seconds, 2),
              "aggregates_per_second": seconds and round(aggregates / seconds), "clients": args.clients,
              "workers": args.workers,
              "queries": time_queries(args.sink, args.ads, args.minutes, args.requests, args.clients,
                                      () if args.workers == 1 else ("--workers", str(args.workers)))}
    print(json.dumps(report, indent=2) if args.json else _table(report), flush=True)
    return report
