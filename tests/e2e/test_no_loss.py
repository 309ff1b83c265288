"""Nothing acknowledged is ever lost (docs/reliability.md), end to end on real one-unit
local clusters, for the two faults that lost committed rows:

- the local S3 server goes away (SIGKILL, or a clean ``pgbackups down``) right after
  pgBackRest pushed a WAL segment: after ``up`` the repository verifies clean and a
  restore to ``latest`` has every committed row (rclone's write-back cache used to serve
  the last objects empty: verify listed them invalid, and a restore came back short);
- a restore's action dies while its ``pgbackrest restore`` copies files (it restores
  beside the data directory): the data directory is untouched, every row committed
  before the restore is there, uncorrupted, and the next restore first stops the orphaned
  pgBackRest (an orphaned restore used to keep writing into data that was moved back).
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


def test_a_restore_killed_while_pgbackrest_copies_leaves_the_data_untouched(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    """The restore action dies (killed, an agent restart) while its pgBackRest copies
    the backup beside the data directory, from an S3 that has become slow: the data
    directory was never touched; the database, started again, has every committed row,
    uncorrupted; and the next restore first stops the orphaned pgBackRest, which would
    otherwise write into the new copy by path."""
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
    staging = unit.data_dir.with_name(unit.data_dir.name + ".restoring")

    def copying() -> list[processes.ProcessInfo]:
        return [
            p for p in processes.processes_using(staging)
            if p.argv and os.path.basename(p.argv[0]) == "pgbackrest"
        ]  # fmt: skip

    argv = [sys.executable, "-m", "pgbackups", "run", "--name", name, ref, "restore",
            f"backup-id={backup_id}"]  # fmt: skip
    s3 = cluster.state().processes[S3]
    assert s3.is_ours()
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as action:
        deadline = time.monotonic() + 120
        while not (orphans := copying()):
            assert action.poll() is None, "the restore ended before pgBackRest copied"
            assert time.monotonic() < deadline, "pgBackRest's restore never started"
            time.sleep(0.02)
        os.kill(s3.pid, signal.SIGSTOP)  # mid-copy, as from a slow remote S3
        action.kill()
    try:
        assert _moved_aside(unit) == [], "the data directory was never moved"
        assert any(p.is_same() for p in orphans), "pgBackRest outlived the action"
    finally:
        os.kill(s3.pid, signal.SIGCONT)
    # The database comes back on its own data: a stop and start of the cluster.
    for args in (("down", "--name", name), ("up", "--name", name)):
        res = run_cli(*args, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
    _wait(unit.accepts_writes, 120, "the primary accepting writes")
    _assert_whole(unit, committed, big)

    # The next restore stops the orphan first, and works.
    res = run_cli(
        "run", "--name", name, ref, "restore", f"backup-id={backup_id}", "--wait",
        "--timeout", "240", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert not any(p.is_same() for p in orphans), "the orphaned restore was stopped"
    _wait(unit.accepts_writes, 60, "the primary accepting writes")
    assert _rows(unit) == committed[:100]
    assert tuple(unit.query(BIG_SUMMARY)[0]) == big
    assert _amcheck(unit).returncode == 0
