"""GET /v1/health: the pipeline's health for the dashboard, beside the counts.

Two sources. The sink itself: its newest minute with clicks, which any `adclick serve` can read. The stream's
own endpoint (`adclick stream --metrics-port`), when `adclick serve --metrics-url URL` names it: read at each
request, so the answer is as fresh as the stream's metrics; rates (clicks read and dead letters per second)
come from this server's previous readings, over up to the last minute. The stream's endpoint is the one
place its state is exported (the same numbers Prometheus scrapes), so serve needs no Prometheus to show it.
"""

import argparse
import collections
import math
import time
from typing import Callable, Deque, Dict, List, Optional, Tuple

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from serving.store import Store
from transforms.records import MINUTE_MS

TIMEOUT_SECONDS = 2.0
RATE_SECONDS = 60.0  # rates are taken over the readings of up to this long ago


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-url", metavar="URL", type=_http_url,
                        help="a running stream's metrics (adclick stream --metrics-port), e.g. "
                             "http://127.0.0.1:9464/metrics: the dashboard shows its health")


def _samples(text: str) -> Dict[str, List[Tuple[dict, float]]]:
    from prometheus_client.parser import text_string_to_metric_families
    samples: Dict[str, List[Tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples, name: str) -> Optional[float]:
    found = samples.get(name)
    return found[0][1] if found else None


def _by(samples, name: str, label: str) -> Dict[str, float]:
    return {labels[label]: value for labels, value in samples.get(name, ())}


def quantile(q: float, buckets: List[Tuple[float, float]]) -> Optional[float]:
    """histogram_quantile as Prometheus computes it: linear within the bucket, from cumulative (le, count)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


class StreamHealth:
    """What a stream's metrics endpoint says, with rates over this server's recent readings of it."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic):
        self.url, self._clock = url, clock
        self._readings: Deque[Tuple[float, float, float]] = collections.deque()  # (when, read, dead letters)

    async def read(self) -> dict:
        import httpx
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.get(self.url)
            response.raise_for_status()
            samples = _samples(response.text)
        except Exception as error:  # down, refused, not metrics: the panel says so in one line
            return {"url": self.url, "up": False, "error": str(error).splitlines()[0] if str(error) else
                    type(error).__name__}
        dead = _by(samples, "adclick_dead_letters_total", "reason")
        flagged = _by(samples, "adclick_flagged_total", "rule")
        lag = {f"{labels['topic']}-{labels['partition']}": value
               for labels, value in samples.get("adclick_source_lag_records", ())}
        read = _value(samples, "adclick_clicks_read_total")
        latency = [(float(labels["le"]), value)
                   for labels, value in samples.get("adclick_sink_latency_seconds_bucket", ())]
        complete = _value(samples, "adclick_sink_complete_minute_timestamp_seconds")
        health = {
            "url": self.url, "up": True, "error": None,
            "running": read is not None,
            "read": read, "unique": _value(samples, "adclick_clicks_unique_total"),
            "duplicates": _value(samples, "adclick_duplicates_total"),
            "dead_letters": sum(dead.values()) if read is not None else None, "dead_letters_by_reason": dead,
            "flagged": sum(flagged.values()) if flagged else None, "flagged_by_rule": flagged,
            "late_panes": _value(samples, "adclick_late_panes_total"),
            "complete_minute": int(complete * 1000) if complete is not None else None,
            "freshness_seconds": _value(samples, "adclick_sink_freshness_seconds"),
            "watermark_lag_seconds": _value(samples, "adclick_watermark_lag_seconds"),
            "source_lag_records": sum(lag.values()) if lag else None, "source_lag_by_partition": lag,
            "latency_p50_seconds": quantile(0.5, latency), "latency_p99_seconds": quantile(0.99, latency),
            "rss_bytes": _value(samples, "process_resident_memory_bytes"),
            "cpu_seconds": _value(samples, "process_cpu_seconds_total"),
        }
        health.update(self._rates(read, health["dead_letters"]))
        return health

    def _rates(self, read: Optional[float], dead: Optional[float]) -> dict:
        if read is None or dead is None:
            return {"read_per_second": None, "dead_letters_per_second": None}
        now = self._clock()
        readings = self._readings
        if readings and read < readings[-1][1]:  # a new stream on the same port: start over
            readings.clear()
        readings.append((now, read, dead))
        while len(readings) > 2 and now - readings[1][0] >= RATE_SECONDS:
            readings.popleft()
        then, read_then, dead_then = readings[0]
        if now - then < 0.5:
            return {"read_per_second": None, "dead_letters_per_second": None}
        return {"read_per_second": (read - read_then) / (now - then),
                "dead_letters_per_second": (dead - dead_then) / (now - then)}


def router(store: Store, metrics_url: Optional[str], clock: Callable[[], float] = time.time) -> APIRouter:
    stream = StreamHealth(metrics_url) if metrics_url else None
    routes = APIRouter()

    @routes.get("/v1/health", tags=["dashboard"],
                summary="the pipeline's health: the sink's newest minute and the stream's metrics (--metrics-url)")
    async def health():
        latest = await run_in_threadpool(store.latest_minute)
        sink = {"latest_minute": latest,
                "age_seconds": None if latest is None else round(clock() - (latest + MINUTE_MS) / 1000, 3)}
        return {"sink": sink, "stream": await stream.read() if stream else None}

    return routes


def include(app: FastAPI, store: Store, metrics_url: Optional[str]) -> FastAPI:
    app.include_router(router(store, metrics_url))
    return app
