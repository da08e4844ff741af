"""`adclick broker`: a real single-node Apache Kafka broker on loopback, KRaft mode, broker and controller in one JVM.

Kafka's jars come from `make install` (tools/kafka/pom.xml, copied into
~/.cache/adclick/kafka/VERSION/libs, or $ADCLICK_KAFKA_HOME/libs): nothing is
downloaded here. The data dir holds server.properties, log4j2.properties, the
broker's log (broker.log) and the partitions (logs/). Its KRaft storage is
formatted on first use, so a restart on the same dir keeps its topics and
offsets. The tests' fixture (tests/servers/kafka.py) starts the same broker on
free ports.
"""

import argparse
import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from runners.jvm import free_port, installed_libs, jars_home, pom_version, stop_group

POM = Path(__file__).resolve().parent.parent / "tools" / "kafka" / "pom.xml"
START_TIMEOUT_SECONDS = 120  # about 3 s on an idle 2-core machine; a loaded one is far slower
STOP_GRACE_SECONDS = 30
# A small heap and the serial collector: a test broker holds little, and the JVM starts faster.
# Log4j's own shutdown hook is off: it closed broker.log before Kafka's hook had logged its clean shutdown.
JVM_OPTIONS = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
               "-Dlog4j2.shutdownHookEnabled=false"]
# The client compiler alone: the broker answers in about 3 s instead of 4.5 s on 2 cores, and is slower
# afterwards; for a test's broker, which lives a few minutes.
QUICK_START_OPTIONS = ["-XX:TieredStopAtLevel=1"]
# One node, so every internal topic has one replica. No topic is created by a producer or a
# metadata request: a mistyped topic is an error, not a new empty topic.
SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "3",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}
LOG4J2 = """\
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


class BrokerError(Exception):
    """The broker cannot be installed, formatted or started; the message says what to do."""


def kafka_version() -> str:
    return pom_version(POM, "kafka.version", BrokerError)


def kafka_libs() -> Path:
    version = kafka_version()
    return installed_libs(jars_home("kafka", version, "ADCLICK_KAFKA_HOME"), f"Apache Kafka {version}", BrokerError)


def java() -> str:
    candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else None
    found = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if found is None:
        raise BrokerError("Kafka needs Java 17 or newer and there is no `java` on PATH or in JAVA_HOME: "
                          "run `make install`")
    return found


def _java_command(main_class: str, data_dir: Path, args: list, options: list) -> list:
    return [java(), *options, f"-Dlog4j2.configurationFile={data_dir / 'log4j2.properties'}",
            "-cp", str(kafka_libs() / "*"), main_class, *args]


def _write_config(data_dir: Path, port: int, controller_port: int) -> Path:
    settings = dict(SETTINGS)
    settings.update({
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.quorum.voters": f"{settings['node.id']}@127.0.0.1:{controller_port}",
        "log.dirs": str(data_dir / "logs"),
    })
    config = data_dir / "server.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    (data_dir / "log4j2.properties").write_text(LOG4J2.format(log=data_dir / "broker.log"))
    return config


def _format_storage(data_dir: Path, config: Path) -> None:
    """`kafka-storage format` on first use: a new cluster id, the metadata log and meta.properties in logs/."""
    if (data_dir / "logs" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()  # Kafka's Uuid text form
    # "=": an id that starts with "-" would read as an option
    command = _java_command("kafka.tools.StorageTool", data_dir,
                            ["format", f"--cluster-id={cluster_id}", "--config", str(config)],
                            JVM_OPTIONS + QUICK_START_OPTIONS)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise BrokerError(f"formatting {data_dir / 'logs'} failed: {output[-1] if output else result.returncode}")


def _controller_port_of(data_dir: Path):
    """The controller port a formatted data dir was last run with, so that a restart keeps it."""
    config = data_dir / "server.properties"
    if config.exists():
        for line in config.read_text().splitlines():
            if line.startswith("controller.quorum.voters="):
                return int(line.rsplit(":", 1)[1])
    return None


def wait_until_ready(process: subprocess.Popen, bootstrap: str, data_dir: Path, timeout: float) -> None:
    """Until the broker answers a metadata request that lists itself: it then takes topics and records."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})  # no line per refused connection
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the broker exited with {process.returncode} (see {data_dir / 'broker.log'})")
        try:
            if admin.list_topics(timeout=1).brokers:
                return
        except KafkaException:
            pass
        time.sleep(0.1)
    raise BrokerError(f"the broker did not answer on {bootstrap} within {timeout:.0f} s "
                      f"(see {data_dir / 'broker.log'})")


def start(port: int, data_dir: Path, controller_port: int | None = None, quick_start: bool = False,
          timeout: float = START_TIMEOUT_SECONDS) -> subprocess.Popen:
    """Formats `data_dir` on first use, starts the broker in its own process group and returns once it is ready."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    controller_port = controller_port or _controller_port_of(data_dir) or free_port()
    config = _write_config(data_dir, port, controller_port)
    _format_storage(data_dir, config)
    with open(data_dir / "broker.out", "ab") as out:  # the JVM's own lines, before log4j or past it
        options = JVM_OPTIONS + QUICK_START_OPTIONS if quick_start else JVM_OPTIONS
        process = subprocess.Popen(_java_command("kafka.Kafka", data_dir, [str(config)], options), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_ready(process, f"127.0.0.1:{port}", data_dir, timeout)
    except BaseException:  # a timeout, or Ctrl-C while it starts: no broker is left behind
        stop_group(process, grace=STOP_GRACE_SECONDS)
        raise
    return process


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="adclick broker",
        description="Run a local Apache Kafka broker (KRaft, one node) in the foreground until Ctrl-C or SIGTERM. "
                    "Its storage is formatted on first use; a restart on the same --data-dir keeps the topics.")
    parser.add_argument("--port", type=int, default=9092, help="the clients' port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the broker's config, log (broker.log) and partitions")
    parser.add_argument("--controller-port", type=int,
                        help="the KRaft controller's port (default: the data dir's last one, else a free port)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does: cleanly
    process = None
    try:
        process = start(args.port, args.data_dir, args.controller_port)
        print(f"adclick broker: Kafka {kafka_version()} listening on 127.0.0.1:{args.port} "
              f"(kafka://127.0.0.1:{args.port}/TOPIC; data and broker.log in {args.data_dir})", flush=True)
        code = process.wait()
        raise SystemExit(f"adclick broker: the broker exited with {code} (see {args.data_dir / 'broker.log'})")
    except BrokerError as error:
        raise SystemExit(f"adclick broker: {error}") from None
    except KeyboardInterrupt:
        if process is not None:
            stop_group(process, grace=STOP_GRACE_SECONDS)
        print("adclick broker: stopped", flush=True)
