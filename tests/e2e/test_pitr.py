"""Point-in-time recovery over five timelines, on a real one-unit local cluster.

Timeline 1: table, backup b1, d1, t1, d2, WAL switched and archived, backup b2 (after the
point timeline 2 branches at: never the base of a restore onto timeline 2).
- a malformed time fails and changes nothing;
- b1 + a past time after the last archived commit is outside the recoverable window:
  refused before anything changes, the window named;
- t1 alone -> timeline 2: d1, not d2.
Timeline 2: d3, t2, d4, switched. b1 + latest -> timeline 3: d1, d2; not d3, d4.
Timeline 3: the timeline-2 row + latest -> timeline 4: d1, d3, d4; not d2.
Timeline 4: t2 alone -> timeline 5: d1, d3; not d2, d4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import restore_and_wait, wait_old_data_removed, wait_writable

from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

NAME = "pitr"
UNIT = f"{NAME}/0"


def sql(cluster: Cluster, statement: str) -> list[tuple[Any, ...]]:
    """One statement, its own transaction (autocommit): never "insert; pg_switch_wal()"."""
    return cluster.unit(UNIT).query(statement)


NOW_UTC = "select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS.US')"


def now_utc(cluster: Cluster) -> str:
    """The database's clock in UTC, without a zone (a time without a zone is UTC)."""
    return str(sql(cluster, NOW_UTC)[0][0])


def timeline(cluster: Cluster) -> int:
    return int(sql(cluster, "select timeline_id from pg_control_checkpoint()")[0][0])


def rows(cluster: Cluster) -> set[str]:
    return {r[0] for r in sql(cluster, "select v from t")}


def switch_and_archive(cluster: Cluster) -> None:
    """Close the current WAL segment and wait until the archiver pushed it."""
    segment = sql(cluster, "select pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = sql(cluster, "select last_archived_wal from pg_stat_archiver")[0][0]
        # Same timeline: names compare in order; a later segment also covers it.
        if last is not None and last[:8] == segment[:8] and last >= segment:
            return
        time.sleep(0.3)
    raise AssertionError(f"WAL segment {segment} was not archived within 60s")


def backups_json(run_cli: Callable[..., Any]) -> list[dict[str, Any]]:
    res = run_cli("run", "--name", NAME, UNIT, "list-backups", "format=json", "--json")
    assert res.returncode == 0, res.stderr
    rows_: list[dict[str, Any]] = json.loads(res.stdout)["results"]["backups"]
    return rows_


def wait_for_restore_row(run_cli: Callable[..., Any], number: int) -> dict[str, Any]:
    """The new primary pushes ``0000000N.history`` on promotion (asynchronously)."""
    deadline = time.monotonic() + 60
    while True:
        found = [r for r in backups_json(run_cli) if r["action"] == "restore"]
        match = [r for r in found if r["timeline"] == number]
        if match:
            return match[0]
        assert time.monotonic() < deadline, f"no restore row for timeline {number}: {found}"
        time.sleep(1)


def test_five_timelines(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any], pgbackups_home: Path
) -> None:
    started = time.monotonic()
    marks: dict[str, float] = {}
    cluster = make_cluster(NAME, units=1)
    res = run_cli("s3", "set", "--name", NAME)
    assert res.returncode == 0, res.stderr
    data_dir = cluster.unit(UNIT).data_dir

    # --- timeline 1 ------------------------------------------------------------------
    sql(cluster, "create table t (v text)")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    b1 = json.loads(res.stdout)["results"]["backup-id"]
    sql(cluster, "insert into t values ('d1')")
    t1 = now_utc(cluster)
    sql(cluster, "insert into t values ('d2')")
    switch_and_archive(cluster)
    # b2 ends after the point timeline 2 will branch at (t1) but before timeline 2 exists:
    # older than timeline 2, yet not on its path. Only the .history file tells them apart.
    time.sleep(1.1)  # backup ids are seconds
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    assert timeline(cluster) == 1
    marks["timeline 1 ready"] = time.monotonic() - started

    # A malformed time: refused before anything changes.
    res = restore_and_wait(run_cli, UNIT, f"backup-id={b1}", "restore-to-time=28/11/2026 14:00")
    assert res.returncode == 1
    assert "Bad restore-to-time format" in res.stderr
    assert "YYYY-MM-DD HH:MM:SS" in res.stderr
    assert rows(cluster) == {"d1", "d2"}
    assert timeline(cluster) == 1

    # A time after the last archived commit (in the past, so the form is valid): outside
    # the recoverable window, refused before anything changes, the window named. (Before
    # the window existed PostgreSQL ended recovery and Patroni's bootstrap failed: the
    # PITR block, which stays for a window whose end cannot be read.)
    time.sleep(1.5)
    unreachable = now_utc(cluster)
    res = restore_and_wait(run_cli, UNIT, f"backup-id={b1}", f"restore-to-time={unreachable}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "outside the recoverable window (timeline 1: " in res.stderr, res.stderr
    assert "(nothing was changed)" in res.stderr
    assert not [p for p in data_dir.parent.iterdir() if ".before-restore-" in p.name]
    assert rows(cluster) == {"d1", "d2"}
    assert timeline(cluster) == 1
    marks["refused outside the window"] = time.monotonic() - started

    # t1 alone -> timeline 2 (nearest point: b1 on timeline 1).
    res = restore_and_wait(run_cli, UNIT, f"restore-to-time={t1}")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert timeline(cluster) == 2
    assert rows(cluster) == {"d1"}
    # Removed once the restored cluster is healthy (docs/behaviour/restore.md#completion).
    wait_old_data_removed(cluster.units())
    # The takeover released the Patroni preloaded during the recovery (patroni_preload):
    # the unit's Patroni is that interpreter, not one spawned after a failed release.
    patroni = cluster.unit(UNIT).process()
    assert patroni is not None and patroni.is_ours()
    argv = Path(f"/proc/{patroni.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[1:2] == [b"-c"] and b"signal.sigwait" in argv[2], argv[:2]
    marks["timeline 2"] = time.monotonic() - started

    # --- timeline 2 ------------------------------------------------------------------
    tl2_row = wait_for_restore_row(run_cli, 2)  # pushed on promotion, before t2
    sql(cluster, "insert into t values ('d3')")
    t2 = now_utc(cluster)
    sql(cluster, "insert into t values ('d4')")
    switch_and_archive(cluster)

    res = restore_and_wait(run_cli, UNIT, f"backup-id={b1}", "restore-to-time=latest")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert timeline(cluster) == 3
    assert rows(cluster) == {"d1", "d2"}
    marks["timeline 3"] = time.monotonic() - started

    # --- timeline 3: the timeline-2 row + latest (base b1 by the .history file, not b2) ---
    wait_for_restore_row(run_cli, 3)
    res = restore_and_wait(
        run_cli, UNIT, f"backup-id={tl2_row['backup-id']}", "restore-to-time=latest"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert timeline(cluster) == 4
    assert rows(cluster) == {"d1", "d3", "d4"}
    marks["timeline 4"] = time.monotonic() - started

    # --- timeline 4: t2 alone (nearest point: the start of timeline 2) -------------------
    wait_for_restore_row(run_cli, 4)
    res = restore_and_wait(run_cli, UNIT, f"restore-to-time={t2}")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert timeline(cluster) == 5
    assert rows(cluster) == {"d1", "d3"}
    wait_for_restore_row(run_cli, 5)
    marks["timeline 5"] = time.monotonic() - started

    listed = backups_json(run_cli)
    assert [r["timeline"] for r in listed if r["action"] == "restore"] == [2, 3, 4, 5]
    print("PITR timings (s from start):", {k: round(v, 1) for k, v in marks.items()})
