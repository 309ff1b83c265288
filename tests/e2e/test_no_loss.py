"""Nothing acknowledged is ever lost (docs/reliability.md), end to end on real one-unit
local clusters, for the two faults that lost committed rows:

- the local S3 server goes away (SIGKILL, or a clean ``pgbackups down``) right after
  pgBackRest pushed a WAL segment: after ``up`` the repository verifies clean and a
  restore to ``latest`` has every committed row (rclone's write-back cache used to serve
  the last objects empty: verify listed them invalid, and a restore came back short);
- Patroni dies while its restore's ``pgbackrest restore`` copies files: rollback-restore
  puts the old data back only once nothing writes into the data directory, and every row
  committed before the restore is there, uncorrupted (the orphaned restore used to keep
  writing into the data that was moved back).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import switch_and_wait_archived

from pgbackups.adapters import processes
from pgbackups.local.machinery import programs
from pgbackups.local.runtime.cluster import S3, Cluster
from pgbackups.local.runtime.unit import Unit, stanza_name

pytestmark = pytest.mark.real

CliRunner = Callable[..., Any]
WRITE_BACK_SETTLED = 7.0


def _rows(unit: Unit) -> list[int]:
    return [int(r[0]) for r in unit.query("select v from t order by v")]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.5)


def _assert_verifies_clean(cluster: Cluster, unit: Unit) -> None:
    """``pgbackrest verify`` (as the database user, with the unit's own configuration)
    finds no invalid file. It exits 0 even when it finds some: it lists them as
    ``status: error`` lines after its first line (which holds the options)."""
    with cluster.facts.inside(unit.machine):  # on the unit's machine, which reaches S3
        verify = processes.run(
            ["pgbackrest", f"--config={unit.pgbackrest_config}", f"--stanza={stanza_name(cluster)}",
             "verify", "--log-level-console=info"],
            user=cluster.db_user,
            timeout=180,
        )  # fmt: skip
    assert verify.ok, verify.stdout + verify.stderr
    found = verify.stdout.splitlines()[1:]
    assert found and "verify command end: completed successfully" in found[-1], verify.stdout
    assert not [line for line in found if "error" in line], verify.stdout


@pytest.mark.parametrize("how", ["sigkill", "down"])
def test_what_the_s3_server_acknowledged_restores_after_it_goes_away(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner, how: str
) -> None:
    name = f"ack{how}"
    ref = f"{name}/0"
    cluster = make_cluster(name, units=1)
    unit = cluster.unit(ref)
    assert run_cli("s3", "set", "--name", name).returncode == 0
    unit.query("create table t (v int)")
    unit.query("insert into t select generate_series(1, 1000)")
    res = run_cli("run", "--name", name, ref, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = str(json.loads(res.stdout)["results"]["backup-id"])
    unit.query("insert into t select generate_series(1001, 1500)")
    committed = _rows(unit)
    last = switch_and_wait_archived(cluster, unit)

    # The segment was acknowledged: the server goes away at once.
    if how == "sigkill":
        s3 = cluster.state().processes[S3]
        assert s3.is_ours()
        os.kill(s3.pid, signal.SIGKILL)
    else:
        res = run_cli("down", "--name", name)
        assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("up", "--name", name, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.service_running(S3)
    # Read only once a write-back cache, had the server one, would have flushed what it
    # held at the restart (rclone's --vfs-write-back, 5 s): the old server served the
    # objects right after a restart and lost their bodies in that flush.
    time.sleep(WRITE_BACK_SETTLED)

    _assert_verifies_clean(cluster, unit)
    res = run_cli(
        "run", "--name", name, ref, "restore", f"backup-id={backup_id}",
        "restore-to-time=latest", "--wait", "--timeout", "240", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.get_status(ref) == ("active", "")
    assert _rows(cluster.unit(ref)) == committed, f"rows up to segment {last} are missing"


# About 100 MB of poorly compressible rows, so that the restore has files to copy.
BIG_TABLE = (
    "create table big (id int primary key, v text);"
    "insert into big select g, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text)"
    " || md5((g * 11)::text) from generate_series(1, 600000) g"
)
BIG_SUMMARY = "select count(*), sum(hashtext(v)::bigint) from big"


def _restore_processes(unit: Unit) -> list[processes.ProcessInfo]:
    """pgBackRest processes restoring into the unit's data directory (the restore and
    its workers: each names the data directory in ``--pg1-path=``)."""
    return [
        p
        for p in processes.processes_using(unit.data_dir)
        if p.argv
        and os.path.basename(p.argv[0]) == "pgbackrest"
        and any(a.startswith("restore") for a in p.argv)
    ]


def _cluster_pgbackrest(cluster: Cluster, *, but_archiving: bool = False) -> list[str]:
    """Every pgBackRest process working on the cluster's files (but the archive-push a
    running primary's archiver starts, with ``but_archiving``)."""
    return [
        p.describe()
        for p in processes.processes_using(cluster.paths.root)
        if p.argv
        and os.path.basename(p.argv[0]) == "pgbackrest"
        and not (but_archiving and any(a.startswith("archive-push") for a in p.argv))
    ]


def _amcheck(unit: Unit) -> subprocess.CompletedProcess[str]:
    """pg_amcheck over every table and B-tree index of every database (heap pages, and
    that each index holds exactly the table's tuples)."""
    return subprocess.run(
        [str(programs.pg_bin_dir() / "pg_amcheck"), *unit.client_args(), "--all",
         "--install-missing", "--heapallindexed", "--parent-check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip


def _assert_whole(unit: Unit, committed: list[int], big: tuple[Any, ...]) -> None:
    amcheck = _amcheck(unit)
    assert amcheck.returncode == 0 and not amcheck.stdout.strip(), amcheck.stdout + amcheck.stderr
    assert _rows(unit) == committed
    assert tuple(unit.query(BIG_SUMMARY)[0]) == big


def _moved_aside(unit: Unit) -> list[str]:
    return [p.name for p in unit.data_dir.parent.iterdir() if ".before-restore-" in p.name]


def _rollback_with_s3_paused(
    cluster: Cluster, unit: Unit, s3_pid: int, restoring: list[processes.ProcessInfo]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """rollback-restore --wait while the S3 server is paused (SIGSTOP): a pgBackRest
    restore still running waits for it mid-copy, as a restore from a remote S3 does for
    minutes (this one would take two seconds). The server goes on once the rollback moved
    the old data back, or ended. Returns the rollback's outcome and the restore processes
    that were still running when the old data came back: each writes into it."""
    argv = [sys.executable, "-m", "pgbackups", "run", "--name", cluster.name, unit.name,
            "rollback-restore", "--wait", "--timeout", "180"]  # fmt: skip
    alive_at_move_back: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as rollback:
        try:
            deadline = time.monotonic() + 60
            while rollback.poll() is None and _moved_aside(unit):
                assert time.monotonic() < deadline, "the rollback never moved the data back"
                time.sleep(0.02)
            if not _moved_aside(unit):
                alive_at_move_back = [p.describe() for p in restoring if p.is_same()]
        finally:
            os.kill(s3_pid, signal.SIGCONT)
        out, err = rollback.communicate(timeout=240)
    return subprocess.CompletedProcess(argv, rollback.returncode, out, err), alive_at_move_back


def test_a_restore_whose_patroni_dies_is_stopped_before_the_old_data_comes_back(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name, ref = "orphan", "orphan/0"
    cluster = make_cluster(name, units=1)
    unit = cluster.unit(ref)
    assert run_cli("s3", "set", "--name", name).returncode == 0
    unit.query(BIG_TABLE)
    unit.query("create table t (v int primary key)")
    unit.query("insert into t select generate_series(1, 100)")
    res = run_cli("run", "--name", name, ref, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = str(json.loads(res.stdout)["results"]["backup-id"])
    unit.query("insert into t select generate_series(101, 150)")  # after the backup
    committed = _rows(unit)
    assert len(committed) == 150
    big = tuple(unit.query(BIG_SUMMARY)[0])

    res = run_cli("run", "--name", name, ref, "restore", f"backup-id={backup_id}")
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 120
    while not (restoring := _restore_processes(unit)):
        assert time.monotonic() < deadline, "pgBackRest's restore never started"
        time.sleep(0.05)

    # Patroni dies while its restore copies files, from an S3 that has become slow.
    s3 = cluster.state().processes[S3]
    assert s3.is_ours()
    os.kill(s3.pid, signal.SIGSTOP)
    try:
        patroni = unit.process()
        assert patroni is not None and patroni.is_ours()
        os.kill(patroni.pid, signal.SIGKILL)
        assert any(p.is_same() for p in restoring), "the restore ended before Patroni died"

        def blocked() -> bool:
            assert run_cli("status", "--name", name).returncode == 0  # runs update-status
            return cluster.get_status(ref)[0] == "blocked"

        _wait(blocked, 60, f"{ref} Blocked by the failed restore")
        assert "Failed to restore backup" in cluster.get_status(ref)[1]
        assert any(p.is_same() for p in restoring), "the restore must outlive its Patroni"
        res, mixed = _rollback_with_s3_paused(cluster, unit, s3.pid, restoring)
    finally:
        os.kill(s3.pid, signal.SIGCONT)
    assert mixed == [], "the old data came back while the restore still wrote into it"

    if res.returncode != 0:
        # The refusal: something still writes into the data directory; nothing moved.
        assert "still in use by" in res.stderr, res.stdout + res.stderr
        assert cluster.get_status(ref)[0] == "blocked"
        assert len(_moved_aside(unit)) == 1
        processes.stop_processes(_restore_processes(unit), timeout=30)
        res = run_cli(
            "run", "--name", name, ref, "rollback-restore", "--wait", "--timeout", "180",
            timeout=240,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert not any(p.is_same() for p in restoring), "the restore outlived the rollback"
    assert _cluster_pgbackrest(cluster, but_archiving=True) == []
    _wait(unit.accepts_writes, 60, "the primary accepting writes")
    _assert_whole(unit, committed, big)

    # And after a full stop and start.
    res = run_cli("down", "--name", name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _cluster_pgbackrest(cluster) == []
    res = run_cli("up", "--name", name, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    _wait(unit.accepts_writes, 60, "the primary accepting writes")
    _assert_whole(unit, committed, big)
