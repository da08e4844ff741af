"""What the JVM servers a launcher starts have in common (the Kafka broker, Beam's expansion service),
and the tests' servers too: a free loopback port, a version read from the pom `make install` copied
the jars by, and a process group stopped cleanly, then for good."""

import os
import signal
import socket
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

POM_NAMESPACE = "{http://maven.apache.org/POM/4.0.0}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pom_property(pom: Path, name: str) -> Optional[str]:
    """A `<properties>` value of a pom (the version the Makefile fetched), None if it has none."""
    return ElementTree.parse(pom).getroot().findtext(f"{POM_NAMESPACE}properties/{POM_NAMESPACE}{name}")


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
