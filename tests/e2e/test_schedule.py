"""Scheduled backups on a real one-unit local cluster (issue 15): ``up`` starts the
cluster's agent (a recorded process that ``down`` stops); a schedule of every minute
produces backups, annotated ``scheduled`` in list-backups; a run missed while the cluster
was down runs once when it is up again, not once per missed minute."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgbackups.adapters import processes
from pgbackups.core.ids import format_id
from pgbackups.local.runtime.cluster import AGENT, Cluster, up
from pgbackups.local.runtime.host import Runtime, peer_store

pytestmark = pytest.mark.real

CliRunner = Callable[..., Any]


def _scheduled(run_cli: CliRunner, name: str, ref: str) -> list[str]:
    res = run_cli("run", "--name", name, ref, "list-backups", "format=json", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["results"]["backups"]
    return [r["backup-id"] for r in rows if r.get("trigger") == "scheduled"]


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(5)


def test_every_minute_produces_backups_and_a_missed_window_runs_once(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name, ref = "sched", "sched/0"
    cluster = make_cluster(name, units=1)
    agent = cluster.service(AGENT)
    assert agent is not None and agent.is_ours(), "up starts the agent"
    assert run_cli("s3", "set", "--name", name).returncode == 0

    res = run_cli("schedule", "set", "--name", name, "--full", "61 * * * *")
    assert res.returncode == 2 and "minute '61' is outside 0-59" in res.stderr
    res = run_cli("schedule", "set", "--name", name, "--full", "* * * * *")
    assert res.returncode == 0, res.stderr
    assert "full-schedule: * * * * *" in run_cli("schedule", "show", "--name", name).stdout
    _wait_for(lambda: len(_scheduled(run_cli, name, ref)) >= 2, 240, "two scheduled backups")
    log_text = cluster.paths.agent_log.read_text()
    assert "Scheduled full backup for" in log_text and "created" in log_text

    # An hourly schedule whose minute was five minutes ago: set now, it waits for the
    # next hour (nothing runs for a minute before it was set).
    slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    expression = f"{slot.minute} * * * *"
    assert run_cli("schedule", "set", "--name", name, "--full", expression).returncode == 0
    _wait_for(  # an agent pass records the new schedule
        lambda: (
            peer_store(cluster)
            .app_bag(writable=False)
            .get("schedule-full", "")
            .startswith(expression + "|")
        ),
        60,
        "the new schedule recorded",
    )
    before = _scheduled(run_cli, name, ref)

    # Down: the agent stops with the rest.
    assert run_cli("down", "--name", name).returncode == 0
    assert not processes.is_alive(agent.pid)
    assert cluster.service(AGENT) is None
    # As if the cluster had been down for three hourly runs: the last handled minute is
    # three hours back.
    app = peer_store(cluster).app_bag(writable=True)
    assert app["schedule-full"].startswith(expression + "|")
    app["schedule-full"] = f"{expression}|{format_id(slot - timedelta(hours=3))}"

    up(name, home=cluster.home)
    assert cluster.service(AGENT) is not None
    _wait_for(lambda: len(_scheduled(run_cli, name, ref)) > len(before), 120, "the missed run")
    time.sleep(32)  # two more agent passes (every 15 s): nothing more runs
    after = _scheduled(run_cli, name, ref)
    assert len(after) == len(before) + 1
    assert peer_store(cluster).app_bag(writable=False)["schedule-full"] == (
        f"{expression}|{format_id(slot)}"
    )


def test_a_scheduled_backup_runs_on_the_streaming_replica_with_tls(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name = "schedtls"
    cluster = make_cluster(name, units=2, tls=True)
    with cluster.operation("up"):  # what `pgbackups up --tls` does after up(): TLS servers
        Runtime(cluster).certificates_changed()
    res = run_cli("s3", "set", "--name", name)
    assert res.returncode == 0, res.stderr
    primary = cluster.primary()
    assert primary is not None
    replica = next(u.name for u in cluster.units() if u.name != primary.name)
    res = run_cli("schedule", "set", "--name", name, "--full", "* * * * *")
    assert res.returncode == 0, res.stderr
    _wait_for(lambda: len(_scheduled(run_cli, name, primary.name)) >= 1, 240, "a scheduled backup")
    store = peer_store(cluster)
    # The report follows the annotation in the same pass.
    _wait_for(lambda: "scheduled-backup-done" in store.unit_bag(replica), 60, "the report")
    done = store.unit_bag(replica).get("scheduled-backup-done", "")
    assert done.startswith("full|") and f"|{replica}|" in done, done
    assert store.unit_bag(primary.name).get("scheduled-backup-done") is None
    # The replica's report names a backup that list-backups marks scheduled.
    assert done.rsplit("|", 1)[1] in _scheduled(run_cli, name, primary.name)
    assert run_cli("schedule", "unset", "--name", name).returncode == 0
