"""A replay's results appear all at once; a signal stops it with one line and leaves nothing behind.

A reader polls the sink in its own read transactions (as the API does, WAL mode) while a replay runs:
it must see the previous run's complete tables or the new run's, never a mix. SIGINT and SIGTERM
stop a replay mid-run with one line, no process, spill directory, staging or temporary file left,
and the sink as it was; after a SIGKILL, the parse workers follow their parent within seconds.
"""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay

REPO = Path(__file__).resolve().parent.parent
TABLES = ("clicks_per_minute", "clicks_per_minute_by_filter", "top_ads", "top_ads_sliding")
BEFORE = GeneratorConfig(events=2_000, seed=31, ads=40, minutes=20)
# Seconds of replay on 2 busy cores: a signal sent as soon as the run is under way lands well before its end
# (a replay that has finished returns 0, and the test then says so).
BIG = GeneratorConfig(events=800_000, seed=32, ads=500, minutes=20)
PARSE_PROCESSES = 2


def snapshot(connection) -> str:
    """A hash of all four tables, read in one transaction: one consistent state of the sink."""
    connection.execute("BEGIN")
    try:
        digest = hashlib.sha256()
        for table in TABLES:
            digest.update(repr(sorted(connection.execute(f"SELECT * FROM {table}"))).encode())
        return digest.hexdigest()
    finally:
        connection.execute("COMMIT")


class Reader(threading.Thread):
    """Polls the sink's state until stopped; `states` is every distinct state it saw."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self._db, self.states, self._done = db, set(), threading.Event()

    def run(self):
        connection = sqlite3.connect(self._db, isolation_level=None, timeout=60)
        while not self._done.is_set():
            self.states.add(snapshot(connection))

    def stop(self):
        self._done.set()
        self.join()
        return self.states


def replay_in_process(log: Path, db: Path, tmp_path: Path) -> str:
    replay.run(["--input", str(log / "clicks-*"), "--sink", f"sqlite:///{db}", "--dead-letter",
                str(tmp_path / "before-dead.jsonl"), "--top-n", "5", "--top-sliding-minutes", "3"])
    return snapshot(sqlite3.connect(db, isolation_level=None))


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_log(BEFORE, root / "before")
    write_log(BIG, root / "big", files=2)
    return root


def start_replay(log: Path, db: Path, tmp_path: Path) -> subprocess.Popen:
    """The replay as a user runs it, its temporary directory (the spill's default place) in tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "replay", "--input", str(log / "clicks-*"), "--sink", f"sqlite:///{db}",
         "--dead-letter", str(tmp_path / "dead.jsonl"), "--top-n", "5", "--top-sliding-minutes", "3",
         "--parse-processes", str(PARSE_PROCESSES)],
        cwd=REPO, env=dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until_mid_run(process: subprocess.Popen, tmp_path: Path) -> list:
    """Waits until the replay has its spill directory and its parse workers; returns its child processes."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        children = psutil.Process(process.pid).children(recursive=True)
        workers = [child for child in children if "multiprocessing.spawn" in " ".join(child.cmdline())]
        if len(workers) >= PARSE_PROCESSES and any(name.startswith("adclick-spill-")
                                                   for name in os.listdir(tmp_path / "tmp")):
            return children
        time.sleep(0.02)
    raise AssertionError("the replay never got under way")


def kill_all(processes) -> None:
    """What a test started and a failing replay left running."""
    for process in processes:
        try:
            process.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass


def leftovers(tmp_path: Path) -> list:
    """Temporary files and directories a replay may have left: spill, Beam's, staging, dead-letter parts."""
    return sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")
                  if path.name.startswith(("adclick-spill-", "beam-temp-", ".")))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_replay_with_one_line_and_nothing_half_written_or_left(logs, tmp_path, signum):
    db = tmp_path / "sink.db"
    before = replay_in_process(logs / "before", db, tmp_path)
    (tmp_path / "dead.jsonl").write_text("the previous run's dead letters\n")
    reader = Reader(db)
    reader.start()
    process, children = start_replay(logs / "big", db, tmp_path), []
    try:
        children = wait_until_mid_run(process, tmp_path)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=5)
    finally:
        kill_all([process] + children)
    seen = reader.stop()

    assert process.returncode != 0, "the replay finished before the signal reached it: make BIG larger"
    assert process.returncode == 128 + signum
    lines = [line for line in stderr.splitlines() if line and " INFO " not in line]
    assert lines == ["adclick replay: interrupted; nothing was written to the sink"], stderr
    assert "Traceback" not in stdout
    assert not alive, [child.cmdline() for child in alive]
    assert leftovers(tmp_path) == []
    assert seen == {before} and snapshot(sqlite3.connect(db, isolation_level=None)) == before
    assert (tmp_path / "dead.jsonl").read_text() == "the previous run's dead letters\n"


@pytest.mark.slow
def test_a_reader_sees_the_previous_run_or_the_new_one_never_a_mix(logs, tmp_path):
    db = tmp_path / "sink.db"
    before = replay_in_process(logs / "before", db, tmp_path)
    reader = Reader(db)
    reader.start()
    after = replay_in_process(logs / "big", db, tmp_path)
    seen = reader.stop()
    assert after != before
    assert seen <= {before, after} and before in seen
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_parse_workers_die_with_a_killed_replay(logs, tmp_path):
    db = tmp_path / "sink.db"
    before = replay_in_process(logs / "before", db, tmp_path)
    process, children = start_replay(logs / "big", db, tmp_path), []
    try:
        children = wait_until_mid_run(process, tmp_path)
        process.kill()
        process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=5)
    finally:
        kill_all([process] + children)
    assert not alive, [child.cmdline() for child in alive]
    assert snapshot(sqlite3.connect(db, isolation_level=None)) == before
