"""Helpers of the tests that scrape `adclick stream --metrics-port 0`."""

import re
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.pubsub_cases import wait_for

ENDPOINT = re.compile(r"adclick stream: metrics at (http://\S+/metrics)")


def metrics_url(stream: subprocess.Popen, log_path: Path, seconds: float = 120) -> str:
    """The URL the stream printed, in its one line, once it has."""
    found: list = []

    def printed() -> bool:
        assert stream.poll() is None, log_path.read_text(errors="replace")[-3000:]
        found.extend(ENDPOINT.findall(log_path.read_text(errors="replace")))
        return bool(found)
    wait_for(printed, "the metrics URL", seconds)
    return found[0]


def scrape(url: str) -> dict:
    """{sample name: {labels as sorted (key, value) tuples: value}} from the endpoint, over HTTP."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples: dict, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def dead_letters(samples: dict) -> dict:
    return {dict(labels)["reason"]: value for labels, value in samples.get("adclick_dead_letters_total", {}).items()}


def accounted(samples: dict) -> float:
    """unique + duplicates + every dead letter + every flagged click: what `read` should equal."""
    return (one(samples, "adclick_clicks_unique_total") + one(samples, "adclick_duplicates_total")
            + sum(dead_letters(samples).values()) + sum(samples.get("adclick_flagged_total", {}).values()))
