"""The alert rules as the charm publishes them on ``cos-agent`` (scoped to the application,
topology labels added), through the real promtool (`make setup` extracts it): valid, and
each alert sees this application's series only (another cluster's series in the same
Prometheus neither fire ours nor hide an absence). And the metrics endpoint as its
systemd unit runs it, answering real HTTP requests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

import cos_agent
from metrics_service import UNIT, MetricsService
from pgbackups.core.host import CommandResult

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
    assert "SUCCESS: 11 rules found" in res.stdout


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


# --- the endpoint as systemd runs it ---------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as nobody: needs root")
def test_the_service_as_its_unit_runs_it_answers_only_with_credentials() -> None:
    """The files MetricsService writes (root's, 0640 root:nogroup), the unit file's own
    ExecStart, as nobody:nogroup: a real HTTP request without and with the credentials."""
    folder = Path(tempfile.mkdtemp(prefix="pgbackups-metrics-"))
    folder.chmod(0o755)  # nobody must reach the service's folder inside it, as in /var/lib
    process: subprocess.Popen[bytes] | None = None
    try:
        service = MetricsService(str(folder), str(folder), _NoSystemctl())
        password = cos_agent.new_password()
        port = _free_port()
        service.configure(host="127.0.0.1", port=port, user="cos-agent", password=password)
        service.publish('pgbackups_stanza_status_code{stanza="s"} 0.0\n')
        unit = (folder / UNIT).read_text()
        exec_start = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
        argv = exec_start.removeprefix("ExecStart=").split()
        user = next(x for x in unit.splitlines() if x.startswith("User=")).split("=")[1]
        group = next(x for x in unit.splitlines() if x.startswith("Group=")).split("=")[1]
        process = subprocess.Popen(
            ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
             *argv],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while (code := _status(url, None))[0] == 0:  # not listening yet
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not listen within 30 s"
            time.sleep(0.1)
        assert code == (401, "authentication required\n")
        assert _status(url, ("cos-agent", "not-the-password"))[0] == 401
        assert _status(url, ("cos-agent", password)) == (
            200,
            'pgbackups_stanza_status_code{stanza="s"} 0.0\n',
        )
        # Bound to loopback only.
        assert _listening_on(port) == {"127.0.0.1"}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(folder)


class _NoSystemctl:
    def __call__(self, args: list[str], **kwargs: object) -> CommandResult:
        return CommandResult(tuple(args), 0, "", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str, credentials: tuple[str, str] | None) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310 - an http URL of the test's own
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - same
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def _listening_on(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at ``port`` (/proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hexport = local.partition(":")
        if state == "0A" and int(hexport, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found
