"""WAL is never lost silently (docs/reliability.md), on real one-unit local clusters:

- WAL written while S3 is Blocked is held on the unit and archived once S3 works again:
  a restore to ``latest`` afterwards has every committed row (it used to be marked
  archived by ``/bin/true`` and deleted: 200 of 700 rows came back, "restore complete");
- an archive with an empty object (a write the S3 server acknowledged and lost) refuses
  a restore to ``latest``, naming the segment, and changes nothing (it used to restore
  up to the hole and say "restore complete").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import repository_bucket, segment_keys, switch_and_wait_archived

from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.unit import Unit

pytestmark = pytest.mark.real

CliRunner = Callable[..., Any]


def _backed_up_cluster(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner, name: str
) -> tuple[Cluster, Unit, str]:
    """A one-unit cluster with S3 set, 100 rows in ``t`` and a full backup of them."""
    cluster = make_cluster(name, units=1)
    unit = cluster.unit(f"{name}/0")
    assert run_cli("s3", "set", "--name", name).returncode == 0
    unit.query("create table t (v int)")
    unit.query("insert into t select generate_series(1, 100)")
    res = run_cli("run", "--name", name, unit.name, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    return cluster, unit, str(json.loads(res.stdout)["results"]["backup-id"])


def _count(unit: Unit) -> int:
    return int(unit.query("select count(*) from t")[0][0])


def test_wal_written_while_s3_is_blocked_is_kept_and_restored(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner, tmp_path: Path
) -> None:
    name, ref = "walhold", "walhold/0"
    cluster, unit, backup_id = _backed_up_cluster(make_cluster, run_cli, name)

    # A wrong secret key: the unit is Blocked, `s3 set` says so, and WAL is held.
    wrong = tmp_path / "secret"
    wrong.write_text("w" * 40 + "\n")
    res = run_cli("s3", "set", "--name", name, "--secret-key-file", str(wrong))
    assert res.returncode == 1, res.stdout + res.stderr
    assert cluster.get_status(ref)[0] == "blocked"
    status = json.loads(run_cli("status", "--name", name, "--json").stdout)
    assert status["s3"]["backups"]["archiving"] == "held"
    # Patroni applies the new archive_command on its next loop (seconds); meanwhile the
    # old one pushes with the refused key, which fails too: WAL is kept all along.
    deadline = time.monotonic() + 30
    while "held" not in str(unit.query("show archive_command")[0][0]):
        assert time.monotonic() < deadline, "the held archive_command never took effect"
        time.sleep(0.5)

    unit.query("insert into t select generate_series(101, 300)")
    held = str(unit.query("select pg_walfile_name(pg_current_wal_lsn())")[0][0])
    for _ in range(3):
        unit.query("select pg_switch_wal()")
        unit.query("insert into t select generate_series(1, 1) where false")
    time.sleep(3)
    failed = int(unit.query("select failed_count from pg_stat_archiver")[0][0])
    assert failed > 0, "the held archive_command must fail, so PostgreSQL keeps the WAL"
    ready = unit.query("select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")
    assert int(ready[0][0]) >= 1, "segments written while Blocked wait on the unit"

    # S3 works again: the held WAL goes to the repository, nothing skipped.
    res = run_cli("s3", "set", "--name", name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.get_status(ref) == ("active", "")
    switch_and_wait_archived(cluster, unit)
    assert held in segment_keys(cluster)

    res = run_cli(
        "run", "--name", name, ref, "restore", f"backup-id={backup_id}",
        "restore-to-time=latest", "--wait", "--timeout", "240", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert _count(cluster.unit(ref)) == 300


def test_an_empty_segment_refuses_a_restore_to_latest_and_changes_nothing(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name, ref = "walgap", "walgap/0"
    cluster, unit, backup_id = _backed_up_cluster(make_cluster, run_cli, name)
    archived = []
    for _ in range(3):
        unit.query("insert into t values (1000)")
        archived.append(switch_and_wait_archived(cluster, unit))

    # What the old local S3 server left after a kill: the object is there, with no bytes.
    lost = archived[1]
    bucket, _ = repository_bucket(cluster)
    key = segment_keys(cluster)[lost]
    with cluster.facts.control():  # the S3 machine, when the units are machines
        bucket.put(key, b"")

    res = run_cli(
        "run", "--name", name, ref, "restore", f"backup-id={backup_id}",
        "restore-to-time=latest", "--wait", "--timeout", "120", timeout=180,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"WAL segment {lost} is empty in the repository" in res.stderr
    assert "nothing was changed" in res.stderr
    assert cluster.get_status(ref) == ("active", "")
    assert _count(unit) == 103

    # list-backups shows the gap beside the backups.
    res = run_cli("run", "--name", name, ref, "list-backups")
    assert res.returncode == 0, res.stderr
    assert "WAL archive gaps" in res.stdout and lost in res.stdout
