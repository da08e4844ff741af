"""`adclick stream --metrics-port 0` on the Pub/Sub emulator (DirectRunner): its endpoint, scraped with httpx and
by a real Prometheus, counts what was published (computed in plain Python) and what the run's summary says."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from loadgen.generator import GeneratorConfig
from loadgen.publish import PubSubPublisher, emissions_around_now, publish
from tests.metrics_cases import accounted, dead_letters, metrics_url, one, scrape
from tests.pubsub_cases import odd_clicks, stop_for_good, wait_for

pytestmark = [pytest.mark.metrics, pytest.mark.pubsub, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
CONFIG = GeneratorConfig(events=1200, seed=43, minutes=3, duplicate_rate=0.06, late_rate=0, malformed_rate=0.03)
WAIT_SECONDS = 180
DRAIN_SECONDS = 90


def start_stream(subscription: str, tmp_path: Path, *options: str):
    """The stream and its metrics URL, read from the one line it prints."""
    log_path = tmp_path / "stream.log"
    with open(log_path, "wb") as log:  # a pipe nobody reads would fill up and block the stream
        stream = subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "stream", "--source", subscription,
             "--sink", f"sqlite:///{tmp_path / 'stream.db'}", "--dead-letter-dir", str(tmp_path / "dead"),
             "--summary", str(tmp_path / "summary.json"), "--early-firing-seconds", "1",
             "--metrics-port", "0", *options],
            cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        return stream, metrics_url(stream, log_path, 60)
    except BaseException:
        stop_for_good(stream, DRAIN_SECONDS)
        raise


def test_the_endpoint_counts_what_was_published_and_what_the_summary_says(pubsub_topic, tmp_path):
    topic, subscription = pubsub_topic
    stream, url = start_stream(subscription, tmp_path)
    try:
        sent = publish(emissions_around_now(CONFIG), PubSubPublisher(topic))
        last: dict = {}

        def complete_minute() -> bool:
            last.update(scrape(url))
            return "adclick_sink_complete_minute_timestamp_seconds" in last
        wait_for(complete_minute, "a minute's on-time pane in the sink", WAIT_SECONDS, detail=lambda: last)
        # The watermark has passed a minute of the log: clicks two hours old are too late, three hours ahead skewed.
        publisher, now_ms = PubSubPublisher(topic), int(time.time() * 1000)
        odd = odd_clicks(now_ms, 3, 4, "skewed") + odd_clicks(now_ms, -2, 5, "late")
        for line in odd:
            publisher.send(line, json.loads(line)["click_ts"])
        publisher.flush()
        read = sent.read + len(odd)

        def all_accounted() -> bool:
            last.clear()
            last.update(scrape(url))
            return one(last, "adclick_clicks_read_total") == read and accounted(last) == read
        wait_for(all_accounted, "every message read and accounted for", WAIT_SECONDS, detail=lambda: last)
        running = last.copy()
    finally:
        stop_for_good(stream, DRAIN_SECONDS)
    assert stream.returncode == 0

    assert one(running, "adclick_clicks_unique_total") == sent.unique
    assert one(running, "adclick_duplicates_total") == sent.duplicates
    letters = dead_letters(running)
    assert (letters.pop("skewed"), letters.pop("too_late")) == (4, 5)
    assert sum(letters.values()) == sent.malformed > 0

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "running" not in summary
    assert {"read": one(running, "adclick_clicks_read_total"), "unique": one(running, "adclick_clicks_unique_total"),
            "duplicates": one(running, "adclick_duplicates_total"), "malformed": sum(letters.values()),
            "malformed_by_reason": letters, "skewed": 4, "too_late": 5} == {
        key: summary[key] for key in ("read", "unique", "duplicates", "malformed", "malformed_by_reason", "skewed",
                                      "too_late")}

    # The rest: present and sane (their values depend on timing, so only their bounds are checked).
    now = time.time()
    event_times = [click["click_ts"] / 1000 for click in sent.truth]
    complete = one(running, "adclick_sink_complete_minute_timestamp_seconds")
    assert min(event_times) - 60 < complete <= one(running, "adclick_sink_newest_minute_timestamp_seconds") < now
    assert complete % 60 == 0
    assert min(event_times) <= one(running, "adclick_watermark_timestamp_seconds") <= now
    assert one(running, "adclick_watermark_lag_seconds") >= 0
    assert one(running, "adclick_sink_freshness_seconds") >= 0
    buckets = sorted(((float(dict(labels)["le"]), value) for labels, value in
                      running["adclick_sink_latency_seconds_bucket"].items()))
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), one(running, "adclick_sink_latency_seconds_count")) and buckets[-1][1] > 0
    assert one(running, "adclick_sink_latency_seconds_sum") >= 0
    assert one(running, "process_resident_memory_bytes") > 50e6
    assert one(running, "process_cpu_seconds_total") > 0
    assert "adclick_source_lag_records" not in running  # the Pub/Sub emulator reports no backlog


def test_a_real_prometheus_scrapes_the_stream_with_the_example_config(pubsub_topic, prometheus, tmp_path):
    """ops/prometheus/prometheus.yml, its target set to the stream, its alert rules loaded, scraped every second."""
    topic, subscription = pubsub_topic
    stream, url = start_stream(subscription, tmp_path)
    try:
        config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(ROOT / "ops" / "prometheus" / "alerts.yml")]
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "adclick-stream"]
        job["static_configs"] = [{"targets": [url.split("/")[2]]}]
        config["scrape_configs"] = [job]
        base = prometheus(config)
        sent = publish(emissions_around_now(GeneratorConfig(events=300, seed=44, minutes=2, late_rate=0)),
                       PubSubPublisher(topic))

        def query(expression: str) -> list:
            answer = httpx.get(f"{base}/api/v1/query", params={"query": expression}, timeout=10).json()
            assert answer["status"] == "success", answer
            return answer["data"]["result"]

        def read_all() -> bool:
            result = query('adclick_clicks_read_total{job="adclick-stream"}')
            return bool(result) and float(result[0]["value"][1]) == sent.read
        wait_for(read_all, "Prometheus to scrape every message read", WAIT_SECONDS,
                 detail=lambda: query("adclick_clicks_read_total"))
        assert [float(r["value"][1]) for r in query('up{job="adclick-stream"}')] == [1]
        assert float(query("adclick_clicks_unique_total")[0]["value"][1]) == sent.unique
        assert query("process_resident_memory_bytes")
        rules = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {
            "AdclickSourceLagGrowing", "AdclickSinkFreshnessStale", "AdclickDeadLetterRate", "AdclickWatermarkStalled"}
    finally:
        stop_for_good(stream, DRAIN_SECONDS)
