"""`adclick serve` as a real uvicorn process on a free loopback port, stopped by its PID."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.servers import free_port


@contextlib.contextmanager
def api_server(sink_url: str, log_path, *extra: str):
    """Yields the base URL of `adclick serve --sink sink_url` once /healthz answers 200."""
    port = free_port()
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "serve", "--sink", sink_url, "--port", str(port),
         "--log-level", "warning", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"adclick serve exited with {process.returncode}: {open(log_path).read()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"adclick serve did not answer within 30 s: {open(log_path).read()}")
            time.sleep(0.1)
        yield base, process.pid
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
