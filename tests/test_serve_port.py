"""`adclick serve` on a port it cannot have says so in one line and exits non-zero, before it prints the
dashboard's URL (it used to print the URL, then a traceback); port 0 picks a free port and prints it."""

import socket
import subprocess
import sys

import httpx

from sinks.sqlite import connect

URL_LINE = "dashboard at http://"


def serve(db, *argv, timeout=30):
    done = subprocess.run([sys.executable, "-m", "runners.cli", "serve", "--sink", f"sqlite:///{db}", *argv],
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, [line for line in done.stderr.splitlines() if line.strip()]


def database(tmp_path):
    db = tmp_path / "clicks.db"
    connect(str(db)).close()
    return db


def test_a_port_out_of_range_is_one_line_before_the_url(tmp_path):
    code, stdout, stderr = serve(database(tmp_path), "--port", "99999")
    assert code != 0 and URL_LINE not in stdout
    assert stderr == ["adclick serve: --port 99999 is not a TCP port (0..65535)"]


def test_a_busy_port_is_one_line_before_the_url(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stdout, stderr = serve(database(tmp_path), "--port", str(port))
    assert code != 0 and URL_LINE not in stdout
    assert stderr == [f"adclick serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_port_zero_serves_on_the_free_port_it_prints(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "runners.cli", "serve", "--sink",
                                f"sqlite:///{database(tmp_path)}", "--port", "0", "--log-level", "warning"],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert URL_LINE in line
        base = line.split(URL_LINE, 1)[1].split("/dashboard/")[0]
        assert int(base.rsplit(":", 1)[1]) > 0
        assert httpx.get(f"http://{base}/healthz", timeout=10).json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(15)
