"""The alert rules as the charm publishes them on ``cos-agent`` (scoped to the application,
topology labels added), through the real promtool (`make setup` extracts it): valid, and
each alert sees this application's series only (another cluster's series in the same
Prometheus neither fire ours nor hide an absence)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import cos_agent

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / ".cache/prometheus/usr/bin/promtool"
TOPOLOGY = cos_agent.Topology(
    model="prod",
    model_uuid="00000000-0000-4000-8000-000000000001",
    application="pgbackups-postgresql",
    charm_name="pgbackups-postgresql",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run make setup (make promtool)"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False
    )


def series(name: str, app: str, **labels: str) -> str:
    """A series as the agent scrapes it: our labels plus the Juju topology."""
    topo = {
        "juju_model": TOPOLOGY.model,
        "juju_model_uuid": TOPOLOGY.model_uuid,
        "juju_application": app,
        "juju_unit": f"{app}/0",
        **labels,
    }
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in topo.items()) + "}"


def ours(**extra: str) -> dict[str, str]:
    """The labels an alert of ours carries: the rule's topology, the series' unit."""
    return {**TOPOLOGY.labels(), **extra}


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "scoped.rules.yaml"
    path.write_text(json.dumps(cos_agent.alert_rules(TOPOLOGY)))
    return path


def test_the_scoped_rules_are_valid(rules_file: Path) -> None:
    res = promtool("check", "rules", str(rules_file))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 10 rules found" in res.stdout


def test_each_alert_sees_this_application_only(rules_file: Path, tmp_path: Path) -> None:
    other = "other-postgresql"
    app = TOPOLOGY.application
    unit = f"{app}/0"
    tests: list[dict[str, Any]] = [
        {
            # Both clusters have no finished backup: only ours is this charm's alert.
            "interval": "1m",
            "input_series": [
                {
                    "series": series("pgbackups_backups", app, stanza="s", status="finished"),
                    "values": "0x90",
                },
                {
                    "series": series("pgbackups_backups", other, stanza="s", status="finished"),
                    "values": "0x90",
                },
                {
                    "series": series("pgbackups_stanza_status_code", app, stanza="s"),
                    "values": "2x90",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "70m",
                    "alertname": "PgBackupsNoBackup",
                    "exp_alerts": [
                        {
                            "exp_labels": ours(
                                severity="warning", stanza="s", status="finished", juju_unit=unit
                            ),
                            "exp_annotations": {
                                "summary": "s has no finished backup",
                                "description": "Nothing can be restored: take a full backup.",
                            },
                        }
                    ],
                },
                {
                    "eval_time": "10m",
                    "alertname": "PgBackupsStanzaError",
                    "exp_alerts": [
                        {
                            "exp_labels": ours(severity="critical", stanza="s", juju_unit=unit),
                            "exp_annotations": {
                                "summary": "Stanza s reports status 2",
                                "description": (
                                    "pgBackRest status code: 1 missing stanza path, "
                                    "2 no valid backups."
                                ),
                            },
                        }
                    ],
                },
            ],
        },
        {
            # Only the other cluster reports: ours is absent, and says so.
            "interval": "1m",
            "input_series": [
                {
                    "series": series("pgbackups_stanza_status_code", other, stanza="t"),
                    "values": "0x30",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "PgBackupsMetricsAbsent",
                    "exp_alerts": [
                        {
                            "exp_labels": ours(severity="warning"),
                            "exp_annotations": {
                                "summary": "No pgbackups metrics for 10 minutes",
                                "description": (
                                    "Nothing reports the backup metrics; backups may fail "
                                    "unnoticed."
                                ),
                            },
                        }
                    ],
                }
            ],
        },
        {
            # Ours failed after its success; the other cluster's later success of the same
            # stanza name and type must not hide it.
            "interval": "1m",
            "input_series": [
                {
                    "series": series(
                        "pgbackups_backup_last_success_timestamp_seconds",
                        app,
                        stanza="s",
                        type="full",
                    ),
                    "values": "0x20",
                },
                {
                    "series": series(
                        "pgbackups_backup_last_failure_timestamp_seconds",
                        app,
                        stanza="s",
                        type="full",
                    ),
                    "values": "60x20",
                },
                {
                    "series": series(
                        "pgbackups_backup_last_success_timestamp_seconds",
                        other,
                        stanza="s",
                        type="full",
                    ),
                    "values": "600x20",
                },
                {
                    "series": series("pgbackups_archive_failed_total", other, stanza="t"),
                    "values": "0+1x20",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": "PgBackupsBackupError",
                    "exp_alerts": [
                        {
                            "exp_labels": ours(
                                severity="critical", stanza="s", type="full", juju_unit=unit
                            ),
                            "exp_annotations": {
                                "summary": "The newest full backup of s failed",
                                "description": "list-backups shows its error.",
                            },
                        }
                    ],
                },
                {"eval_time": "15m", "alertname": "PgBackupsArchivingFailing", "exp_alerts": []},
            ],
        },
    ]
    test_file = tmp_path / "scoped.test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
        )
    )
    res = promtool("test", "rules", str(test_file))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
