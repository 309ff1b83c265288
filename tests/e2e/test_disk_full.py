"""A restore that fills the disk, on a real one-unit cluster whose unit directory (the
data directory and what is moved aside beside it) lives on a small tmpfs.

The restore fails as Blocked saying the disk is full (not "active", not a traceback);
both copies it leaves are listed; the one it still needs is refused by `leftovers
remove`, the partial restore Patroni left (`data.failed`) is removed on request; once
there is room, rollback-restore brings the old data back with every committed row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

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


def test_a_restore_that_fills_the_disk_is_reported_and_rolled_back(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any], tmpfs: Any
) -> None:
    cluster = make_cluster(NAME, units=1)
    _move_unit_onto_tmpfs(cluster, tmpfs, "400m")
    unit = cluster.unit(UNIT)
    assert run_cli("s3", "set", "--name", NAME).returncode == 0
    unit.query("create table t (v text)")
    unit.query("insert into t select 'in the backup ' || g from generate_series(1, 100000) g")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = json.loads(res.stdout)["results"]["backup-id"]
    unit.query("insert into t values ('after the backup')")
    unit.query("checkpoint")
    rows = unit.query("select count(*) from t")[0][0]

    # The disk: 96 MiB more than the unit uses (room for PostgreSQL to go on: a stop and
    # a promotion each want new WAL segments of 16 MiB), then
    # nearly full (less room than the backup needs to be restored).
    usage = shutil.disk_usage(unit.paths.root)
    tmpfs.resize(unit.paths.root, f"{(usage.used + 96 * MiB) // 1024}k")
    filler = tmpfs.fill(unit.paths.root, leave=6 * MiB)
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={backup_id}",
        "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "disk full" in res.stderr, res.stderr
    status = json.loads(run_cli("status", "--name", NAME, "--json").stdout)
    (row,) = status["units"]
    assert row["status"] == "blocked"
    assert row["message"].startswith(messages.FAILED_TO_RESTORE_BACKUP + ": disk full: ")
    leftovers = {item["kind"]: item for item in row["leftovers"]}
    assert set(leftovers) == {"before-restore", "patroni-failed"}, row["leftovers"]
    kept, partial = leftovers["before-restore"], leftovers["patroni-failed"]
    assert kept["needed"] and not partial["needed"]
    assert partial["name"] == "data.failed" and partial["size"] > 0

    # The copy the failed restore needs cannot be removed, not even beside another name.
    for names in ([kept["name"]], [partial["name"], kept["name"]]):
        res = run_cli("leftovers", "remove", "--name", NAME, UNIT, *names)
        assert res.returncode == 1 and "not removed" in res.stderr, res.stderr
        assert os.path.isdir(kept["path"]) and os.path.isdir(partial["path"])

    # Room again: the filler goes, and so does the partial restore (it fills the disk:
    # PostgreSQL could not even start a new WAL segment on the old data beside it).
    filler.unlink()
    res = run_cli("leftovers", "remove", "--name", NAME, UNIT, partial["name"])
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(partial["path"])

    # The rollback brings back every committed row.
    res = run_cli(
        "run", "--name", NAME, UNIT, "rollback-restore", "--wait", "--timeout", "120",
        timeout=180,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 60
    while not unit.accepts_writes():
        assert time.monotonic() < deadline, _why_no_writes(unit)
        time.sleep(0.3)
    assert unit.query("select count(*) from t")[0][0] == rows
    assert unit.query("select count(*) from t where v = 'after the backup'")[0][0] == 1
    status = json.loads(run_cli("status", "--name", NAME, "--json").stdout)
    (row,) = status["units"]
    assert (row["status"], row["role"], row["leftovers"]) == ("active", "primary", [])
    assert json.loads(run_cli("leftovers", "--name", NAME, "--json").stdout) == {UNIT: []}
