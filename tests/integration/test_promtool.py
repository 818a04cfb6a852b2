"""promtool on deploy/prometheus: the rules and the config load, and the rule unit tests
(rules_test.yml: backlog, decrypt failures and the other alerts on synthetic series) pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.services import missing

pytestmark = pytest.mark.integration

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).is_file():
        missing("promtool (Debian package prometheus)")
    return path


def _run(promtool: str, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_check_rules(promtool: str) -> None:
    output = _run(promtool, "check", "rules", "rules.yml")
    assert "SUCCESS" in output


def test_check_config(promtool: str) -> None:
    output = _run(promtool, "check", "config", "prometheus.yml")
    assert "is valid prometheus config file" in output


def test_rule_unit_tests(promtool: str) -> None:
    output = _run(promtool, "test", "rules", "rules_test.yml")
    assert "SUCCESS" in output


def test_rule_unit_tests_cover_backlog_and_decrypt_failures() -> None:
    text = (PROMETHEUS / "rules_test.yml").read_text()
    for alert in ("BrowserSessionsQueueBacklog", "BrowserSessionsDecryptFailed"):
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels:" in text, alert


def test_a_broken_rule_test_fails(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: expecting the decrypt alert before any failure does."""
    (tmp_path / "rules.yml").write_text((PROMETHEUS / "rules.yml").read_text())
    (tmp_path / "rules_test.yml").write_text(
        """rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'browser_sessions_decrypts_total{result="error"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: BrowserSessionsDecryptFailed
        exp_alerts:
          - exp_labels:
              severity: critical
"""
    )
    done = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "BrowserSessionsDecryptFailed" in done.stdout + done.stderr
