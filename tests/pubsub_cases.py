"""Helpers of the tests that run `adclick stream` on the Pub/Sub emulator."""

import os
import signal
import subprocess
import time

import orjson

WAIT_SECONDS = 300  # bound for a stream to catch up with what was published


def wait_for(condition, what: str, seconds: float = WAIT_SECONDS, detail=lambda: ""):
    """Polls `condition` every second; fails with `what` (and `detail()`) after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what} {detail()}")


def odd_clicks(now_ms: int, hours: float, count: int, prefix: str):
    """Valid clicks stamped `hours` from now (a phone ahead of time, or a click that comes far too late)."""
    return [orjson.dumps({"event_id": f"{prefix}-{i}", "ad_id": "ad-odd", "click_ts": now_ms + int(hours * 3600_000),
                          "country": "US"}) for i in range(count)]


def stop_for_good(stream: subprocess.Popen, drain_seconds: float) -> None:
    """After a test: the stream (started in a session of its own) and its process group end, drained within
    `drain_seconds` or killed."""
    if stream.poll() is None:
        os.killpg(stream.pid, signal.SIGINT)
        try:
            stream.wait(drain_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
