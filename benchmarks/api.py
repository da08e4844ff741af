"""`adclick bench-api`: a sink's write rate and the query API's latency over HTTP, on synthetic
aggregates (Zipf-like counts, `--ads` ads x `--minutes` minutes, three countries each).

Writes go through the sink's own PTransform on the DirectRunner, as a replay writes them; the
API runs in uvicorn on a free loopback port and is queried one request at a time.
"""

import argparse
import json
import socket
import statistics
import sys
import threading
import time

import apache_beam as beam

from sinks import sink_for
from transforms.records import MINUTE_MS, AdCount, Aggregates, FilterCount, TopAds

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
COUNTRIES = ("US", "IN", "BR")


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(seconds):
    ms = sorted(s * 1000 for s in seconds)
    return {"requests": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "max_ms": round(ms[-1], 2)}


def time_queries(url: str, ads: int, minutes: int, requests: int) -> dict:
    """Latency of each kind of query through a real uvicorn server."""
    import httpx
    import uvicorn

    from serving.api import create_app
    from serving.store import open_store
    store = open_store(url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, max_window_minutes=max(60, minutes)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    last = T0 + (minutes - 1) * MINUTE_MS
    queries = {
        "aggregated_count (one ad, all minutes)": lambda i: (
            f"/v1/ads/ad-{i * 7919 % ads:07d}/aggregated_count", {"from": T0, "to": last + MINUTE_MS}),
        "aggregated_count (one ad, all minutes, country=US)": lambda i: (
            f"/v1/ads/ad-{i * 7919 % ads:07d}/aggregated_count",
            {"from": T0, "to": last + MINUTE_MS, "filter": "country=US"}),
        "popular_ads (window=1: the stored top 100)": lambda i: (
            "/v1/ads/popular_ads", {"at": T0 + (i % minutes) * MINUTE_MS}),
        f"popular_ads (window={minutes}, country=US: sums {ads * minutes:,} rows)": lambda i: (
            "/v1/ads/popular_ads", {"at": last, "window": minutes, "filter": "country=US"}),
    }
    results = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for name, make in queries.items():
                count = requests if "sums" not in name else max(5, requests // 20)
                seconds = []
                for i in range(count):
                    path, params = make(i)
                    started = time.perf_counter()
                    response = client.get(path, params=params)
                    seconds.append(time.perf_counter() - started)
                    response.raise_for_status()
                results[name] = _percentiles(seconds)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()
    return results


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="adclick bench-api",
        description="Time a sink's writes and the query API's answers on synthetic aggregates. "
                    "Bigtable: create the table first (adclick bigtable create-table) and set "
                    "BIGTABLE_EMULATOR_HOST for the emulator.")
    parser.add_argument("--sink", required=True, help="sqlite:///PATH or bigtable://PROJECT/INSTANCE/TABLE")
    parser.add_argument("--ads", type=int, default=2_000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200, help="requests per kind of query")
    args = parser.parse_args(argv)
    if min(args.ads, args.minutes, args.requests) < 1:
        sys.exit("adclick bench-api: --ads, --minutes and --requests must be at least 1")
    per_ad, per_filter, top_ads = synthetic_aggregates(args.ads, args.minutes)
    cells = 2 * (len(per_ad) + len(per_filter)) + len(top_ads)  # the Bigtable cells (SQLite: rows, about half)
    try:
        seconds = write(args.sink, per_ad, per_filter, top_ads)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"adclick bench-api: {error}")
    report = {"sink": args.sink, "ads": args.ads, "minutes": args.minutes,
              "aggregates": len(per_ad) + len(per_filter) + len(top_ads), "bigtable_cells": cells,
              "write_seconds": round(seconds, 2),
              "aggregates_per_second": round((len(per_ad) + len(per_filter) + len(top_ads)) / seconds),
              "queries": time_queries(args.sink, args.ads, args.minutes, args.requests)}
    print(json.dumps(report, indent=2))
    return report
