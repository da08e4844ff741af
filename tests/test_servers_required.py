"""A server binary that is missing skips its tests on a developer's machine, but fails the run in CI.

Each case runs pytest in a child process on a one-test file whose fixture's binary is moved to a
path that does not exist, once with ADCLICK_REQUIRE_SERVERS=1 (as .ci/run sets it) and once without.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REQUIRE_SERVERS

ROOT = Path(__file__).resolve().parent.parent
MISSING = "/nonexistent/adclick-test/server"
SERVERS = [  # (fixture module, its binary's location, the fixture)
    ("tests.servers.bigtable", "CBTEMULATOR", "bigtable_emulator"),
    ("tests.servers.pubsub", "EMULATOR", "pubsub_emulator"),
    ("tests.servers.chromium", "CHROMIUM", "page"),
]


def run_without_binary(tmp_path: Path, module: str, location: str, fixture: str, require: bool):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_one.py").write_text(
        f"import {module} as server\n\nserver.{location} = {MISSING!r}\n\n\n"
        f"def test_needs_the_server({fixture}):\n    pass\n")
    env = {name: value for name, value in os.environ.items() if name != REQUIRE_SERVERS}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins (schemathesis, hypothesis) load slowly
    if require:
        env[REQUIRE_SERVERS] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", module,
                           "test_one.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, location, fixture", SERVERS)
def test_a_missing_server_fails_the_run_when_servers_are_required(tmp_path, module, location, fixture):
    run = run_without_binary(tmp_path, module, location, fixture, require=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"is not installed at {MISSING}" in run.stdout and "1 error" in run.stdout, run.stdout
    assert "skipped" not in run.stdout


@pytest.mark.parametrize("module, location, fixture", SERVERS)
def test_a_missing_server_skips_on_a_developers_machine(tmp_path, module, location, fixture):
    run = run_without_binary(tmp_path, module, location, fixture, require=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"is not installed at {MISSING}" in run.stdout and "1 skipped" in run.stdout, run.stdout
