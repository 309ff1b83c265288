"""Restoring a 3-unit TLS cluster in place, with no unit removed (docs/behaviour/restore.md,
"A cluster of several units"), on one real local cluster, test after test:

- a restore to a backup: every unit ends streaming the restored primary, each holding
  exactly the rows committed before the backup;
- a point-in-time restore during which a replica's Patroni is killed while it re-creates
  itself and stays away for a while: the restore waits for it and it catches up when it is
  back, with no second restore; every unit holds exactly the rows committed before the time;
- after that point-in-time restore, a replica re-created from the repository (Patroni's
  reinitialise, what a unit added under Juju does) follows the restored timeline although
  the repository's newest backup lies on the old timeline past the branch point;
- a failed restore (a damaged backup): every unit keeps its data from
  before on disk, and rollback-restore brings all three back with their old rows;
- a second restore while one runs is refused;
- a restore whose S3 server stops before the leader's pgBackRest reads the backup fails,
  and rollback-restore brings all three units back with their old rows.

Rows are counted on every unit, against what was committed before the target; once a
restore reported success no unit may answer with a row committed after the target.
Events are delivered as Juju does, one at a time per unit (the cluster's agent runs
update-status meanwhile: the runtime's dispatcher makes the test's own calls wait).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from e2e_helpers import (
    backup_on_a_replica,
    counts,
    damage_backup_wal,
    full_label,
    insert,
    primary,
    switch_and_wait_archived,
    tcp_connect,
    wait_old_data_removed,
    wait_rows_everywhere,
)

from pgbackups.adapters import processes
from pgbackups.core import messages as msg
from pgbackups.core.restore_state import RestoreState
from pgbackups.local.runtime.cluster import AGENT, S3, Cluster
from pgbackups.local.runtime.host import Runtime

pytestmark = pytest.mark.real

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
NAME = "crestore"
NOW_UTC = "select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS.US')"


@pytest.fixture(scope="module")
def cluster(make_module_cluster: Any, run_cli: Cli) -> Iterator[Cluster]:
    """Up through the CLI, as a user does (it fires certificates-changed: the pgBackRest
    TLS servers run); down through the shared factory (tests/conftest.py)."""
    home = make_module_cluster.home
    make_module_cluster.clusters.append(Cluster(NAME, home))
    res = run_cli("up", "--name", NAME, "--units", "3", "--tls", timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("s3", "set", "--name", NAME, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    yield Cluster.load(NAME, home)


def run(run_cli: Cli, unit: str, action: str, *params: str, wait: bool = False) -> Any:
    extra = ("--wait", "--timeout", "400") if wait else ()
    return run_cli("run", "--name", NAME, unit, action, *params, *extra, timeout=500)


def statuses(run_cli: Cli) -> dict[str, tuple[str, str, str]]:
    res = run_cli("status", "--name", NAME, "--json")
    assert res.returncode == 0, res.stderr
    return {
        u["name"]: (u["status"], u["role"], u["message"]) for u in json.loads(res.stdout)["units"]
    }


def moved_aside(cluster: Cluster) -> dict[str, list[Path]]:
    return {
        u.name: [p for p in u.data_dir.parent.iterdir() if ".before-restore-" in p.name]
        for u in cluster.units()
    }


def test_restore_to_a_backup_on_three_units(cluster: Cluster, run_cli: Cli) -> None:
    primary(cluster).query("create table t (id bigserial primary key, v text)")
    insert(cluster, "before-backup", 50)
    backup_id = backup_on_a_replica(cluster, run_cli)
    insert(cluster, "after-backup", 30)
    wait_rows_everywhere(cluster, {"before-backup": 50, "after-backup": 30})

    started = time.monotonic()
    res = run(run_cli, cluster.leader, "restore", f"backup-id={backup_id}", wait=True)
    took = time.monotonic() - started
    assert res.returncode == 0, res.stdout + res.stderr
    assert "restore complete" in res.stderr
    print(f"3-unit restore to a backup, until every unit streams: {took:.1f}s")

    # Reported complete: no unit answers with the old rows, every replica streams.
    wait_rows_everywhere(
        cluster, {"before-backup": 50}, timeout=5, never=frozenset({"after-backup"})
    )
    units = statuses(run_cli)
    assert sorted(r for _, r, _ in units.values()) == ["primary", "replica", "replica"]
    assert {s for s, _, _ in units.values()} == {"active"}, units
    wait_old_data_removed(cluster.units())  # by processes the restore does not wait for
    assert RestoreState.read(Runtime(cluster).store.app_bag(writable=False)) is None
    for unit in cluster.units():
        tcp_connect(cluster, unit.name)  # clients are let in again everywhere
    # The restored primary takes writes and they reach every unit.
    insert(cluster, "after-restore", 5)
    wait_rows_everywhere(cluster, {"before-backup": 50, "after-restore": 5})


def _kill_patroni(cluster: Cluster, name: str) -> None:
    """SIGKILL the unit's Patroni and what its session runs (pgBackRest's restore):
    a unit that dies, not one that is stopped."""
    proc = cluster.unit(name).process()
    assert proc is not None and proc.is_ours()
    os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes.is_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_pitr_with_a_replica_killed_while_it_re_creates(cluster: Cluster, run_cli: Cli) -> None:
    insert(cluster, "before-time", 20)
    target = str(primary(cluster).query(NOW_UTC)[0][0])
    time.sleep(1.5)
    insert(cluster, "after-time", 20)
    # A backup past the point the restore branches at: the repository's newest set, which
    # a standby restored from could never leave the old timeline (the next test).
    # Right after a restore a replica's pgBackRest was seen to answer "unable to find
    # primary cluster" for a while (not investigated yet): it is tried again.
    past = backup_on_a_replica(
        cluster, run_cli, transient=("unable to find primary cluster",), retry_for=90
    )
    switch_and_wait_archived(cluster, primary(cluster))

    leader = cluster.leader
    res = run(run_cli, leader, "restore", f"restore-to-time={target}")
    assert res.returncode == 0, res.stdout + res.stderr
    runtime = Runtime(cluster)
    away = next(u.name for u in cluster.units() if u.name != leader)
    present = [u.name for u in cluster.units() if u.name != away]

    def tick(names: list[str]) -> RestoreState | None:
        for name in names:
            runtime.fire(name, "update-status")
        return RestoreState.read(runtime.store.app_bag(writable=False))

    # Until the unit that will die is re-creating itself, every unit is looked after.
    deadline = time.monotonic() + 300
    while True:
        state = tick([leader, *[n for n in present if n != leader], away])
        assert state is not None and time.monotonic() < deadline, state
        if state.stage == "re-creating" and cluster.unit(away).is_running():
            break
        assert cluster.get_status(leader)[0] != "blocked", cluster.get_status(leader)
        time.sleep(1)
    # Clients are refused on the restored primary until every unit runs the restored data.
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        tcp_connect(cluster, leader)
    # A second restore while this one runs is refused.
    res = run(run_cli, leader, "restore", f"restore-to-time={target}")
    assert res.returncode == 1
    assert "A restore is already running on this cluster" in res.stderr
    _kill_patroni(cluster, away)

    # Away for a while: the others go on; the restore waits for it.
    for _ in range(10):
        state = tick(list(present))
        time.sleep(1)
    assert state is not None and state.stage == "re-creating"
    assert away in cluster.get_status(leader)[1], cluster.get_status(leader)

    # Back: it catches up with no second restore.
    res = run_cli("status", "--name", NAME)  # update-status everywhere, as Juju's timer
    deadline = time.monotonic() + 300
    while RestoreState.read(runtime.store.app_bag(writable=False)) is not None:
        assert time.monotonic() < deadline, statuses(run_cli)
        tick([leader, *[n for n in present if n != leader], away])
        time.sleep(1)
    tick([n for n in present if n != leader] + [away])  # clients let in again
    # Reported complete: the unit that was away too holds exactly the rows before the
    # time, and no unit ever answers with a row from after it.
    expected = {"before-backup": 50, "after-restore": 5, "before-time": 20}
    wait_rows_everywhere(cluster, expected, never=frozenset({"after-time"}))
    assert counts(cluster.unit(away)) == expected
    assert {s for s, _, _ in statuses(run_cli).values()} == {"active"}
    for unit in cluster.units():
        tcp_connect(cluster, unit.name)  # clients are let in again everywhere
    # A unit that creates itself as a replica from now on restores the set the restore
    # used, not the repository's newest (past the branch point).
    method = _replica_method(cluster, away)
    assert f"--set={full_label(past)}" not in method and "--set=" in method, method


def _replica_method(cluster: Cluster, name: str) -> str:
    """The unit's Patroni pgBackRest replica-creation command, as rendered."""
    rendered = yaml.safe_load(cluster.unit(name).paths.patroni_config.read_text())
    return str(rendered["postgresql"]["pgbackrest"]["command"])


def test_a_replica_re_created_after_the_pitr_follows_the_restored_timeline(
    cluster: Cluster,
) -> None:
    """The repository's newest backup (taken before the restore, after its target) lies on
    the old timeline past the branch point: a standby restored from it could never follow
    the primary. Until a backup is taken since, a unit that creates itself as a replica
    (a unit added under Juju; here a replica reinitialised) restores the set the
    restore used, and streams the restored timeline."""
    expected = {"before-backup": 50, "after-restore": 5, "before-time": 20}
    runtime = Runtime(cluster)
    app = runtime.store.app_bag(writable=False)
    pinned = app.get("replica-backup-set")
    assert pinned, dict(app)
    lead = primary(cluster)
    replica = next(u for u in cluster.units() if u.name != lead.name)
    assert f"--set={pinned}" in _replica_method(cluster, replica.name)
    timeline = lead.query("select timeline_id from pg_control_checkpoint()")[0][0]
    with cluster.facts.inside(replica.machine):
        runtime.host_for(replica.name).workload.recreate_replica()
    wait_rows_everywhere(cluster, expected, never=frozenset({"after-time"}))
    assert counts(replica) == expected
    assert replica.query("select received_tli from pg_stat_wal_receiver")[0][0] == timeline


def test_failed_restore_is_rolled_back_on_every_unit(cluster: Cluster, run_cli: Cli) -> None:
    expected = {"before-backup": 50, "after-restore": 5, "before-time": 20}
    insert(cluster, "before-failure", 7)
    expected["before-failure"] = 7
    wait_rows_everywhere(cluster, expected)
    # A backup whose WAL is damaged in the repository: pgBackRest restores it, then its
    # recovery fails, after every unit moved its data aside. (A backup damaged itself fails
    # before the leader's data moves: the S3-cut test below; a time past the archive is
    # refused before anything changes: the recoverable window.)
    backup_id = backup_on_a_replica(cluster, run_cli)
    damage_backup_wal(cluster, backup_id)

    leader = cluster.leader
    res = run(run_cli, leader, "restore", f"backup-id={backup_id}", wait=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert cluster.get_status(leader)[0] == "blocked"
    # Every unit keeps its data from before the restore on disk.
    kept = moved_aside(cluster)
    assert all(len(paths) == 1 for paths in kept.values()), kept

    res = run(run_cli, leader, "rollback-restore", wait=True)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_rows_everywhere(cluster, expected)
    units = statuses(run_cli)
    assert {s for s, _, _ in units.values()} == {"active"}, units
    assert units[leader][1] == "primary"
    assert all(not p.exists() for paths in kept.values() for p in paths), "moved back"


def test_a_restore_whose_s3_is_cut_is_rolled_back_on_every_unit(
    cluster: Cluster, run_cli: Cli
) -> None:
    """The S3 server stops after the target was checked and the other units stopped,
    before the leader's pgBackRest reads the backup: the restore fails before anything of
    the leader's moved (pgBackRest restores beside its data), its database runs its own
    data again, and the other units take theirs back by themselves, with no S3."""
    expected = {"before-backup": 50, "after-restore": 5, "before-time": 20, "before-failure": 7}
    insert(cluster, "before-s3-cut", 3)
    expected["before-s3-cut"] = 3
    wait_rows_everywhere(cluster, expected)
    leader = cluster.leader
    backup_id = backup_on_a_replica(cluster, run_cli)
    runtime = Runtime(cluster)
    # This test delivers update-status itself. The agent's passes, each waiting on S3's
    # timeouts while S3 is down, would hold every unit's turn (one event at a time per
    # unit) and delay the leader's stop past archive_timeout: a new segment that cannot be
    # archived, which PostgreSQL's shutdown then retries for minutes.
    cluster.stop_service(AGENT)
    # Nothing left to archive when S3 goes: PostgreSQL's shutdown would wait for its
    # archiver's attempts (a minute each) on every stop.
    switch_and_wait_archived(cluster, primary(cluster))
    # The action alone (no relay): stage stopping, the target checked against S3.
    outcome = runtime.dispatcher.run_action(leader, "restore", {"backup-id": backup_id})
    assert "restore-status" in getattr(outcome, "results", {}), outcome
    cluster.stop_service(S3)
    others = [u.name for u in cluster.units() if u.name != leader]
    for name in others:
        runtime.fire(name, "peer-changed")  # they stop and move their data aside
    deadline = time.monotonic() + 300
    while cluster.get_status(leader)[0] != "blocked":
        assert time.monotonic() < deadline, statuses(run_cli)
        for name in (leader, *others):
            runtime.fire(name, "update-status")
        time.sleep(1)
    message = cluster.get_status(leader)[1]
    assert message.startswith("Failed to restore backup: pgBackRest could not restore"), message
    kept = moved_aside(cluster)
    assert kept[leader] == [], "the leader's data never moved"
    assert all(len(kept[name]) == 1 for name in others), kept
    # Nothing to roll back on the leader; the others come back by themselves.
    deadline = time.monotonic() + 300
    while any(p.exists() for paths in kept.values() for p in paths):
        assert time.monotonic() < deadline, statuses(run_cli)
        for name in (leader, *others):
            runtime.fire(name, "update-status")
        time.sleep(1)
    wait_rows_everywhere(cluster, expected)
    units = statuses(run_cli)
    # S3 is still stopped: the primary may already say so (update-status's look at WAL
    # archiving, "WAL archiving failing since ..."); no other status is allowed.
    assert all(
        status == "active" or (role == "primary" and msg.is_archive_health_message(message))
        for status, role, message in units.values()
    ), units
    # S3 still cut: every unit's own data is back in place (rollback reads nothing of S3).
    # Once seen in CI: a copy still aside; two events had run at once on one unit (the
    # agent's update-status and this test's), the second found nothing to move aside and
    # recorded no copy, so the rollback had none to put back.
    assert all(not p.exists() for paths in kept.values() for p in paths), kept
    cluster.start()  # the S3 server is back: the held WAL is archived
    cluster.start_agent()
    # An archiving status clears by itself.
    deadline = time.monotonic() + 180
    while True:
        units = statuses(run_cli)  # runs update-status on every unit
        if {s for s, _, _ in units.values()} == {"active"}:
            break
        assert time.monotonic() < deadline, units
        time.sleep(5)
    wait_rows_everywhere(cluster, expected)
