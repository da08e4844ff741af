"""A replay's outputs replace only themselves; nonsense on the command line is one line before the run."""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.generator import GeneratorConfig, write_log
from runners import replay, report, stream
from runners.options import STREAM_ONLY

REPO = Path(__file__).resolve().parent.parent
CONFIG = GeneratorConfig(events=300, seed=3, ads=20, minutes=2, malformed_rate=0.05)


def run_cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "runners.cli", *argv], capture_output=True, text=True, timeout=180,
                          cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)))


def fingerprint(directory: Path) -> dict:
    """Every file under `directory` (hidden ones too) by relative path, with a hash of its bytes."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def error_lines(stderr: str) -> list:
    """What the user reads on stderr, less the progress log lines."""
    return [line for line in stderr.splitlines() if line and " INFO " not in line]


@pytest.fixture
def logs(tmp_path):
    write_log(CONFIG, tmp_path / "logs", files=2)
    return tmp_path / "logs"


@pytest.mark.parametrize("outputs", [
    ["--dead-letter", "logs"], ["--dead-letter", "logs/"], ["--dead-letter", "logs/clicks-00001.jsonl"],
    ["--summary", "logs"], ["--summary", "logs/clicks-00000.jsonl"], ["--sink", "sqlite:///logs/clicks-00000.jsonl"],
    ["--sink", "sqlite:///x.db", "--dead-letter", "x.db"], ["--summary", "dead.jsonl"],
    ["--dead-letter", "logs/clicks-00000.jsonl/dead.jsonl"],
])
def test_an_output_at_a_directory_or_an_input_is_refused_and_nothing_is_touched(logs, outputs):
    before = fingerprint(logs)
    arguments = {"--sink": "sqlite:///out.db", "--dead-letter": "dead.jsonl", **dict(zip(outputs[::2], outputs[1::2]))}
    result = run_cli("replay", "--input", "logs/clicks-*", *[part for item in arguments.items() for part in item],
                     cwd=logs.parent)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("adclick replay: --"), result.stderr
    assert any(reason in lines[0] for reason in ("is a directory", "is an input", "are the same file", "inside a file"))
    assert fingerprint(logs) == before
    assert sorted(os.listdir(logs.parent)) == ["logs"]


def test_dead_letters_replace_only_their_own_file_and_leave_nothing_beside_it(logs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    (out / "dead.jsonl").write_text("an earlier run's dead letters\n")
    for _ in range(2):  # the second run replaces the first's file
        replay.run(["--input", str(logs / "clicks-*"), "--sink", f"sqlite:///{out / 'a.db'}",
                    "--dead-letter", str(out / "dead.jsonl"), "--summary", str(out / "summary.json")])
        assert (out / "keep.txt").read_text() == "the user's"
        dead = (out / "dead.jsonl").read_text().splitlines()
        assert len(dead) == round(CONFIG.malformed_rate * CONFIG.events) and all('"reason"' in line for line in dead)
        left = {name for name in os.listdir(out) if not name.endswith(("-wal", "-shm"))}
        assert left == {"a.db", "dead.jsonl", "keep.txt", "summary.json"}  # no part, staging or temporary file


def test_the_stream_names_its_dead_letter_directory_with_its_own_flag():
    args, beam_args = stream.parser().parse_known_args(["--source", "pubsub://projects/p/subscriptions/s",
                                                        "--dead-letter-dir", "dead"])
    assert args.dead_letter_dir == "dead" and not beam_args
    assert "--dead-letter-dir" in stream.parser().format_help()
    assert "--dead-letter " not in stream.parser().format_help().replace("--dead-letter-", "")


@pytest.mark.parametrize("option, value, minimum", [
    ("--parse-processes", "-1", 0), ("--max-skew-seconds", "-5", 0), ("--top-n", "-1", 1), ("--top-n", "0", 1),
    ("--top-sliding-minutes", "-1", 0),
])
def test_nonsense_numbers_are_one_line_before_the_run(logs, tmp_path, capsys, option, value, minimum):
    with pytest.raises(SystemExit) as stopped:
        replay.run(["--input", str(logs / "clicks-*"), "--sink", f"sqlite:///{tmp_path / 'a.db'}",
                    "--dead-letter", str(tmp_path / "dead.jsonl"), option, value])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == f"adclick replay: error: argument {option}: must be at least {minimum}, not {value}" \
        and len(lines) <= 2  # argparse's one-line usage, then the error
    assert not (tmp_path / "a.db").exists()


def test_a_file_that_is_no_sqlite_database_is_one_line_and_left_as_it_was(logs, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database, just text " * 20)
    result = run_cli("replay", "--input", str(logs / "clicks-*"), "--sink", f"sqlite:///{junk}",
                     "--dead-letter", str(tmp_path / "dead.jsonl"), cwd=tmp_path)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("adclick replay: ") and "not a database" in lines[0], result.stderr
    assert junk.read_text() == "not a database, just text " * 20


def test_a_read_only_database_is_refused_before_the_run(logs, tmp_path):
    database = tmp_path / "ro.db"
    sqlite3.connect(database).execute("CREATE TABLE other (x)")
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode:
        pytest.skip("chattr +i is not supported here (the tests run as root, so a mode does not make a file read-only)")
    try:
        result = run_cli("replay", "--input", str(logs / "clicks-*"), "--sink", f"sqlite:///{database}",
                         "--dead-letter", str(tmp_path / "dead.jsonl"), cwd=tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    lines = error_lines(result.stderr)
    assert result.returncode == 1 and len(lines) == 1 and "readonly database" in lines[0], result.stderr
    assert "read " not in result.stdout  # refused before the run, not after it: no summary
    assert not (tmp_path / "dead.jsonl").exists()


def test_top_refuses_a_missing_database_without_creating_it(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"^adclick top: no SQLite database at .*typo\.db$"):
        report.run(["--sink", f"sqlite:///{tmp_path / 'typo.db'}"])
    assert not (tmp_path / "typo.db").exists()


def test_a_json_file_read_as_avro_is_no_traceback(logs, tmp_path):
    result = run_cli("replay", "--input", str(logs / "clicks-00000.jsonl"), "--input-format", "avro",
                     "--sink", f"sqlite:///{tmp_path / 'a.db'}", "--dead-letter", str(tmp_path / "dead.jsonl"),
                     cwd=tmp_path)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "clicks-00000.jsonl" in result.stdout + result.stderr


@pytest.mark.parametrize("option, value, minimum", [
    ("--allowed-lateness-seconds", "-1", 0), ("--early-firing-seconds", "-1", 0), ("--hot-key-fanout", "0", 1),
    ("--dedup-ttl-seconds", "0", 1), ("--dedup-shards", "0", 1), ("--archive-every-seconds", "0", 1),
    ("--dead-letter-every-seconds", "-3", 1),
])
def test_a_streams_nonsense_numbers_are_one_line(capsys, option, value, minimum):
    with pytest.raises(SystemExit) as stopped:
        stream.parser().parse_known_args(["--source", "pubsub://projects/p/subscriptions/s", option, value])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument {option}: must be at least {minimum}, not {value}")


def test_a_replay_refuses_a_streams_trigger_options_and_does_not_list_them(logs, tmp_path):
    """Given to a replay, they would fall through to Beam, which ignores unknown options."""
    assert not any(option in replay.parser().format_help() for option in STREAM_ONLY)
    for option in STREAM_ONLY:
        with pytest.raises(SystemExit) as stopped:
            replay.run(["--input", str(logs / "clicks-*"), "--sink", f"sqlite:///{tmp_path / 'a.db'}",
                        "--dead-letter", str(tmp_path / "dead.jsonl"), option, "5"])
        assert option in str(stopped.value.code) and "stream" in str(stopped.value.code)
    assert not (tmp_path / "a.db").exists()
