"""rollback-restore on a real one-unit local cluster. A backup damaged in the repository
fails to restore before anything changed (pgBackRest restores beside the data directory):
the database runs its own data again. A backup whose WAL is damaged restores, then its
recovery fails after the data was moved aside; rolling it back puts the data from before
the restore in place, on its timeline, with nothing deleted, and the cluster backs up into
the same stanza."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import damage_backup, damage_backup_wal, wait_writable

from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

NAME = "rollback"
UNIT = f"{NAME}/0"


def test_rollback_after_a_failed_restore(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any]
) -> None:
    cluster = make_cluster(NAME, units=1)
    unit = cluster.unit(UNIT)
    assert run_cli("s3", "set", "--name", NAME).returncode == 0
    unit.query("create table t (v text)")
    unit.query("insert into t values ('in the backup')")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    created = res
    unit.query("insert into t values ('after the backup')")
    system_id = unit.query("select system_identifier from pg_control_system()")[0][0]

    # Nothing failed yet: nothing to roll back, and nothing changes.
    res = run_cli("run", "--name", NAME, UNIT, "rollback-restore")
    assert res.returncode == 1
    assert "No failed restore to roll back: the unit is active" in res.stderr

    # A second backup, whose data stays intact: its WAL is damaged below.
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "type=full", "--json")
    assert res.returncode == 0, res.stderr
    second = json.loads(res.stdout)["results"]["backup-id"]
    data_dir = unit.data_dir

    # A backup damaged in the repository (bytes overwritten through the S3 API):
    # pgBackRest's restore beside the data directory fails, and nothing else changed.
    backup_id = json.loads(created.stdout)["results"]["backup-id"]
    damage_backup(cluster, f"local.{NAME}", backup_id)
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={backup_id}",
        "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "pgBackRest could not restore" in res.stderr, res.stderr
    wait_writable(unit)
    assert cluster.get_status(UNIT)[0] == "active"
    assert {r[0] for r in unit.query("select v from t")} == {"in the backup", "after the backup"}
    assert not [p for p in data_dir.parent.iterdir() if p.name != data_dir.name], (
        "no copy moved aside, no partial restore left"
    )

    # Its WAL damaged: the restore's recovery fails after the data was moved aside. (A
    # time the archive never reaches is refused before anything changes: the recoverable
    # window, test_recoverable_window.)
    before = int(unit.query("select pg_walfile_name(pg_current_wal_lsn())")[0][0][:8], 16)
    damage_backup_wal(cluster, second)
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={second}",
        "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert cluster.get_status(UNIT)[0] == "blocked"
    kept = [p for p in data_dir.parent.iterdir() if ".before-restore-" in p.name]
    assert len(kept) == 1

    res = run_cli(
        "run", "--name", NAME, UNIT, "rollback-restore", "--wait", "--timeout", "120",
        timeout=180,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rollback-status: the data from before the restore is back" in res.stdout
    assert "rollback complete on rollback/0: primary on timeline" in res.stderr
    deadline = time.monotonic() + 60
    while not unit.accepts_writes():
        assert time.monotonic() < deadline, "the primary does not accept writes"
        time.sleep(0.3)

    # The data from before the restore, both rows, of the same system. Patroni starts it
    # as a replica (its leader key went with the DCS state) and promotes it: the next
    # timeline, the first after every history file in the archive (the failed restore's
    # recovery never promoted: it made none).
    assert {r[0] for r in unit.query("select v from t")} == {"in the backup", "after the backup"}
    assert unit.query("select system_identifier from pg_control_system()")[0][0] == system_id
    wal = unit.query("select pg_walfile_name(pg_current_wal_lsn())")[0][0]
    assert int(wal[:8], 16) == before + 1
    assert not kept[0].exists(), "moved back, not copied"
    failed = [p for p in data_dir.parent.iterdir() if p.name.startswith(f"{data_dir.name}.fail")]
    assert failed, "the failed attempt's directory is kept aside, not deleted"
    status = json.loads(run_cli("status", "--name", NAME, "--json").stdout)
    (row,) = status["units"]
    assert (row["status"], row["role"]) == ("active", "primary")

    # The cluster goes on: writes, archiving and backups into the same stanza.
    unit.query("insert into t values ('after the rollback')")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    res = run_cli("run", "--name", NAME, UNIT, "list-backups", "format=json", "--json")
    listed = json.loads(res.stdout)["results"]["backups"]
    assert [r["action"] for r in listed].count("full backup") == 3, listed
