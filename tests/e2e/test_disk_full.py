"""A restore that fills the disk, on a real one-unit cluster whose unit directory (the
data directory and what a restore puts beside it) lives on a small tmpfs. pgBackRest
restores beside the data directory, so the restore fails before anything of the data
moved: the action says the disk is full (not "active", not a traceback), the partial
copy is gone, the database runs its own data with every committed row, and there is
nothing to roll back or to remove."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import wait_old_data_removed, wait_writable

from pgbackups.core import messages
from pgbackups.local.runtime.cluster import Cluster, down, up

pytestmark = pytest.mark.real

NAME = "diskfull"
UNIT = f"{NAME}/0"
MiB = 1024 * 1024


def _move_unit_onto_tmpfs(cluster: Cluster, tmpfs: Any, size: str) -> None:
    """The unit's directory, stopped, copied onto a tmpfs mounted in its place."""
    unit = cluster.unit(UNIT)
    root = unit.paths.root
    st = os.stat(root)
    down(NAME, home=cluster.home)
    saved = root.with_name(root.name + ".saved")
    root.rename(saved)
    tmpfs.mount(root, size, mode=0o750)
    os.chown(root, st.st_uid, st.st_gid)
    subprocess.run(["cp", "-a", f"{saved}/.", str(root)], check=True, timeout=120)
    shutil.rmtree(saved)
    up(NAME, home=cluster.home)


def _why_no_writes(unit: Any) -> str:
    free = shutil.disk_usage(unit.paths.root).free
    log = unit.paths.patroni_log.read_text(errors="replace").splitlines()[-25:]
    listing = sorted(p.name for p in unit.paths.root.iterdir())
    return f"the primary does not accept writes; {free} B free; {listing}\n" + "\n".join(log)


def test_a_restore_that_fills_the_disk_changes_nothing(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any], tmpfs: Any
) -> None:
    cluster = make_cluster(NAME, units=1)
    _move_unit_onto_tmpfs(cluster, tmpfs, "400m")
    unit = cluster.unit(UNIT)
    assert run_cli("s3", "set", "--name", NAME).returncode == 0
    unit.query("create table t (v text)")
    unit.query("insert into t select 'in the backup ' || g from generate_series(1, 2000000) g")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = json.loads(res.stdout)["results"]["backup-id"]
    unit.query("insert into t values ('after the backup')")
    unit.query("checkpoint")
    rows = unit.query("select count(*) from t")[0][0]

    # The disk: 96 MiB more than the unit uses, then filled to 64 MiB free: room for
    # the database to go on (its stop, its restart and promotion each want a new 16 MiB
    # WAL segment), not for the restored copy pgBackRest writes beside the data (about
    # 130 MiB).
    usage = shutil.disk_usage(unit.paths.root)
    tmpfs.resize(unit.paths.root, f"{(usage.used + 96 * MiB) // 1024}k")
    filler = tmpfs.fill(unit.paths.root, leave=64 * MiB)
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={backup_id}",
        "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"{messages.FAILED_TO_RESTORE_BACKUP}: disk full: " in res.stderr, res.stderr
    assert "pgBackRest could not restore" in res.stderr, res.stderr

    # Nothing moved, nothing left: the database runs its own data again, on the disk the
    # partial copy no longer fills (the filler stays: the data needed no room of its own).
    deadline = time.monotonic() + 60
    while not unit.accepts_writes():
        assert time.monotonic() < deadline, _why_no_writes(unit)
        time.sleep(0.3)
    assert unit.query("select count(*) from t")[0][0] == rows
    assert unit.query("select count(*) from t where v = 'after the backup'")[0][0] == 1
    status = json.loads(run_cli("status", "--name", NAME, "--json").stdout)
    (row,) = status["units"]
    assert (row["status"], row["role"], row["leftovers"]) == ("active", "primary", [])
    res = run_cli("run", "--name", NAME, UNIT, "rollback-restore")
    assert res.returncode == 1 and "No failed restore to roll back" in res.stderr, res.stderr

    # Room again (the filler gone, the disk grown: the restored copy and the old data
    # both fit): the same restore works.
    filler.unlink()
    usage = shutil.disk_usage(unit.paths.root)
    tmpfs.resize(unit.paths.root, f"{(usage.used + 400 * MiB) // 1024}k")
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={backup_id}",
        "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(unit)
    assert unit.query("select count(*) from t where v = 'after the backup'")[0][0] == 0
    wait_old_data_removed([unit])  # by a process the restore does not wait for
    assert json.loads(run_cli("leftovers", "--name", NAME, "--json").stdout) == {UNIT: []}
