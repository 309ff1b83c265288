"""The charm's alert rules through the real promtool (Prometheus 2.42, from Debian's
package; `make setup` extracts it): the rules file is valid PromQL, and each alert fires
on the series ``pgbackups metrics`` exports when it must and not otherwise
(alerts/pgbackups.test.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).parents[2]
PROMTOOL = ROOT / ".cache/prometheus/usr/bin/promtool"
RULES = ROOT / "charm/src/prometheus_alert_rules/pgbackups.rules.yaml"
TESTS = Path(__file__).parent / "alerts/pgbackups.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run make setup (make promtool)"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 11 rules found" in res.stdout


def test_each_alert_fires_when_it_must() -> None:
    res = promtool("test", "rules", str(TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
