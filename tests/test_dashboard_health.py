"""The dashboard's health panel in headless Chromium over a real `adclick serve --metrics-url`, which reads a
running `adclick stream --metrics-port 0` on the Pub/Sub emulator: the panel shows what was published (computed
in plain Python), and keeps refreshing as more arrives. Then without a stream, and with one that is down."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from sinks import sink_for
from tests.metrics_cases import metrics_url
from tests.pubsub_cases import wait_for
from tests.servers import free_port
from tests.servers.api import api_server
from tests.serving_cases import MINUTE, T0, load

ROOT = Path(__file__).resolve().parent.parent
MINUTE_MS = 60_000
WAIT_MS = 120_000


def panel(page) -> dict:
    """{item: (its value, its text)} of the health panel."""
    return {key: (value, text) for key, value, text in page.evaluate(
        "() => [...document.querySelectorAll('#health [data-health]')]"
        ".map(item => [item.dataset.health, item.dataset.value ?? null, item.querySelector('dd').innerText])")}


def value_is(page, key: str, expected) -> None:
    """Waits until the panel's `key` holds `expected` (the page refreshes by itself, nothing is reloaded)."""
    page.wait_for_function(
        "([key, expected]) => document.querySelector(`#health [data-health='${key}']`)?.dataset.value === expected",
        arg=[key, str(expected)], timeout=WAIT_MS)


@pytest.mark.browser
@pytest.mark.metrics
@pytest.mark.pubsub
@pytest.mark.slow
def test_the_panel_shows_a_running_streams_health_and_follows_it(pubsub_topic, page, tmp_path):
    topic, subscription = pubsub_topic
    db, log_path = tmp_path / "stream.db", tmp_path / "stream.log"
    with open(log_path, "wb") as log:
        stream = subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "stream", "--source", subscription, "--sink", f"sqlite:///{db}",
             "--dead-letter-dir", str(tmp_path / "dead"), "--early-firing-seconds", "1", "--metrics-port", "0"],
            cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = metrics_url(stream, log_path)
        wait_for(lambda: db.exists(), "the stream's sink", 60)
        with api_server(f"sqlite:///{db}", tmp_path / "serve.log", "--metrics-url", url) as (base, _):
            page.goto(f"{base}/dashboard/?refresh=5")
            first = publish(emissions_around_now(GeneratorConfig(events=400, seed=46, minutes=2, late_rate=0,
                                                                 malformed_rate=0.03)), PubSubPublisher(topic))
            value_is(page, "read", first.read)
            value_is(page, "duplicates", first.duplicates)
            value_is(page, "dead_letters", first.malformed)
            newest = max(click["click_ts"] for click in first.truth)
            value_is(page, "sink_latest_minute", newest - newest % MINUTE_MS)
            shown = panel(page)
            assert shown["stream"][1] == "running"
            assert shown["rss_bytes"][1].endswith(" MB") and float(shown["rss_bytes"][0]) > 50e6
            assert shown["source_lag_records"][1] == "not reported"  # Pub/Sub's backlog is not in the emulator
            assert url in page.inner_text("#health-caption")
            before = int(page.evaluate("document.body.dataset.healthRefreshes"))

            # More clicks, stamped a minute later: the same page, untouched, follows them.
            second = publish(emissions_around_now(GeneratorConfig(events=200, seed=47, minutes=1, late_rate=0,
                                                                  malformed_rate=0), now_ms=int(time.time() * 1000)
                                                  + MINUTE_MS), PubSubPublisher(topic))
            value_is(page, "read", first.read + second.read)
            newest = max(click["click_ts"] for click in second.truth)
            value_is(page, "sink_latest_minute", newest - newest % MINUTE_MS)
            assert int(page.evaluate("document.body.dataset.healthRefreshes")) > before
            rate = panel(page)["read_per_second"]
            assert rate[0] is not None and float(rate[0]) >= 0
            page.screenshot(path=str(tmp_path / "dashboard-health.png"), full_page=True)
            assert page.console_errors == []
    finally:
        if stream.poll() is None:
            os.killpg(stream.pid, signal.SIGINT)
            stream.wait(90)


@pytest.mark.browser
@pytest.mark.metrics
def test_without_a_stream_the_panel_shows_the_sinks_newest_minute_and_a_stream_that_is_down(page, tmp_path):
    db = tmp_path / "clicks.db"
    load(sink_for(f"sqlite:///{db}"), tmp_path / "dead.jsonl")
    with api_server(f"sqlite:///{db}", tmp_path / "serve.log") as (base, _):
        page.goto(f"{base}/dashboard/")
        value_is(page, "sink_latest_minute", T0 + 3 * MINUTE)
        shown = panel(page)
        assert shown["sink_latest_minute"][1] == "2026-01-01 00:03 UTC"
        assert shown["stream"][1] == "not watched (adclick serve --metrics-url)"
    down = f"http://127.0.0.1:{free_port()}/metrics"
    with api_server(f"sqlite:///{db}", tmp_path / "serve-down.log", "--metrics-url", down) as (base, _):
        page.goto(f"{base}/dashboard/")
        page.wait_for_selector("#health [data-health='stream'].bad", timeout=WAIT_MS)
        assert panel(page)["stream"][1].startswith("unreachable: ")
