"""The `adclick` command as a user runs it: generate, replay, top, and clear errors."""

import collections
import json
import os
import subprocess
import sys

import pytest

ADCLICK = os.path.join(os.path.dirname(sys.executable), "adclick")


def adclick(*args, cwd):
    return subprocess.run([ADCLICK, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_generate_replay_top_like_make_run(tmp_path):
    generated = adclick("generate", "--events", "2000", "--out", "log", "--seed", "3", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    replayed = adclick("replay", "--input", "log/clicks-*", "--sink", "sqlite:///out/a.db",
                       "--summary", "summary.json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    manifest = json.loads((tmp_path / "log" / "manifest.json").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [summary[k] for k in ("read", "unique", "duplicates", "malformed")] == \
        [manifest[k] for k in ("read", "unique", "duplicates", "malformed")]
    assert "read = unique + duplicates + malformed: yes" in replayed.stdout

    truth = [json.loads(line) for line in (tmp_path / "log" / "truth.jsonl").read_text().splitlines()]
    per_minute = collections.Counter(e["click_ts"] // 60_000 * 60_000 for e in truth)
    busiest = min(per_minute, key=lambda minute: (-per_minute[minute], minute))
    top_ad = min(collections.Counter(e["ad_id"] for e in truth if e["click_ts"] // 60_000 * 60_000 == busiest).items(),
                 key=lambda item: (-item[1], item[0]))
    top = adclick("top", "--sink", "sqlite:///out/a.db", "--count", "1", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    assert f"({busiest}): {per_minute[busiest]:,} clicks" in top.stdout
    assert top.stdout.split()[-3:] == ["1", top_ad[0], f"{top_ad[1]:,}"]


@pytest.mark.parametrize("args, message", [
    (["replay", "--input", "nothing-*.jsonl"], "no input file matches"),
    (["replay", "--input", "x", "--sink", "mysql://db"], "unknown sink"),
    (["replay", "--input", "x", "--filters", "colour"], "unknown filter dimension colour"),
    (["generate", "--out", "g", "--events", "0"], "at least 1"),
    (["frobnicate"], "usage: adclick COMMAND"),
])
def test_bad_arguments_get_one_clear_line_not_a_traceback(tmp_path, args, message):
    (tmp_path / "x").write_text("{}\n")
    result = adclick(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command(tmp_path):
    result = adclick("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("replay", "generate", "top", "bench"):
        assert f"  {command}" in result.stdout


def test_ctrl_c_in_a_command_without_its_own_handler_is_one_line(tmp_path):
    """A Ctrl-C that no command catches (here while generating a large log) ends in one line, no traceback."""
    import signal
    import time
    process = subprocess.Popen([ADCLICK, "generate", "--events", "20000000", "--out", "log"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "adclick generate: interrupted"
