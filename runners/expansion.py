"""Beam's Kafka expansion service and the Java worker that runs ReadFromKafka, in one local JVM, without Docker.

Maven Central serves no shaded `beam-sdks-java-io-expansion-service` jar (Beam's
default for ReadFromKafka) at the Python SDK's version, so `make install` copies
the runtime classpath of tools/beam-expansion/pom.xml (the expansion service,
KafkaIO, kafka-clients, the Java SDK harness) into
~/.cache/adclick/expansion/VERSION/libs, and this module starts
`ExpansionService PORT --alsoStartLoopbackWorker` on it: the service names its
own address as the Java transforms' EXTERNAL environment and serves Beam's
worker-pool API beside the expansion API, so the runner (Prism) asks this JVM to
start the Java SDK harness, as threads. No container, no boot program, nothing
downloaded. The JVM lives as long as the Python process that started it (the
job's workers are in it), is shared by the pipelines that process builds, and
is stopped at exit.

Why not a PROCESS environment with Beam's Java boot program (`go install
.../sdks/v2/java/container`): it runs only behind a wrapper, since Prism 2.77
passes `--id='ID'` with literal quotes (its worker pool then refuses the id);
it hard-codes /opt/apache/beam/jars (the harness jar, Jamm's agent: the
experiments use_staged_dataflow_worker_jar and disable_jamm_agent get around
them); and each worker copies the 134 jars (138 MB) into /tmp/JOB_ENV/staged, a
path two Prism jobs share.
"""

import atexit
import ctypes
import os
import signal
import subprocess
import threading
from pathlib import Path

from runners.broker import java
from runners.jvm import (
    NotListening,
    free_port,
    installed_libs,
    jars_home,
    pom_version,
    stop_group,
    wait_until_listening,
)

POM = Path(__file__).resolve().parent.parent / "tools" / "beam-expansion" / "pom.xml"
MAIN_CLASS = "org.apache.beam.sdk.expansion.service.ExpansionService"
START_TIMEOUT_SECONDS = 120  # about 2 s on an idle 2-core machine
STOP_GRACE_SECONDS = 10
JVM_OPTIONS = ["-Xms128m", "-Xmx1g", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
_PR_SET_PDEATHSIG = 1
_lock = threading.Lock()
_service = None  # (process, address, log path) of this process's JVM
_stop_registered = False


class ExpansionServiceError(ValueError):
    """The expansion service is not installed or did not start; the message (one line) says what to do."""


def beam_version() -> str:
    return pom_version(POM, "beam.version", ExpansionServiceError)


def home() -> Path:
    return jars_home("expansion", beam_version(), "ADCLICK_EXPANSION_HOME")


def libs() -> Path:
    return installed_libs(home(), f"Beam's Kafka expansion service {beam_version()}", ExpansionServiceError)


def command(port: int) -> list:
    jars = libs()  # Jamm as an agent, as Beam's Java container runs the harness: it sizes the harness's caches
    agents = [f"-javaagent:{jar}" for jar in sorted(jars.glob("jamm-*.jar"))]
    return [java(), *JVM_OPTIONS, *agents, "-cp", str(jars / "*"), MAIN_CLASS, str(port),
            "--alsoStartLoopbackWorker"]


def _die_with_parent():
    """In the child: SIGTERM when the process that started it dies, even by SIGKILL (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    try:
        wait_until_listening(process, port, timeout)
    except NotListening as failed:
        if failed.returncode is None:
            raise ExpansionServiceError(f"the expansion service did not listen on port {port} within {timeout:.0f} s "
                                        f"(see {log})") from None
        lines = log.read_text(errors="replace").strip().splitlines()
        raise ExpansionServiceError(f"the expansion service exited with {failed.returncode}: "
                                    f"{lines[-1] if lines else 'no output'} (see {log})") from None


def start(port: int = None, timeout: float = START_TIMEOUT_SECONDS):
    """Starts a JVM in its own process group; returns (process, "localhost:PORT", log) once it listens."""
    port = port or free_port()
    log = home() / "logs" / f"service-{os.getpid()}-{port}.log"
    argv = command(port)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    try:
        _wait_until_listening(process, port, log, timeout)
    except BaseException:
        stop_group(process, grace=STOP_GRACE_SECONDS)
        raise
    return process, f"localhost:{port}", log


def _stop_shared() -> None:
    global _service
    with _lock:
        if _service is not None:
            process, _, log = _service
            stop_group(process, grace=STOP_GRACE_SECONDS)
            log.unlink(missing_ok=True)
            _service = None


def address() -> str:
    """This process's expansion service ("localhost:PORT"), started on first use and stopped at exit."""
    global _service, _stop_registered
    with _lock:
        if _service is None or _service[0].poll() is not None:
            _service = start()
            if not _stop_registered:
                atexit.register(_stop_shared)
                _stop_registered = True
        return _service[1]


class LocalExpansionService:
    """ReadFromKafka's `expansion_service`: this process's JVM, started when a pipeline expands it, left running
    for the job's Java worker (Beam's own JavaJarExpansionService stops its JVM right after the expansion)."""

    def __enter__(self):
        import grpc
        from apache_beam.transforms.external import ExpansionAndArtifactRetrievalStub
        self._channel = grpc.insecure_channel(address(), options=[("grpc.max_receive_message_length", -1),
                                                                  ("grpc.max_send_message_length", -1)])
        return ExpansionAndArtifactRetrievalStub(self._channel)

    def __exit__(self, *_):
        self._channel.close()
