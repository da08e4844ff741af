"""Fixtures that start real servers on 127.0.0.1 and stop them by PID; the shared mechanics live here."""

import contextlib
import os
import subprocess

import pytest

from runners.jvm import (
    NotListening,
    free_port as free_port,  # the servers' port, for the fixtures too
    stop_group,
    wait_until_listening,
)

# Set by .ci/run: a server binary that is missing fails the tests that need it instead of skipping
# them, so that CI cannot stay green with a whole suite unrun.
REQUIRE_SERVERS = "ADCLICK_REQUIRE_SERVERS"


def require_executable(path: str, what: str) -> None:
    """Skips the calling test when `path` is not an executable, or fails it when REQUIRE_SERVERS is set."""
    if os.access(path, os.X_OK):
        return
    message = f"{what} is not installed at {path} (make system-deps)"
    if os.environ.get(REQUIRE_SERVERS, "") not in ("", "0"):
        pytest.fail(f"{message}; {REQUIRE_SERVERS} is set, so a missing server fails the run", pytrace=False)
    pytest.skip(message)


def start_listening(command, port: int, name: str, timeout: float = 60) -> subprocess.Popen:
    """Starts `command` in its own process group and waits until 127.0.0.1:port accepts connections.

    Its own group, so that a wrapper script's real server (a JVM) is stopped
    with it.
    """
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(process, port, timeout, poll_seconds=0.05)
    except NotListening as failed:
        if failed.returncode is not None:
            raise RuntimeError(f"{name} exited with {failed.returncode}") from None
        stop_group(process)
        raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s") from None
    return process


@contextlib.contextmanager
def environment(name: str, value: str):
    """Sets an environment variable (e.g. BIGTABLE_EMULATOR_HOST) for the block, then restores it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield value
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
