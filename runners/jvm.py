"""What the JVM servers a launcher starts have in common (the Kafka broker, Beam's expansion service),
and the tests' servers too: a free loopback port, a wait until a server listens on it, the version and
the jars `make install` copied by a pom, and a process group stopped cleanly, then for good."""

import os
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional, Type

POM_NAMESPACE = "{http://maven.apache.org/POM/4.0.0}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotListening(Exception):
    """A server that exited (`returncode`) before it listened, or (`returncode` None) did not listen in time."""

    def __init__(self, returncode: Optional[int]):
        super().__init__(returncode)
        self.returncode = returncode


def wait_until_listening(process: subprocess.Popen, port: int, timeout: float, poll_seconds: float = 0.1) -> None:
    """Returns once 127.0.0.1:`port` accepts a connection; NotListening if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotListening(process.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(poll_seconds)
    raise NotListening(None)


def pom_version(pom: Path, name: str, error: Type[Exception]) -> str:
    """The version a pom's `<properties>` name (what the Makefile fetched); `error` if it names none."""
    version = ElementTree.parse(pom).getroot().findtext(f"{POM_NAMESPACE}properties/{POM_NAMESPACE}{name}")
    if not version:
        raise error(f"{pom} names no {name}")
    return version


def jars_home(name: str, version: str, variable: str) -> Path:
    """Where `make install` copies a pom's jars: $`variable`, or ~/.cache/adclick/NAME/VERSION."""
    return Path(os.environ.get(variable) or Path.home() / ".cache" / "adclick" / name / version)


def installed_libs(home: Path, what: str, error: Type[Exception]) -> Path:
    """The jars the Makefile copied into `home`, once its stamp says the copy is whole; `error` if not."""
    if not (home / ".installed").exists():
        raise error(f"{what} is not installed in {home}: run `make install`")
    return home / "libs"


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15) -> None:
    """Stops a process started in its own session and everything it started: `sig` (a server's clean
    shutdown), then SIGKILL after `grace` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
