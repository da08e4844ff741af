"""`adclick serve`'s token and limit options: a bind beyond loopback needs a token file, a token file others can
read, an empty or unreadable one, and a bad limit are each one line before it listens; with a token it binds
0.0.0.0 and answers only requests that carry it."""

import os
import secrets
import subprocess
import sys

import httpx
import psutil
import pytest

from runners import serve
from sinks.sqlite import connect
from tests.servers.api import api_server


def refusal(*argv):
    """The one line `adclick serve` exits with, in process (every check here runs before it listens)."""
    with pytest.raises(SystemExit) as stopped:
        serve.run(list(argv))
    return str(stopped.value.code)


def token_file(tmp_path, text, mode=0o600):
    path = tmp_path / "token"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "clicks.db"
    connect(str(path)).close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.com"])
def test_beyond_loopback_without_a_token_file_it_refuses(db, host):
    assert refusal("--sink", db, "--host", host) == (
        f"adclick serve: --host {host} is beyond loopback: give --auth-token-file PATH (a file holding the bearer "
        "token every /v1 request must send)")


def test_the_refusal_is_one_line_on_stderr_and_nothing_listens(db):
    done = subprocess.run([sys.executable, "-m", "runners.cli", "serve", "--sink", db, "--host", "0.0.0.0",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "dashboard at" not in done.stdout
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "adclick serve: --host 0.0.0.0 is beyond loopback: give --auth-token-file PATH (a file holding the bearer "
        "token every /v1 request must send)"]


def test_bad_token_files_are_one_line(db, tmp_path):
    missing = str(tmp_path / "absent")
    assert refusal("--sink", db, "--auth-token-file", missing) == \
        f"adclick serve: cannot read --auth-token-file {missing}: No such file or directory"
    assert refusal("--sink", db, "--auth-token-file", str(tmp_path)) == \
        f"adclick serve: cannot read --auth-token-file {tmp_path}: Is a directory"
    empty = token_file(tmp_path, "  \n")
    assert refusal("--sink", db, "--auth-token-file", empty) == f"adclick serve: --auth-token-file {empty} is empty"
    shared = token_file(tmp_path, secrets.token_urlsafe(24), 0o644)
    assert refusal("--sink", db, "--auth-token-file", shared) == \
        f"adclick serve: --auth-token-file {shared} is readable by others: chmod 600 {shared}"
    for weak in ("short", "has a space in the middle of it", "nön-ascii-token-0123456789"):
        path = token_file(tmp_path, weak)
        assert refusal("--sink", db, "--auth-token-file", path).startswith(
            f"adclick serve: the token in {path} must be at least 16 printable ASCII characters without spaces")
    if os.geteuid() != 0:  # root reads any file
        unreadable = token_file(tmp_path, secrets.token_urlsafe(24), 0o000)
        assert "Permission denied" in refusal("--sink", db, "--auth-token-file", unreadable)


@pytest.mark.parametrize("option", ["--max-count", "--max-window-minutes", "--max-range-minutes", "--max-url-length",
                                    "--max-in-flight", "--workers"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_limit_below_one_is_one_line(db, option, value):
    assert refusal("--sink", db, option, value) == f"adclick serve: {option} must be at least 1, got {value}"


@pytest.mark.parametrize("loaded_sink", ["sqlite"], indirect=True)  # binding and the token do not depend on the store
def test_with_a_token_it_binds_every_address_and_answers_only_with_the_token(loaded_sink, tmp_path):
    token = secrets.token_urlsafe(32)
    path = token_file(tmp_path, token + "\n")
    with api_server(loaded_sink, tmp_path / "serve.log", "--host", "0.0.0.0", "--auth-token-file", path) as (base,
                                                                                                            pid):
        listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [address.ip for address in listening] == ["0.0.0.0"]
        assert httpx.get(f"{base}/v1/status").status_code == 401
        assert httpx.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {token}"}).json()["store"] == "sqlite"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "store": "sqlite"}
