"""Disaster recovery on real local clusters (docs/behaviour/restore.md, "Restoring another
cluster's backups"): a new 2-unit cluster pointed at the repository of a cluster that is
gone restores its backup with one action; `--wait` exits 0 and reports it restored with
backups paused; both units hold exactly the backed-up rows (the replica copied the
restored primary); a path of its own clears the block and the new cluster backs up there,
leaving the old repository as it was."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgbackups.core import messages as msg
from pgbackups.local.machinery import programs
from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.host import Runtime, read_s3_parameters, write_s3_parameters

# Loopback: the two clusters must reach one S3 server, as two real clusters reach one
# bucket. With units as machines each local cluster has a private network and an S3 server
# of its own, which the other cluster cannot reach.
pytestmark = [pytest.mark.real, pytest.mark.loopback]

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


def backups(run_cli: Cli, name: str, unit: str) -> list[dict[str, Any]]:
    res = run_cli("run", "--name", name, unit, "list-backups", "format=json", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)["results"]["backups"]
    return rows


def point_at(cluster: Cluster, parameters: dict[str, str]) -> None:
    """What `pgbackups s3 set` does: store the settings, fire s3-credentials-changed."""
    write_s3_parameters(cluster, parameters)
    Runtime(cluster).fire_all("s3-credentials-changed")


def shutdown_state(unit: Any) -> str:
    """pg_controldata's "Database cluster state" of a stopped unit's data directory."""
    done = subprocess.run(
        [str(programs.pg_bin_dir() / "pg_controldata"), str(unit.data_dir)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return next(
        line.split(":", 1)[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("Database cluster state:")
    )


def rows_on(unit: Any) -> dict[str, int]:
    return {str(v): int(c) for v, c in unit.query("select v, count(*) from t group by v")}


def test_a_new_cluster_restores_a_gone_clusters_backup(
    make_cluster: Callable[..., Cluster], run_cli: Cli
) -> None:
    old = make_cluster("drold", units=1)
    # A path, not the bucket's root: the new cluster's own path must not lie inside it.
    assert run_cli("s3", "set", "--name", "drold", "--path", "/drold").returncode == 0
    old_unit = old.unit("drold/0")
    old_unit.query("create table t (id bigserial primary key, v text)")
    old_unit.query("insert into t (v) select 'backed-up' from generate_series(1, 40)")
    res = run_cli("run", "--name", "drold", "drold/0", "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = json.loads(res.stdout)["results"]["backup-id"]
    old_unit.query("insert into t (v) select 'not-backed-up' from generate_series(1, 9)")
    old_settings = read_s3_parameters(old)
    assert old_settings is not None
    before = backups(run_cli, "drold", "drold/0")

    new = make_cluster("drnew", units=2)
    point_at(new, old_settings)  # the same bucket and path: the old cluster's repository
    leader = new.leader
    assert new.get_status(leader) == ("blocked", msg.ANOTHER_CLUSTER_REPOSITORY)

    res = run_cli(
        "run", "--name", "drnew", leader, "restore", f"backup-id={backup_id}",
        "--wait", "--timeout", "400", timeout=500,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    restored = msg.restored_from_another_cluster()
    assert f"restore complete on {leader}: blocked {restored}" in res.stderr
    assert new.get_status(leader) == ("blocked", restored)

    # Both units hold exactly the backed-up rows; the replica streams the restored primary.
    deadline = time.monotonic() + 90
    seen: dict[str, object] = {}
    while time.monotonic() < deadline:
        for unit in new.units():
            try:
                seen[unit.name] = rows_on(unit)
            except psycopg.Error as exc:
                seen[unit.name] = str(exc).strip()
        replica = next(u for u in new.units() if u.name != leader)
        if all(v == {"backed-up": 40} for v in seen.values()) and replica.is_streaming():
            break
        time.sleep(1)
    else:
        raise AssertionError(f"rows per unit: {seen}")
    status = json.loads(run_cli("status", "--name", "drnew", "--json").stdout)
    assert {u["status"] for u in status["units"] if u["name"] != leader} == {"active"}
    # update-status's S3 retry keeps saying what happened and what to do.
    assert new.get_status(leader) == ("blocked", restored)

    # A path of its own: the block clears, backups go there; the old repository is as it was.
    point_at(new, {**old_settings, "path": "/drnew"})
    assert new.get_status(leader) == ("active", "")
    primary = new.primary()
    assert primary is not None
    res = run_cli("run", "--name", "drnew", primary.name, "create-backup", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    own = backups(run_cli, "drnew", leader)
    assert [(r["action"], r["status"]) for r in own] == [("full backup", "finished")]
    assert backups(run_cli, "drold", "drold/0") == before

    # `down` stops the restored primary cleanly through the Patroni that took it over. It
    # once sent the restore's PostgreSQL a smart shutdown first, which waits for Patroni's
    # connection to end, and SIGKILLed the primary 30 s later.
    res = run_cli("down", "--name", "drnew")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "killing it" not in res.stderr, res.stderr
    states = {unit.name: shutdown_state(unit) for unit in new.units()}
    expected = {
        unit.name: "shut down" if unit.name == primary.name else "shut down in recovery"
        for unit in new.units()
    }
    assert states == expected
