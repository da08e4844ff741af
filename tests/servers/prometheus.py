"""Debian's Prometheus on a free loopback port with its own storage, stopped by its PID."""

import json
import time

import httpx
import pytest

from tests.servers import free_port, require_executable, start_listening, stop_group

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
READY_SECONDS = 60


@pytest.fixture
def prometheus(tmp_path):
    """start(config: dict) -> the base URL of a Prometheus server scraping as `config` says, once it is ready."""
    require_executable(PROMETHEUS, "Debian's prometheus")
    started = []

    def start(config: dict) -> str:
        port = free_port()
        path = tmp_path / f"prometheus-{len(started)}.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        process = start_listening(
            [PROMETHEUS, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / f'tsdb-{len(started)}'}", "--log.level=warn"], port, "Prometheus")
        started.append(process)
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + READY_SECONDS
        while httpx.get(f"{base}/-/ready", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus was not ready within {READY_SECONDS} s")
            time.sleep(0.2)
        return base

    yield start
    for process in started:
        stop_group(process)
