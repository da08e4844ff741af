"""A replay into SQLite killed with SIGKILL while it writes, then run again; and readers that hold the database open.

A replay stages its results in `.NAME.staging-PID-RANDOM` beside the sink and swaps them in with one
transaction (sinks/sqlite.py). Killed while it stages, it leaves the sink as it was and a staging database
that no clean-up removed; killed in the swap, SQLite keeps the sink as it was or with the whole run. The
next replay removes the staging databases of launchers that no longer run and ends with exact tables.
Expected tables come from the generator's truth in plain Python (tests/stream_truth.py).
"""

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from loadgen.generator import GeneratorConfig, write_log
from tests.replay_truth import read_truth
from tests.servers.api import api_server
from tests.stream_truth import MINUTE_MS, expected_tables, sink_tables

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
TOP_N, SLIDING_MINUTES = 5, 3
DAY_MS = 86_400_000
# A day before BIG: the sink's earlier content, which a replay of BIG's minutes must leave as it is.
BEFORE = GeneratorConfig(events=3_000, seed=52, ads=50, minutes=5, start_ms=GeneratorConfig().start_ms - DAY_MS)
# Its staging takes about a second on an idle 2-core machine: long enough to be caught writing.
BIG = GeneratorConfig(events=200_000, seed=51, ads=3_000, minutes=60)
WRITING_BYTES = 1 << 20  # a WAL (or a staging database, which has none) this large holds rows, not just the schema


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    manifests = {name: write_log(config, root / name, files=2) for name, config in (("before", BEFORE), ("big", BIG))}
    return root, manifests


def replay_command(log: Path, db: Path, tmp_path: Path, summary: Path = None) -> list:
    return [sys.executable, "-m", "runners.cli", "replay", "--input", str(log / "clicks-*"), "--sink",
            f"sqlite:///{db}", "--dead-letter", str(tmp_path / f"dead-{log.name}.jsonl"), "--top-n", str(TOP_N),
            "--top-sliding-minutes", str(SLIDING_MINUTES)] + (["--summary", str(summary)] if summary else [])


def replay(log: Path, db: Path, tmp_path: Path, summary: Path = None) -> dict:
    done = subprocess.run(replay_command(log, db, tmp_path, summary), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    return json.loads(summary.read_text()) if summary else {}


def expected(*logs: Path) -> dict:
    """The tables of these logs' clicks together (their minutes are far apart: no window holds both)."""
    parts = [expected_tables(read_truth(log), TOP_N, SLIDING_MINUTES) for log in logs]
    return {table: sorted(row for part in parts for row in part[table]) for table in parts[0]}


def staging_files(db: Path) -> list:
    return sorted(path.name for path in db.parent.glob(f".{db.name}.staging-*"))


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def kill_when(process: subprocess.Popen, writing, seconds: float = 120) -> float:
    """SIGKILLs the replay the moment `writing()` holds; returns when, in seconds after its start."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        assert process.poll() is None, f"the replay ended before the moment came: {process.communicate()}"
        if writing():
            os.kill(process.pid, signal.SIGKILL)
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError("the moment never came")


def assert_balanced(summary: dict, manifest: dict) -> None:
    assert {key: summary[key] for key in ("read", "unique", "duplicates", "malformed", "skewed", "too_late")} == \
        {key: manifest.get(key, 0) for key in ("read", "unique", "duplicates", "malformed", "skewed", "too_late")}
    assert summary["balanced"]


@pytest.mark.parametrize("moment", ["staging", "swap"])
def test_a_replay_killed_while_it_writes_then_run_again_gives_exact_tables(logs, tmp_path, moment):
    root, manifests = logs
    db = tmp_path / "sink.db"
    replay(root / "before", db, tmp_path)
    before = sink_tables(db)
    assert before == expected(root / "before")

    def writing() -> bool:
        if moment == "staging":  # rows going into the staging database (no journal: straight into its file)
            return any(size(path) > WRITING_BYTES for path in tmp_path.glob(f".{db.name}.staging-*"))
        return size(tmp_path / f"{db.name}-wal") > WRITING_BYTES  # the swap's transaction, or just after it
    process = subprocess.Popen(replay_command(root / "big", db, tmp_path), cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        at = kill_when(process, writing)
        process.wait(timeout=30)
    finally:
        with_group_killed(process)
    left = staging_files(db)
    after_kill = sink_tables(db)
    complete = expected(root / "before", root / "big")
    print(f"killed {at:.2f} s into the replay ({moment}); left beside the sink: {left}; the sink "
          f"{'as it was' if after_kill == before else 'with the whole run' if after_kill == complete else 'MIXED'}")
    if moment == "staging":
        assert left and after_kill == before, "killed while staging: the sink as it was, its staging left behind"
    else:
        assert after_kill in (before, complete), "a swap killed midway left a mix"

    summary = replay(root / "big", db, tmp_path, tmp_path / "summary.json")
    assert sink_tables(db) == complete
    assert_balanced(summary, manifests["big"])
    assert staging_files(db) == [], "the killed run's staging database is still there"


def with_group_killed(process: subprocess.Popen) -> None:
    """The killed replay's parse workers follow it within seconds; this makes sure of it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_running_replays_staging_is_never_removed_and_a_dead_ones_is(tmp_path):
    from sinks.sqlite import connect, remove_stale_staging, staging_path_for
    db = tmp_path / "sink.db"
    connect(str(db)).close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{db.name}.staging-{int(dead.stdout)}-{'0' * 32}"
    mine = Path(staging_path_for(str(db)))
    other_sink = tmp_path / f".other.db.staging-{int(dead.stdout)}-{'1' * 32}"
    for path in (stale, Path(f"{stale}-wal"), mine, other_sink):
        path.write_bytes(b"x")
    assert remove_stale_staging(str(db)) == [stale.name, f"{stale.name}-wal"]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([db.name, mine.name, other_sink.name])


READER = textwrap.dedent("""
    import sqlite3, sys
    connection = sqlite3.connect(sys.argv[1], isolation_level=None)
    query = "SELECT COUNT(*), SUM(clicks) FROM clicks_per_minute"
    connection.execute("BEGIN")
    print(*connection.execute(query).fetchone(), flush=True)  # a read transaction, held open
    sys.stdin.readline()
    print(*connection.execute(query).fetchone(), flush=True)  # still the snapshot it began with
    connection.execute("COMMIT")
    print(*connection.execute(query).fetchone(), flush=True)  # the replays' results
""")


def test_a_reader_holding_the_database_open_never_makes_the_writer_fail(logs, tmp_path):
    """Another process holds a read transaction open (`BEGIN; SELECT ...`) and `adclick serve` answers queries,
    while two replays write the sink: both succeed, the reader keeps its snapshot, the API serves the new
    counts."""
    root, manifests = logs
    db = tmp_path / "sink.db"
    replay(root / "before", db, tmp_path)
    truth = read_truth(root / "big")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        held = reader.stdout.readline().split()
        assert held == [str(len(expected(root / "before")["clicks_per_minute"])), str(len(read_truth(root / "before")))]
        with api_server(f"sqlite:///{db}", tmp_path / "serve.log") as (base, _), httpx.Client(base_url=base) as api:
            (ad_id, clicks), = collections.Counter(event["ad_id"] for event in truth).most_common(1)
            path = f"/v1/ads/{quote(ad_id, safe='')}/aggregated_count"
            whole = {"from": BIG.start_ms, "to": BIG.start_ms + BIG.minutes * MINUTE_MS}
            assert api.get(path, params=whole).json()["count"] == 0
            for run in ("first", "second"):
                summary = replay(root / "big", db, tmp_path, tmp_path / f"summary-{run}.json")
                assert_balanced(summary, manifests["big"])
                assert api.get(path, params=whole).json()["count"] == clicks
        reader.stdin.write("\n")
        reader.stdin.flush()
        still, after = reader.stdout.readline().split(), reader.stdout.readline().split()
        assert reader.wait(timeout=30) == 0
    finally:
        reader.kill()
    assert still == held, "the reader's snapshot changed under it"
    complete = expected(root / "before", root / "big")
    assert after == [str(len(complete["clicks_per_minute"])), str(len(read_truth(root / "before")) + len(truth))]
    assert sink_tables(db) == complete
