"""`adclick replay --runner prism`: a generated log replayed on Prism, every table checked against the truth."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam
import psutil
import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import prism, replay
from tests.stream_truth import expected_tables, sink_tables

pytestmark = pytest.mark.prism

CONFIG = GeneratorConfig(events=3_000, seed=23, ads=150, minutes=6, duplicate_rate=0.08, late_rate=0.05,
                         malformed_rate=0.02)
TOP_N, SLIDING_MINUTES = 10, 5
BIG = GeneratorConfig(events=300_000, seed=24, ads=500, minutes=20)  # a few seconds on Prism: time to stop it
REPO = Path(__file__).resolve().parent.parent


def test_a_replay_on_prism_matches_plain_python_and_accounts_for_every_line(tmp_path):
    manifest = write_log(CONFIG, tmp_path / "log", "jsonl", files=2)
    db = tmp_path / "prism.db"
    summary = replay.run(["--input", str(tmp_path / "log" / "clicks-*"), "--sink", f"sqlite:///{db}",
                          "--top-n", str(TOP_N), "--top-sliding-minutes", str(SLIDING_MINUTES),
                          "--dead-letter", str(tmp_path / "dead.jsonl"), "--runner", "prism"])
    truth = [json.loads(line) for line in (tmp_path / "log" / "truth.jsonl").read_text().splitlines()]
    assert sink_tables(db) == expected_tables(truth, TOP_N, SLIDING_MINUTES)
    assert {key: summary[key] for key in ("read", "unique", "duplicates", "malformed")} == \
        {key: manifest[key] for key in ("read", "unique", "duplicates", "malformed")}
    assert summary["balanced"]
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == manifest["malformed"]


def test_prism_never_built_is_one_line_that_says_make_install(tmp_path):
    """Another home has no ~/.cache/adclick/prism: Beam must not download one, the replay says what to run."""
    (tmp_path / "a.jsonl").write_text("")
    env = dict(os.environ, HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "runners.cli", "replay", "--input", str(tmp_path / "a.jsonl"),
                           "--sink", f"sqlite:///{tmp_path / 'a.db'}", "--dead-letter", str(tmp_path / "d.jsonl"),
                           "--runner", "prism"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"adclick replay: failed: Prism {apache_beam.__version__} is not built "
        f"({tmp_path}/.cache/adclick/prism/{apache_beam.__version__}/prism): run make install"]
    assert prism.BINARY.exists(), "make install builds Prism for the tests"


def arguments(process: psutil.Process) -> list:
    try:
        return process.cmdline()
    except psutil.Error:  # gone, or a zombie
        return []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_replay_on_prism_with_one_line_and_prism_with_it(tmp_path, signum):
    write_log(BIG, tmp_path / "big", files=2)
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "replay", "--input", str(tmp_path / "big" / "clicks-*"), "--runner",
         "prism", "--sink", f"sqlite:///{tmp_path / 'a.db'}", "--dead-letter", str(tmp_path / "dead.jsonl")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    children = []
    try:
        deadline = time.monotonic() + 90
        while not any(arguments(child)[:1] == [str(prism.BINARY)] for child in children) \
                and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            children = psutil.Process(process.pid).children(recursive=True)
            time.sleep(0.05)
        time.sleep(1.5)  # the job under way
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=10)
    finally:
        for leftover in [process, *children]:
            try:
                leftover.kill()
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
    assert process.returncode == 128 + signum
    assert [line for line in stderr.splitlines() if line and " INFO " not in line] == [
        "adclick replay: interrupted; nothing was written to the sink"], stderr
    assert not alive, [child.cmdline() for child in alive]
