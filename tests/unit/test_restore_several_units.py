"""A restore of several units (core/handlers/cluster_restore.py, docs/behaviour/restore.md
"A cluster of several units"): each stage's step on the leader and on another unit, in
call order, with the recording fake host; and the configuration each stage renders."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from fakes import (
    MARKER_KEY,
    MOVED_DATA,
    STANZA,
    FakeHost,
    backup,
    marker_body,
    stanza_info,
    timeline,
)
from test_patroni_render import MEMBER

from pgbackups.adapters.patroni import render_config, replica_restore_command
from pgbackups.core import messages as msg
from pgbackups.core.archive import ArchivedSegment
from pgbackups.core.handlers._steps import desired_config
from pgbackups.core.handlers.cluster_restore import on_peer_changed
from pgbackups.core.handlers.restore import on_restore
from pgbackups.core.handlers.rollback import on_rollback_restore
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import Recovery, ReplicaRestore, UnitStatus, WorkloadConfig
from pgbackups.core.outcomes import ActionFailed, ActionResults, Deferred, Done
from pgbackups.local.runtime.host import bag_writers

LABEL = "20261128-143926F"
BACKUP_ID = "2026-11-28T14:39:26Z"
EPOCH = "20261128T150000.000000Z"
OTHER = "main/1"
OTHER_MOVED = "/var/lib/pgbackups/main/units/1/data.before-restore-20261128T150001Z"
TARGET = {
    "stanza": STANZA,
    "restoring-backup": LABEL,
    "restore-stanza": STANZA,
    "restore-type": "immediate",
    "restore-epoch": EPOCH,
}
REPLICAS_FROM = f"replicas-from={LABEL}@{STANZA}"


def leader(
    stage: str, other: dict[str, str] | None = None, app: dict[str, str] | None = None
) -> FakeHost:
    host = FakeHost(
        app={**TARGET, "restore-stage": stage, **(app or {})},
        peers={OTHER: other or {}},
        status=UnitStatus.maintenance(msg.RESTORING_BACKUP),
    )
    host.fake_tool.stanzas = [stanza_info(backups=[backup(LABEL)])]
    host.store.objects[MARKER_KEY] = marker_body()
    return host


def other_unit(
    stage: str, unit: dict[str, str] | None = None, app: dict[str, str] | None = None
) -> FakeHost:
    host = FakeHost(
        leader=False,
        app={**TARGET, "restore-stage": stage, "restore-moved-data": MOVED_DATA, **(app or {})},
        unit=unit,
        peers={"main/0": {}},
    )
    host.fake_workload.primary = False
    return host


# --- the action ---------------------------------------------------------------------


def test_restore_of_several_units_starts_by_refusing_clients_and_waiting() -> None:
    host = FakeHost(app={"stanza": STANZA}, peers={OTHER: {}, "main/2": {}})
    host.fake_tool.stanzas = [stanza_info(backups=[backup(LABEL)])]
    assert on_restore(host, {"backup-id": BACKUP_ID}) == ActionResults(
        {"restore-status": "restore started"}
    )
    # Nothing stops here yet: the other units stop first, their Patroni would race the
    # leader's bootstrap for the emptied DCS.
    assert host.effects[-11:] == [
        f"app_data[restoring-backup]={LABEL!r}",
        f"app_data[restore-stanza]={STANZA!r}",
        "app_data[restore-type]='immediate'",
        "app_data[restore-to-time]=''",
        "app_data[restore-timeline]=''",
        "app_data[restore-moved-data]=''",
        f"app_data[restore-epoch]={EPOCH!r}",
        "app_data[restore-stage]='stopping'",
        "app_data[s3-block-message]=''",
        # Tagged out of elections while the others stop (see test_no_unit_can_promote_...)
        f"workload.apply_config(stanza={STANZA}, connectivity=off, creating-backup, "
        f"restore={LABEL}@{STANZA}, {REPLICAS_FROM})",
        "set_status(maintenance: restoring backup: waiting for main/1, main/2 to stop)",
    ]
    assert "workload.stop_database" not in host.calls


def test_a_second_restore_while_one_runs_is_refused() -> None:
    host = leader("re-creating")
    host.fake_tool.stanzas = [stanza_info(backups=[backup(LABEL)])]
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert outcome == ActionFailed(msg.RESTORE_ALREADY_RUNNING)
    assert host.effects == []


def test_a_new_restore_after_a_failed_one_is_allowed() -> None:
    host = leader("restoring", app={"restore-moved-data": MOVED_DATA})
    host.status = UnitStatus.blocked(f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at x")
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert outcome == ActionResults({"restore-status": "restore started"})
    # The data from before the first attempt stays the one recorded.
    assert host.app_dict["restore-moved-data"] == MOVED_DATA
    assert host.app_dict["restore-stage"] == "stopping"


# --- stopping -------------------------------------------------------------------------


def test_leader_waits_for_the_others_to_stop() -> None:
    host = leader("stopping", {"restore-joined": "an older restore"})
    assert on_update_status(host) == Done()
    assert host.effects == [
        "set_status(maintenance: restoring backup: waiting for main/1 to stop)",
    ]


def test_another_unit_stops_moves_its_data_aside_and_says_so() -> None:
    host = other_unit("stopping")
    host.fake_workload.moved_path = OTHER_MOVED
    assert on_peer_changed(host) == Done()
    assert host.calls == [
        f"set_status(maintenance: {msg.STOPPING_FOR_RESTORE})",
        "workload.is_primary",
        "workload.stop_database",
        "workload.data_dir_users",
        "workload.move_data_aside",
        f"unit_data[restore-joined]={EPOCH!r}",
        f"unit_data[restore-unit-moved-data]={OTHER_MOVED!r}",
        "unit_data[restore-done]=''",
        f"workload.apply_config(stanza={STANZA}, connectivity=off, creating-backup, "
        f"restore={LABEL}@{STANZA}, {REPLICAS_FROM})",
        f"set_status(waiting: {msg.WAITING_FOR_RESTORED_PRIMARY})",
    ]


def test_no_unit_can_promote_itself_while_the_units_stop_and_the_leader_can_bootstrap() -> None:
    """While a cluster restore waits for the units to stop, every unit is tagged
    nofailover: the leader, still a running replica when the primary stopped, promoted
    itself for a few seconds, and that stray timeline kept the re-created replicas from
    ever streaming the restored primary (tests/e2e/test_network_faults.py). From
    `restoring` on the tag is off: Patroni bootstraps no member tagged nofailover."""
    for host in (leader("stopping"), other_unit("stopping")):
        assert desired_config(host).creating_backup
    for stage in ("restoring", "re-creating"):
        for host in (leader(stage), other_unit(stage)):
            assert not desired_config(host).creating_backup, stage


def test_the_primary_stops_for_the_restore_only_after_the_replicas() -> None:
    """A replica still running when the primary stopped promoted itself (a stray
    timeline the re-created replicas could never follow): the primary waits until only
    the leader (which never joins: it stops for its own restore) is left running."""
    host = other_unit("stopping")
    host.peer_bags = {"main/0": {}, "main/2": {}}
    host.fake_workload.primary = True
    assert on_peer_changed(host) == Done()
    assert "workload.stop_database" not in host.calls
    assert host.unit_dict == {}
    host.peer_bags["main/2"] = {"restore-joined": EPOCH}
    host.fake_workload.moved_path = OTHER_MOVED
    assert on_peer_changed(host) == Done()
    assert "workload.stop_database" in host.calls
    assert host.unit_dict["restore-joined"] == EPOCH


def test_another_unit_keeps_the_data_of_a_failed_attempt_recorded_first() -> None:
    host = other_unit("stopping", {"restore-joined": "older", "restore-unit-moved-data": "/first"})
    host.fake_workload.moved_path = ""  # nothing left in the data directory
    on_update_status(host)
    assert host.unit_dict == {"restore-joined": EPOCH, "restore-unit-moved-data": "/first"}


def test_another_unit_that_cannot_stop_defers_and_moves_nothing() -> None:
    host = other_unit("stopping")
    host.fake_workload.stop_ok = False
    assert isinstance(on_peer_changed(host), Deferred)
    assert "workload.move_data_aside" not in host.calls
    assert host.unit_dict == {}


def test_another_unit_whose_data_directory_is_in_use_defers() -> None:
    host = other_unit("stopping")
    host.fake_workload.users = ["pid 42 pgbackrest"]
    assert isinstance(on_update_status(host), Deferred)
    assert "workload.move_data_aside" not in host.calls


def test_leader_restores_once_every_other_unit_stopped() -> None:
    host = leader("stopping", {"restore-joined": EPOCH})
    assert on_update_status(host) == Done()
    assert host.effects == [
        "set_status(maintenance: restoring backup)",
        "workload.start_staged_restore",
        "workload.stop_database",
        "workload.remove_dcs_state",
        "workload.wait_staged_restore",
        "workload.swap_in_restored",
        f"app_data[restoring-backup]={LABEL!r}",
        f"app_data[restore-stanza]={STANZA!r}",
        "app_data[restore-type]='immediate'",
        "app_data[restore-to-time]=''",
        "app_data[restore-timeline]=''",
        f"app_data[restore-moved-data]={MOVED_DATA!r}",
        f"app_data[restore-epoch]={EPOCH!r}",
        "app_data[restore-stage]='restoring'",
        "app_data[restore-unit]='main/0'",  # leadership may move; the restore stays here
        "app_data[s3-block-message]=''",
        f"workload.apply_config(stanza={STANZA}, connectivity=off, "
        f"restore={LABEL}@{STANZA}, {REPLICAS_FROM})",
        f"workload.start_recovery({MOVED_DATA})",
    ]


def test_leader_that_cannot_stop_sends_the_others_back_to_their_data() -> None:
    host = leader("stopping", {"restore-joined": EPOCH})
    host.fake_workload.stop_ok = False
    assert on_update_status(host) == Done()
    assert host.app_dict["restore-stage"] == "rolling-back"
    assert "restoring-backup" not in host.app_dict
    assert host.status == UnitStatus.blocked(
        f"{msg.FAILED_TO_RESTORE_BACKUP}: could not stop the database"
    )
    assert "workload.move_data_aside" not in host.calls
    # Not tagged out of elections any more: its Patroni can run it as the primary again.
    assert not host.fake_workload.configs[-1].creating_backup


def test_another_unit_waits_while_the_leader_restores() -> None:
    host = other_unit("restoring", {"restore-joined": EPOCH})
    assert on_update_status(host) == Done()
    assert host.effects == [f"set_status(waiting: {msg.WAITING_FOR_RESTORED_PRIMARY})"]


# --- restoring -> re-creating -----------------------------------------------------------


def test_restored_primary_lets_the_others_re_create_once_its_history_is_archived() -> None:
    host = leader("restoring", {"restore-joined": EPOCH}, app={"restore-moved-data": MOVED_DATA})
    host.fake_workload.timeline = 2
    assert on_update_status(host) == Done()
    # Neither archived yet: the primary's current segment (the new timeline's first) is
    # closed so that it is archived.
    assert host.effects[-3:] == [
        f"backup_tool.archive({STANZA})",
        "workload.switch_wal",
        "set_status(maintenance: restoring backup: waiting for timeline 2's history and "
        "first WAL segment to reach the repository)",
    ]
    assert host.app_dict["restore-stage"] == "restoring"

    host.fake_tool.timeline_records[STANZA] = [timeline(2, host.clock)]
    on_update_status(host)
    assert host.app_dict["restore-stage"] == "restoring", "the segment is not archived yet"
    host.fake_tool.segments[STANZA] = [ArchivedSegment(2, 5, 100, "archive/seg")]
    assert on_update_status(host) == Done()
    assert host.effects[-4:] == [
        f"backup_tool.archive({STANZA})",
        "app_data[restore-stage]='re-creating'",
        "app_data[restore-new-timeline]='2'",
        "set_status(maintenance: restoring backup: waiting for main/1 to re-create from "
        "the restored primary)",
    ]
    # The moved-aside data stays until every unit runs the restored data.
    assert host.app_dict["restore-moved-data"] == MOVED_DATA


def test_from_another_clusters_stanza_the_others_copy_the_primary() -> None:
    host = leader("restoring", app={"restore-stanza": "old.main"})
    host.fake_workload.timeline = 2
    on_update_status(host)
    assert "backup_tool.timelines" not in " ".join(host.calls)
    assert host.app_dict["restore-stage"] == "re-creating"
    config = desired_config(host)
    assert config.replica_restore == ReplicaRestore(stanza=None)


def test_another_unit_starts_patroni_to_re_create_itself() -> None:
    host = other_unit("re-creating", {"restore-joined": EPOCH}, app={"restore-new-timeline": "2"})
    host.fake_workload.service_running = False
    assert on_update_status(host) == Done()
    assert host.effects == [
        f"workload.apply_config(stanza={STANZA}, connectivity=off, "
        f"restore={LABEL}@{STANZA}, {REPLICAS_FROM})",
        "workload.start_database",
        f"set_status(maintenance: {msg.RECREATING_REPLICA})",
    ]


def test_another_unit_is_done_once_it_streams_the_new_timeline() -> None:
    unit = {"restore-joined": EPOCH, "restore-unit-moved-data": OTHER_MOVED}
    host = other_unit("re-creating", unit, app={"restore-new-timeline": "2"})
    host.fake_workload.streaming = 1  # still on the old timeline: not yet
    on_update_status(host)
    assert host.effects == [f"set_status(maintenance: {msg.RECREATING_REPLICA})"]
    host.fake_workload.streaming = 2
    host.calls.clear()
    assert on_update_status(host) == Done()
    assert host.effects == [
        f"workload.remove_moved_data_later({OTHER_MOVED})",
        f"unit_data[restore-joined]={EPOCH!r}",
        "unit_data[restore-unit-moved-data]=''",
        f"unit_data[restore-done]={EPOCH!r}",
        "set_status(active)",
    ]


def test_a_re_creation_killed_midway_is_started_again_over_its_files() -> None:
    """Patroni restarted after the kill finds a data directory with no cluster in it and
    waits for a person ("consider doing reinitialize"): the unit asks it to re-create the
    replica, over those files (pgBackRest's --delta)."""
    host = other_unit("re-creating", {"restore-joined": EPOCH}, app={"restore-new-timeline": "2"})
    host.fake_workload.stalled = True
    # First sighting: a Patroni that just started looks the same for a moment (a
    # reinitialise then cancelled the creation it was beginning): noted, not acted on.
    assert on_update_status(host) == Done()
    assert "workload.recreate_replica" not in host.calls
    assert host.unit_dict["restore-stalled-since"] == "2026-11-28T15:00:00+00:00"
    host.clock += timedelta(seconds=10)
    host.calls.clear()
    on_update_status(host)
    assert "workload.recreate_replica" not in host.calls
    # Still stalled 20 s after: re-created over its files.
    host.clock += timedelta(seconds=10)
    host.calls.clear()
    assert on_update_status(host) == Done()
    assert host.calls == [
        "workload.is_database_service_running",
        "workload.replica_creation_stalled",
        "unit_data[restore-stalled-since]=''",
        "workload.recreate_replica",
        "workload.streaming_timeline",
    ]
    assert host.status == UnitStatus.maintenance(msg.RECREATING_REPLICA)


def test_a_stall_that_ends_by_itself_is_forgotten() -> None:
    host = other_unit("re-creating", {"restore-joined": EPOCH}, app={"restore-new-timeline": "2"})
    host.fake_workload.stalled = True
    on_update_status(host)
    host.fake_workload.stalled = False  # Patroni began creating the replica
    host.clock += timedelta(seconds=30)
    on_update_status(host)
    assert "restore-stalled-since" not in host.unit_dict
    assert "workload.recreate_replica" not in host.calls


def test_leader_ends_the_restore_once_every_unit_streams() -> None:
    moved = {"restore-moved-data": MOVED_DATA, "restore-new-timeline": "2"}
    host = leader("re-creating", {"restore-joined": EPOCH}, app=moved)
    host.fake_workload.timeline = 2
    on_update_status(host)
    assert host.effects == [
        "set_status(maintenance: restoring backup: waiting for main/1 to re-create from the "
        "restored primary)"
    ]
    host.peer_bags[OTHER] = {"restore-joined": EPOCH, "restore-done": EPOCH}
    host.calls.clear()
    assert on_update_status(host) == Done()
    assert host.effects[:13] == [
        "app_data[restoring-backup]=''",
        "app_data[restore-stanza]=''",
        "app_data[restore-to-time]=''",
        "app_data[restore-timeline]=''",
        "app_data[restore-type]=''",
        "app_data[restore-epoch]=''",
        "app_data[restore-stage]=''",
        "app_data[restore-new-timeline]=''",
        f"app_data[replica-backup-set]={LABEL!r}",  # for a unit added later
        "app_data[replica-set-since]='20261128-150000'",
        # the restore is proven: the old data goes, by a process not waited for
        f"workload.remove_moved_data_later({MOVED_DATA})",
        "app_data[restore-moved-data]=''",
        # clients let in again; a unit added later restores the restored set
        f"workload.apply_config(stanza={STANZA}, replicas-from={LABEL}@{STANZA})",
    ]
    assert host.effects[-1:] == ["set_status(active)"]


def test_another_unit_lets_clients_in_once_the_restore_is_over() -> None:
    host = FakeHost(
        leader=False,
        app={"stanza": STANZA},
        unit={"restore-joined": EPOCH, "restore-done": EPOCH},
        peers={"main/0": {}},
    )
    assert on_update_status(host) == Done()
    assert host.effects == [
        "unit_data[restore-joined]=''",
        "unit_data[restore-done]=''",
        f"workload.apply_config(stanza={STANZA})",
    ]


# --- rollback ---------------------------------------------------------------------------


def test_rollback_of_several_units_goes_leader_first() -> None:
    pitr = UnitStatus.blocked("cannot restore PITR, pgbackups logs main/0 for details")
    host = leader("restoring", {"restore-joined": EPOCH}, app={"restore-moved-data": MOVED_DATA})
    host.status = pitr
    outcome = on_rollback_restore(host, {})
    assert outcome == ActionResults({"rollback-status": msg.ROLLED_BACK})
    assert host.app_dict == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "restore-epoch": EPOCH,
        "restore-stage": "rolling-back",
    }
    assert host.status == UnitStatus.maintenance(msg.ROLLING_BACK_RESTORE)

    # The other unit waits while the leader's old data starts as the primary...
    other = other_unit(
        "rolling-back",
        {"restore-joined": EPOCH, "restore-unit-moved-data": OTHER_MOVED},
        app={"restoring-backup": "", "restore-stanza": "", "restore-type": ""},
    )
    assert on_update_status(other) == Done()
    assert other.effects == [f"set_status(waiting: {msg.WAITING_FOR_ROLLED_BACK_PRIMARY})"]

    # ...which the leader sees, and says.
    host.calls.clear()
    on_update_status(host)
    assert host.effects == [
        "app_data[restore-stage]='rolled-back'",
        "set_status(maintenance: rolling back the restore: waiting for main/1)",
    ]

    # Then the other unit puts its own data back and starts.
    other._app.writable = True  # the leader's write, as the other unit reads it
    other._app["restore-stage"] = "rolled-back"
    other._app.writable = False
    other.calls.clear()
    assert on_update_status(other) == Done()
    assert other.effects == [
        f"set_status(maintenance: {msg.ROLLING_BACK_RESTORE})",
        "workload.stop_database",
        f"workload.move_data_back({OTHER_MOVED})",
        "unit_data[restore-joined]=''",
        "unit_data[restore-unit-moved-data]=''",
        f"workload.apply_config(stanza={STANZA})",
        "workload.start_database",
        "set_status(active)",
    ]

    # Once no unit is left, the leader ends the rollback.
    host.peer_bags[OTHER] = {}
    host.calls.clear()
    on_update_status(host)
    assert host.effects == [
        "app_data[restore-epoch]=''",
        "app_data[restore-stage]=''",
        "set_status(active)",
    ]


# --- rendering --------------------------------------------------------------------------


def test_replica_restore_command_restores_the_primarys_backup_set_as_a_standby() -> None:
    command = replica_restore_command(MEMBER, ReplicaRestore(stanza=STANZA, label=LABEL))
    assert command == (
        f"pgbackrest --config={MEMBER.pgbackrest_config} --stanza={STANZA} "
        f"--pg1-path={MEMBER.data_dir} --set={LABEL} --delta --type=standby restore"
    )


def test_render_re_creates_from_the_repository_or_copies_the_primary() -> None:
    """During a cluster restore a unit re-creates itself with the restored backup set
    (Patroni's pgBackRest method, files kept for --delta), or by pg_basebackup alone when
    the archive cannot lead it to the restored primary's timeline."""
    base = WorkloadConfig(s3=None, stanza=STANZA, tls_server=False, connectivity=False)
    source = ReplicaRestore(stanza=STANZA, label=LABEL)
    cfg = render_config(MEMBER, replace(base, replica_restore=source))
    assert cfg["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert cfg["postgresql"]["pgbackrest"] == {
        "command": replica_restore_command(MEMBER, source),
        "keep_data": True,
        "no_params": True,
    }
    # The standby reads the restored primary's timeline history from the archive.
    assert cfg["postgresql"]["recovery_conf"] == {
        "restore_command": (
            f'pgbackrest --config={MEMBER.pgbackrest_config} --stanza={STANZA} archive-get %f "%p"'
        )
    }
    cfg = render_config(MEMBER, replace(base, replica_restore=ReplicaRestore(stanza=None)))
    assert cfg["postgresql"]["create_replica_methods"] == ["basebackup"]
    assert "pgbackrest" not in cfg["postgresql"]
    assert "recovery_conf" not in cfg["postgresql"]
    # Outside a cluster restore a standby streams only (a rolled-back restore may have
    # left a newer timeline in the archive than the primary's).
    assert "recovery_conf" not in render_config(MEMBER, base)["postgresql"]


def test_the_local_runtime_relays_a_write_to_the_other_units() -> None:
    """Juju fires peer-changed on every other unit when a bag changes: the writers are
    the leader for the application bag and each unit for its own."""
    before = {"app": {"stanza": STANZA}, "units": {"main/1": {}}}
    after = {
        "app": {"stanza": STANZA, "restore-stage": "stopping"},
        "units": {"main/1": {"restore-joined": EPOCH}},
    }
    assert bag_writers(before, after, "main/0") == {"main/0", "main/1"}
    assert bag_writers(after, after, "main/0") == set()


def test_leader_whose_data_could_not_move_starts_again_and_the_others_follow() -> None:
    host = leader("stopping", {"restore-joined": EPOCH})
    host.fake_workload.moved_path = None  # the move fails
    assert on_update_status(host) == Done()
    assert host.effects[-1] == (
        f"set_status(blocked: {msg.FAILED_TO_RESTORE_BACKUP}: could not move the data "
        "directory aside)"
    )
    assert host.effects.count("workload.start_database") == 1  # on its untouched data
    assert host.app_dict["restore-stage"] == "rolling-back"


def test_leader_whose_restore_did_not_start_keeps_everything_for_a_rollback() -> None:
    host = leader("stopping", {"restore-joined": EPOCH})
    host.fake_workload.start_recovery_ok = False
    assert on_update_status(host) == Done()
    assert host.app_dict["restore-stage"] == "restoring"
    assert host.app_dict["restore-moved-data"] == MOVED_DATA
    assert host.status.is_blocked
    assert host.status.message.startswith(f"{msg.FAILED_TO_RESTORE_BACKUP}: the database did not")


# --- after a restore: a unit added later (issue 14) ---------------------------------------

PINNED = {"stanza": STANZA, "replica-backup-set": LABEL, "replica-set-since": "20261128-150000"}


def test_a_unit_added_after_a_restore_restores_the_restored_set_as_a_standby() -> None:
    """pgBackRest's standby restore takes the newest set, which may lie on the old
    timeline past the branch point: until a backup is taken since, a new replica is
    created from the set the restore used, as the restore's own units were."""
    host = FakeHost(leader=False, app=PINNED, peers={"main/0": {}})
    config = desired_config(host)
    assert config.replica_restore == ReplicaRestore(stanza=STANZA, label=LABEL)
    assert config.connectivity  # not a restore in progress: clients are let in
    rendered = render_config(MEMBER, config)
    postgresql = rendered["postgresql"]
    assert postgresql["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert f"--set={LABEL}" in postgresql["pgbackrest"]["command"]
    assert "--type=standby" in postgresql["pgbackrest"]["command"]
    # With no pin, pgBackRest's own choice (its newest set).
    unpinned = render_config(MEMBER, desired_config(FakeHost(app={"stanza": STANZA})))
    assert "--set=" not in unpinned["postgresql"]["pgbackrest"]["command"]


def test_the_pin_goes_once_a_unit_took_a_backup_after_the_restore() -> None:
    host = FakeHost(app=dict(PINNED), peers={OTHER: {"backup-taken": "20261128-143000F"}})
    on_update_status(host)
    assert host.app_dict["replica-backup-set"] == LABEL, "a backup from before the restore"
    host.peer_bags[OTHER] = {"backup-taken": "20261128-143000F_20261128-150002I"}
    on_update_status(host)
    assert "replica-backup-set" not in host.app_dict
    assert "replica-set-since" not in host.app_dict
    assert desired_config(host).replica_restore is None


def test_a_non_leader_never_unpins() -> None:
    host = FakeHost(leader=False, app=dict(PINNED), unit={"backup-taken": "20261129-000000F"})
    on_update_status(host)
    assert host.app_dict["replica-backup-set"] == LABEL


def test_a_restore_of_another_clusters_backup_pins_nothing() -> None:
    other_stanza = {**TARGET, "restore-stanza": "local.other", "restore-stage": "re-creating"}
    host = leader("re-creating", {"restore-joined": EPOCH, "restore-done": EPOCH}, app=other_stanza)
    host.app_data.update({"restore-new-timeline": "2"})
    host.fake_workload.timeline = 2
    on_update_status(host)
    assert "restoring-backup" not in host.app_dict, "the restore ended"
    assert "replica-backup-set" not in host.app_dict


# --- leadership moves during a restore (issue 14) ------------------------------------------

NEW_LEADER_MOVED = "/var/lib/pgbackups/main/units/0/data.before-restore-20261128T150002Z"


def test_a_new_leader_that_had_stopped_carries_on_with_its_own_copy() -> None:
    """Leadership moved in `stopping` to a unit that had stopped as another unit: it
    restores, and its own copy is the one the restore keeps (and rolls back)."""
    host = leader("stopping", {"restore-joined": EPOCH})
    host.unit_data.update({"restore-joined": EPOCH, "restore-unit-moved-data": NEW_LEADER_MOVED})
    host.fake_workload.moved_path = ""  # its data directory is aside already
    assert on_update_status(host) == Done()
    assert host.app_dict["restore-moved-data"] == NEW_LEADER_MOVED
    assert host.app_dict["restore-stage"] == "restoring"
    assert host.app_dict["restore-unit"] == "main/0"
    assert host.unit_dict == {}, "the app bag names the copy now"
    # The restored copy takes the empty place; PostgreSQL starts as it last ran there.
    assert f"workload.start_recovery({NEW_LEADER_MOVED})" in host.calls


def test_the_old_leader_stops_for_the_restore_in_stopping() -> None:
    """Nothing restored yet: the unit that started the restore and no longer leads stops
    and moves its data aside like any other unit."""
    host = other_unit("stopping", app={"restore-moved-data": ""})
    host.fake_workload.primary = True
    host.peer_bags["main/2"] = {"restore-joined": EPOCH}
    assert on_update_status(host) == Done()
    assert host.unit_dict == {"restore-joined": EPOCH, "restore-unit-moved-data": MOVED_DATA}


def test_the_restoring_unit_never_stops_once_leadership_left_it() -> None:
    host = other_unit("restoring", app={"restore-unit": "main/1"})
    host.unit = "main/1"
    host.fake_workload.member_running = True
    host.fake_workload.primary = False  # still bootstrapping
    assert on_update_status(host) == Done()
    assert "workload.stop_database" not in host.calls
    assert "workload.move_data_aside" not in host.calls
    assert host.unit_dict == {}
    assert host.status == UnitStatus.maintenance(msg.RESTORING_BACKUP)
    # It runs as the restored primary: it says so for the new leader.
    host.fake_workload.primary = True
    host.fake_workload.timeline = 3
    on_update_status(host)
    assert host.unit_dict == {"restore-primary": f"{EPOCH}:3"}
    # In re-creating it is the primary: it never re-creates itself either.
    host.set_leader(True)  # the leader (elsewhere) moves the stage on
    host.app_data.update({"restore-stage": "re-creating", "restore-new-timeline": "3"})
    host.set_leader(False)
    host.calls.clear()
    on_update_status(host)
    assert host.effects == []


def test_the_restoring_unit_reports_a_failed_bootstrap() -> None:
    host = other_unit("restoring", app={"restore-unit": "main/1"})
    host.unit = "main/1"
    host.fake_workload.failed_bootstrap = True
    on_update_status(host)
    assert host.unit_dict == {"restore-primary": f"{EPOCH}:failed"}
    assert host.status.is_blocked
    assert MOVED_DATA in host.status.message


def test_a_new_leader_leads_the_stages_from_what_the_restoring_unit_says() -> None:
    app = {"restore-unit": OTHER, "restore-moved-data": OTHER_MOVED}
    host = leader("restoring", {"restore-primary": ""}, app=app)
    host.fake_tool.timeline_records = {STANZA: [timeline(3, datetime(2026, 11, 28, tzinfo=UTC))]}
    host.fake_tool.segments = {STANZA: [ArchivedSegment(3, 9, 100, "archive/seg")]}
    assert on_update_status(host) == Done()
    assert host.status == UnitStatus.maintenance(f"{msg.RESTORING_BACKUP}: on {OTHER}")
    assert "workload.member_state" not in host.calls, "its own workload restores nothing"
    # The restoring unit runs as the primary on timeline 3 (its history and first segment
    # archived; the restoring unit closed that segment, not this one).
    host.peer_bags[OTHER] = {"restore-primary": f"{EPOCH}:3"}
    on_update_status(host)
    assert host.app_dict["restore-stage"] == "re-creating"
    assert host.app_dict["restore-new-timeline"] == "3"
    # Re-creating: nothing to wait for (the only other unit is the primary); the restore
    # ends with the recorded timeline, and the old data stays on the unit that restored.
    on_update_status(host)
    assert "restoring-backup" not in host.app_dict
    assert "restore-stage" not in host.app_dict and "restore-unit" not in host.app_dict
    assert "restore-moved-data" not in host.app_dict
    assert f"workload.remove_moved_data_later({OTHER_MOVED})" not in host.calls
    assert host.status == UnitStatus.active()


def test_a_new_leader_shows_a_failure_on_the_restoring_unit_and_refuses_to_roll_back() -> None:
    app = {"restore-unit": OTHER, "restore-moved-data": OTHER_MOVED}
    host = leader("restoring", {"restore-primary": f"{EPOCH}:failed"}, app=app)
    on_update_status(host)
    assert host.status == UnitStatus.blocked(
        f"{msg.FAILED_TO_RESTORE_BACKUP}: on {OTHER}, where the data from before it is kept "
        f"at {OTHER_MOVED}"
    )
    outcome = on_rollback_restore(host, {})
    assert isinstance(outcome, ActionFailed)
    assert f"the restore ran on {OTHER}" in outcome.message
    assert "workload.stop_database" not in host.calls


def test_the_restoring_unit_has_patroni_take_its_promoted_database_over() -> None:
    """Leadership left the restoring unit while its restored PostgreSQL recovers: it
    starts Patroni itself once that promoted (nobody else can), or reports a failure."""
    host = other_unit("restoring", app={"restore-unit": "main/1"})
    host.unit = "main/1"
    host.fake_workload.service_running = False
    host.fake_workload.recovered = Recovery(Recovery.RECOVERING)
    on_update_status(host)
    assert "workload.start_database" not in host.calls
    host.fake_workload.recovered = Recovery(Recovery.PROMOTED)
    on_update_status(host)
    assert "workload.start_database" in host.calls
    host.fake_workload.recovered = Recovery(Recovery.ENDED, "could not locate checkpoint")
    on_update_status(host)
    assert host.unit_dict["restore-primary"].endswith(":failed")
    assert host.status.is_blocked
