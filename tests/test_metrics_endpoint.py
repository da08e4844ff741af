"""The stream's metrics endpoint without a stream: a busy or impossible port is one line before anything runs,
port 0 prints the port it picked, and before the pipeline runs only the process's own metrics answer."""

import socket
import subprocess
import sys

import pytest

from runners.stream_metrics import Exporter
from tests.metrics_cases import ENDPOINT, scrape

pytestmark = pytest.mark.metrics


def test_port_0_picks_a_free_port_and_prints_it_in_one_line(capsys):
    exporter = Exporter("127.0.0.1", 0, 60, None)
    try:
        (line,) = capsys.readouterr().err.splitlines()
        (url,) = ENDPOINT.findall(line)
        samples = scrape(url)
    finally:
        exporter.close()
    assert samples["process_resident_memory_bytes"][()] > 0
    assert not [name for name in samples if name.startswith("adclick_")]  # no pipeline yet


def test_a_busy_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-c", f"from runners.stream_metrics import Exporter; "
                               f"Exporter('127.0.0.1', {port}, 60, None)"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == f"adclick stream: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"


def test_a_port_out_of_range_is_one_line():
    with pytest.raises(SystemExit, match=r"^adclick stream: --metrics-port 70000 is not a TCP port \(0..65535\)$"):
        Exporter("127.0.0.1", 70000, 60, None)


@pytest.mark.parametrize("q, buckets, expected", [
    (0.5, [(1.0, 0), (2.0, 10), (5.0, 20), (float("inf"), 20)], 2.0),  # the rank at a bucket's top: its bound
    (0.75, [(1.0, 0), (2.0, 10), (5.0, 20), (float("inf"), 20)], 3.5),  # halfway into (2, 5]
    (0.75, [(1.0, 4), (float("inf"), 8)], 1.0),  # in +Inf: the highest finite bound, as Prometheus answers
    (0.5, [(1.0, 0), (float("inf"), 0)], None),  # nothing observed
])
def test_the_dashboards_latency_quantile_is_prometheus_histogram_quantile(q, buckets, expected):
    from serving.health import quantile
    assert quantile(q, buckets) == expected
