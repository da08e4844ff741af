"""The example Prometheus config and alert rules in ops/prometheus/ are what Prometheus 2.42 accepts, and each
alert fires on a sick stream and not on a healthy one (promtool's rule unit tests, alerts_test.yml)."""

import subprocess
from pathlib import Path

import pytest

from tests.servers import require_executable
from tests.servers.prometheus import PROMTOOL

pytestmark = pytest.mark.metrics
OPS = Path(__file__).resolve().parent.parent / "ops" / "prometheus"


@pytest.mark.parametrize("command", [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                                     ["test", "rules", "alerts_test.yml"]], ids=" ".join)
def test_promtool_accepts(command):
    require_executable(PROMTOOL, "Debian's prometheus (promtool)")
    done = subprocess.run([PROMTOOL, *command], cwd=OPS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_rule_test_that_expects_the_wrong_alert_fails(tmp_path):
    """promtool's unit tests do check what fires: the same series with the healthy instance expected fail."""
    require_executable(PROMTOOL, "Debian's prometheus (promtool)")
    (tmp_path / "alerts.yml").write_text((OPS / "alerts.yml").read_text())
    wrong = (OPS / "alerts_test.yml").read_text().replace(
        'instance: "sick:9464"}\n            exp_annotations:\n              summary: "adclick stream sick:9464: no',
        'instance: "well:9464"}\n            exp_annotations:\n              summary: "adclick stream well:9464: no')
    assert wrong != (OPS / "alerts_test.yml").read_text()
    (tmp_path / "alerts_test.yml").write_text(wrong)
    done = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "AdclickSinkFreshnessStale" in done.stdout + done.stderr
