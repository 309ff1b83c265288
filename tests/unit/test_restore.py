"""restore (docs/behaviour/restore.md): every branch of the chart in order, nothing deleted before
the restore is known to work, and the completion/failure detection on update-status."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import (
    MARKER_KEY,
    MOVED_DATA,
    STANZA,
    FakeHost,
    backup,
    marker_body,
    stanza_info,
)

from pgbackups.core import messages as msg
from pgbackups.core.archive import ArchivedSegment, segment_name
from pgbackups.core.handlers.restore import on_restore
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import DiskSpace, Recovery, UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults, Done

LABEL = "20261128-143926F"
BACKUP_ID = "2026-11-28T14:39:26Z"
MAINTENANCE = "set_status(maintenance: restoring backup)"
RECORD = [
    f"app_data[restoring-backup]={LABEL!r}",
    f"app_data[restore-stanza]={STANZA!r}",
    "app_data[restore-type]='immediate'",
    "app_data[restore-to-time]=''",
    "app_data[restore-timeline]=''",
    f"app_data[restore-moved-data]={MOVED_DATA!r}",
    "app_data[restore-epoch]='20261128T150000.000000Z'",
    "app_data[restore-stage]='restoring'",
    "app_data[s3-block-message]=''",
]
RESTORE_CONFIG = f"workload.apply_config(stanza={STANZA}, restore={LABEL}@{STANZA})"
PRIMARY = UnitStatus.active("Primary")


def restore_host(**kwargs: object) -> FakeHost:
    kwargs.setdefault("app", {"stanza": STANZA})
    kwargs.setdefault("status", PRIMARY)
    host = FakeHost(**kwargs)  # type: ignore[arg-type]
    host.fake_tool.stanzas = [
        stanza_info(
            backups=[
                backup(LABEL),
                backup("20261128-143926F_20261128-150000I", error=True, error_message="x"),
            ]
        )
    ]
    return host


# ---------------------------------------------------------------------------
# The happy path, every call


def test_restore_full_call_sequence() -> None:
    host = restore_host()
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert outcome == ActionResults({"restore-status": "restore started"})
    assert host.calls == [
        "workload.is_cluster_initialised",
        "backup_tool.info()",
        f"backup_tool.archive_segments({STANZA})",
        MAINTENANCE,
        # pgBackRest restores beside the data directory while the database stops.
        "workload.start_staged_restore",
        "workload.stop_database",
        "workload.remove_dcs_state",
        "workload.wait_staged_restore",
        "workload.swap_in_restored",
        *RECORD,
        RESTORE_CONFIG,
        f"workload.start_recovery({MOVED_DATA})",
    ]
    assert host.status == UnitStatus.maintenance(msg.RESTORING_BACKUP)
    # The restore that ran is the one the configuration records.
    assert host.fake_workload.restore_targets == [host.fake_workload.configs[-1].restore]
    restore = host.fake_workload.configs[-1].restore
    assert restore is not None
    assert (restore.stanza, restore.label, restore.type, restore.target_action) == (
        STANZA,
        LABEL,
        "immediate",
        "promote",
    )
    assert host.app_dict["restore-moved-data"] == MOVED_DATA


@pytest.mark.parametrize("given", [LABEL, BACKUP_ID, f" {BACKUP_ID} "])
def test_either_id_form_is_accepted(given: str) -> None:
    host = restore_host()
    assert isinstance(on_restore(host, {"backup-id": given}), ActionResults)
    assert host.app_dict["restoring-backup"] == LABEL


# ---------------------------------------------------------------------------
# Refusals before anything is touched, in chart order

Setup = Callable[[FakeHost], None]


def _nothing(host: FakeHost) -> None:
    pass


def _unavailable(host: FakeHost) -> None:
    host.fake_workload.unavailable = True


def _not_initialised(host: FakeHost) -> None:
    host.fake_workload.cluster_initialised = False


def _blocked(message: str) -> Setup:
    def setup(host: FakeHost) -> None:
        host.status = UnitStatus.blocked(message)

    return setup


def _two_units(host: FakeHost) -> None:
    host.planned = 2


def _two_units_and_blocked(host: FakeHost) -> None:
    host.planned = 2
    host.status = UnitStatus.blocked(msg.FAILED_TO_INITIALIZE_STANZA)


def _not_leader(host: FakeHost) -> None:
    host.set_leader(False)


def _two_units_not_leader(host: FakeHost) -> None:
    host.planned = 2
    host.set_leader(False)


def _not_leader_unknown_id(host: FakeHost) -> None:
    host.set_leader(False)


def _no_id_and_unavailable(host: FakeHost) -> None:
    host.fake_workload.unavailable = True


def _no_relation(host: FakeHost) -> None:
    host.s3 = None


def _missing_keys(host: FakeHost) -> None:
    host.s3 = {"bucket": "bkt"}


def _info_fails(host: FakeHost) -> None:
    host.fake_tool.info_error = "ERROR: [039]: HTTP request failed"


ASKED = ["workload.is_cluster_initialised"]
INFO = [*ASKED, "backup_tool.info()"]
INFO_AND_TIMELINES = [*INFO, f"backup_tool.timelines({STANZA})"]
REFUSALS: list[tuple[str, Setup, dict[str, str], str, list[str]]] = [
    ("no-backup-id", _nothing, {}, msg.MISSING_RESTORE_TARGET, []),
    ("empty-backup-id", _nothing, {"backup-id": "  "}, msg.MISSING_RESTORE_TARGET, []),
    (
        "workload-unavailable",
        _unavailable,
        {"backup-id": BACKUP_ID},
        msg.WORKLOAD_NOT_ACCESSIBLE,
        ASKED,
    ),
    (
        "not-initialised",
        _not_initialised,
        {"backup-id": BACKUP_ID},
        msg.WORKLOAD_NOT_ACCESSIBLE,
        ASKED,
    ),
    (
        "blocked-by-stanza-failure",
        _blocked(msg.FAILED_TO_INITIALIZE_STANZA),
        {"backup-id": BACKUP_ID},
        msg.RESTORE_UNIT_BLOCKED,
        ASKED,
    ),
    (
        "blocked-by-bucket",
        _blocked(msg.FAILED_TO_ACCESS_CREATE_BUCKET + ": x"),
        {"backup-id": BACKUP_ID},
        msg.RESTORE_UNIT_BLOCKED,
        ASKED,
    ),
    (
        "blocked-by-something-else",
        _blocked("Patroni failed to start"),
        {"backup-id": BACKUP_ID},
        msg.RESTORE_UNIT_BLOCKED,
        ASKED,
    ),
    (
        "blocked-before-unit-count",
        _two_units_and_blocked,
        {"backup-id": BACKUP_ID},
        msg.RESTORE_UNIT_BLOCKED,
        ASKED,
    ),
    ("not-leader", _not_leader, {"backup-id": BACKUP_ID}, msg.RESTORE_NOT_LEADER, ASKED),
    (
        "two-units-not-leader",
        _two_units_not_leader,
        {"backup-id": BACKUP_ID},
        msg.RESTORE_NOT_LEADER,
        ASKED,
    ),
    (
        "leadership-before-id",
        _not_leader_unknown_id,
        {"backup-id": "yesterday"},
        msg.RESTORE_NOT_LEADER,
        ASKED,
    ),
    ("id-before-workload", _no_id_and_unavailable, {}, msg.MISSING_RESTORE_TARGET, []),
    ("malformed-id", _nothing, {"backup-id": "yesterday"}, "Invalid backup-id: yesterday", ASKED),
    (
        "unknown-id",
        _nothing,
        {"backup-id": "2026-01-01T00:00:00Z"},
        "Invalid backup-id: 2026-01-01T00:00:00Z",
        INFO_AND_TIMELINES,
    ),
    (
        "failed-backup-id",
        _nothing,
        {"backup-id": "2026-11-28T15:00:00Z"},
        "Invalid backup-id: 2026-11-28T15:00:00Z",
        INFO_AND_TIMELINES,
    ),
    (
        "no-s3-relation",
        _no_relation,
        {"backup-id": BACKUP_ID},
        msg.S3_RELATION_MISSING_RESTORE,
        ASKED,
    ),
    (
        "missing-s3-keys",
        _missing_keys,
        {"backup-id": BACKUP_ID},
        "Missing S3 parameters: ['access-key', 'secret-key']",
        ASKED,
    ),
    (
        "info-fails",
        _info_fails,
        {"backup-id": BACKUP_ID},
        f"{msg.FAILED_TO_LIST_BACKUPS}: ERROR: [039]: HTTP request failed",
        INFO,
    ),
]


@pytest.mark.parametrize(
    ("setup", "params", "message", "calls"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_restore_refusals(
    setup: Setup, params: dict[str, str], message: str, calls: list[str]
) -> None:
    host = restore_host()
    setup(host)
    status, app = host.status, host.app_dict
    assert on_restore(host, params) == ActionFailed(message)
    assert host.calls == calls
    assert host.status == status
    assert host.app_dict == app


@pytest.mark.parametrize(
    "block",
    [
        msg.ANOTHER_CLUSTER_REPOSITORY,
        msg.FAILED_TO_RESTORE_BACKUP,
        msg.FAILED_TO_RESTORE_BACKUP + f": old data kept at {MOVED_DATA}",
        msg.CANNOT_RESTORE_PITR,
        # update-status's archiving blocks: a restore is a way out (it checks the WAL).
        msg.ARCHIVING_FAILING + " since 2026-12-02 10:00:00 UTC, check your S3 settings: x",
        msg.WAL_DROPPED + ", take a full backup: no restore across A..B",
    ],
)
def test_blocks_that_allow_a_restore(block: str) -> None:
    host = restore_host(status=UnitStatus.blocked(block))
    assert isinstance(on_restore(host, {"backup-id": BACKUP_ID}), ActionResults)


# ---------------------------------------------------------------------------
# Failures while restoring: never delete, start the database again


def _fail_message(reason: str) -> str:
    return f"{msg.FAILED_TO_RESTORE_BACKUP}: {reason}"


def test_stop_fails() -> None:
    """The restored copy is thrown away; the database was never touched."""
    host = restore_host()
    host.fake_workload.stop_ok = False
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert outcome == ActionFailed(_fail_message("could not stop the database"))
    assert host.effects == [
        "backup_tool.info()",
        f"backup_tool.archive_segments({STANZA})",
        MAINTENANCE,
        "workload.start_staged_restore",
        "workload.stop_database",
        "workload.wait_staged_restore",
        "workload.discard_staged_restore",
        "set_status(active: Primary)",
    ]


def test_a_restore_that_cannot_begin_changes_nothing() -> None:
    host = restore_host()
    host.fake_workload.begin_restore_ok = False
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert isinstance(outcome, ActionFailed)
    assert "could not begin the restore" in outcome.message
    assert host.effects[-2:] == ["workload.start_staged_restore", "set_status(active: Primary)"]
    assert "restoring-backup" not in host.app_dict


# What fails, the steps after the stop, the reason.
BEFORE_MOVED = {
    "dcs-removal-fails": (
        [
            "workload.remove_dcs_state",
            "workload.wait_staged_restore",
            "workload.discard_staged_restore",
        ],
        "could not remove the previous cluster from the DCS",
    ),
    "pgbackrest-fails": (
        [
            "workload.remove_dcs_state",
            "workload.wait_staged_restore",
            "workload.discard_staged_restore",
        ],
        "wait_staged_restore failed",
    ),
    "swap-fails": (
        [
            "workload.remove_dcs_state",
            "workload.wait_staged_restore",
            "workload.swap_in_restored",
            "workload.discard_staged_restore",
        ],
        "could not move the data directory aside",
    ),
}


@pytest.mark.parametrize("failing", sorted(BEFORE_MOVED))
@pytest.mark.parametrize("starts_again", [True, False], ids=["starts-again", "does-not-start"])
def test_failure_before_data_moved_starts_the_database_again(
    failing: str, starts_again: bool
) -> None:
    """Nothing was moved: the restored copy (if any) is thrown away and the database
    starts again on its own data."""
    steps, reason = BEFORE_MOVED[failing]
    host = restore_host()
    host.fake_workload.remove_dcs_ok = failing != "dcs-removal-fails"
    host.fake_workload.staged_ok = failing != "pgbackrest-fails"
    host.fake_workload.moved_path = None if failing == "swap-fails" else MOVED_DATA
    host.fake_workload.start_results = [starts_again]
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    if starts_again:
        message, status = _fail_message(reason), PRIMARY
    else:
        message = _fail_message(f"{reason}; the database did not start again")
        status = UnitStatus.blocked(message)
    assert outcome == ActionFailed(message)
    assert host.effects == [
        "backup_tool.info()",
        f"backup_tool.archive_segments({STANZA})",
        MAINTENANCE,
        "workload.start_staged_restore",
        "workload.stop_database",
        *steps,
        "workload.start_database",
        f"set_status({status})",
    ]
    assert "restoring-backup" not in host.app_dict
    assert not any("moved_data" in c for c in host.calls)  # no removal, begun or done


def test_database_does_not_start_after_data_moved() -> None:
    host = restore_host()
    host.fake_workload.start_recovery_ok = False
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    message = _fail_message(f"the database did not start; old data kept at {MOVED_DATA}")
    assert outcome == ActionFailed(message)
    assert host.effects[-3:] == [
        RESTORE_CONFIG,
        f"workload.start_recovery({MOVED_DATA})",
        f"set_status(blocked: {message})",
    ]
    # The keys stay: update-status keeps watching, and the old data is never touched.
    assert host.app_dict["restoring-backup"] == LABEL
    assert host.app_dict["restore-moved-data"] == MOVED_DATA
    assert not any("move_data_back" in c or "remove_moved" in c for c in host.calls)


def test_a_new_restore_after_a_failed_one_keeps_the_original_data_path() -> None:
    host = restore_host(
        status=UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP),
        app={"stanza": STANZA, "restoring-backup": LABEL, "restore-moved-data": "/orig"},
    )
    host.fake_workload.moved_path = "/failed-attempt"
    assert isinstance(on_restore(host, {"backup-id": BACKUP_ID}), ActionResults)
    assert host.app_dict["restore-moved-data"] == "/orig"


def test_backup_of_another_stanza_is_restored_from_that_stanza() -> None:
    host = restore_host(status=UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY), app={})
    host.fake_tool.stanzas = [stanza_info("old.main", backups=[backup(LABEL, stanza="old.main")])]
    assert isinstance(on_restore(host, {"backup-id": LABEL}), ActionResults)
    assert host.app_dict["restore-stanza"] == "old.main"
    assert host.effects[-2] == f"workload.apply_config(stanza=-, restore={LABEL}@old.main)"


def test_own_stanza_wins_when_two_stanzas_have_the_same_id() -> None:
    host = restore_host()
    host.fake_tool.stanzas = [
        stanza_info("old.main", backups=[backup(LABEL, stanza="old.main")]),
        stanza_info(backups=[backup(LABEL)]),
    ]
    on_restore(host, {"backup-id": BACKUP_ID})
    assert host.app_dict["restore-stanza"] == STANZA


# ---------------------------------------------------------------------------
# Completion and failure detection (update-status)

RESTORING = {
    "stanza": STANZA,
    "restoring-backup": LABEL,
    "restore-stanza": STANZA,
    "restore-type": "immediate",
    "restore-moved-data": MOVED_DATA,
}
CLEAR_KEYS = [
    "app_data[restoring-backup]=''",
    "app_data[restore-stanza]=''",
    "app_data[restore-to-time]=''",
    "app_data[restore-timeline]=''",
    "app_data[restore-type]=''",
]


# New replicas restore the restored set until a backup is taken (restore_state.ReplicaSet);
# since: the fake's now.
PIN_SET = [
    f"app_data[replica-backup-set]={LABEL!r}",
    "app_data[replica-set-since]='20261128-150000'",
]


def restoring_host(**kwargs: object) -> FakeHost:
    kwargs.setdefault("app", RESTORING)
    kwargs.setdefault("status", UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host = FakeHost(**kwargs)  # type: ignore[arg-type]
    host.fake_tool.stanzas = [stanza_info(backups=[backup(LABEL)])]
    host.store.objects[MARKER_KEY] = marker_body()
    return host


# --- the restored database before Patroni takes it over --------------------------------


def recovering_host(recovered: Recovery | None) -> FakeHost:
    host = restoring_host()
    host.fake_workload.service_running = False  # Patroni is not running yet
    host.fake_workload.recovered = recovered
    return host


def test_a_recovering_restore_is_left_to_recover() -> None:
    host = recovering_host(Recovery(Recovery.RECOVERING))
    assert on_update_status(host) == Done()
    assert host.effects == []
    assert host.status == UnitStatus.maintenance(msg.RESTORING_BACKUP)


def test_patroni_takes_the_promoted_database_over() -> None:
    """Started only once PostgreSQL promoted at the target: Patroni would otherwise start
    a database still in recovery as a standby, which replays the whole archive."""
    host = recovering_host(Recovery(Recovery.PROMOTED))
    assert on_update_status(host) == Done()
    # This cluster's passwords first (the backup's are another cluster's, or older).
    assert host.effects == [
        "workload.set_passwords",
        "workload.start_database",
        # While Patroni starts, the repository is read for the completion's re-check:
        # read only, nothing claimed before the restore is proven.
        "object_store.get(pgbackups-cluster.json)",
        "backup_tool.info()",
        f"object_store.get({MARKER_KEY})",
        "workload.wait_until_leader",  # not yet: the next update-status looks again
    ]
    assert host.app_dict["restore-moved-data"] == MOVED_DATA  # nothing removed yet


def test_a_takeover_that_leads_at_once_completes_in_the_same_hook() -> None:
    """Under Juju the next update-status is minutes away: once Patroni holds the leader
    key, the restore's end is seen at once (the same checks as at a later look)."""
    host = recovering_host(Recovery(Recovery.PROMOTED))
    host.fake_workload.leads_after_start = True
    host.fake_workload.timeline = 2
    assert on_update_status(host) == Done()
    effects = host.effects
    assert effects[:6] == [
        "workload.set_passwords",
        "workload.start_database",
        "object_store.get(pgbackups-cluster.json)",
        "backup_tool.info()",
        f"object_store.get({MARKER_KEY})",
        "workload.wait_until_leader",
    ]
    assert "workload.switch_wal" in effects
    assert effects.index(f"workload.remove_moved_data_later({MOVED_DATA})") > effects.index(
        "workload.wait_until_leader"
    )
    # The reading above is used: the repository is not read a second time, and the
    # marker is written only after the leader key.
    assert effects.count("backup_tool.info()") == 1
    assert effects.index(f"object_store.put({MARKER_KEY})") > effects.index(
        "workload.wait_until_leader"
    )
    assert host.status == UnitStatus.active()
    assert "restore-moved-data" not in host.app_dict


def test_a_patroni_that_does_not_start_blocks_with_the_old_data_kept() -> None:
    host = recovering_host(Recovery(Recovery.PROMOTED))
    host.fake_workload.start_results = [False]
    on_update_status(host)
    assert host.status.is_blocked
    assert MOVED_DATA in host.status.message


@pytest.mark.parametrize(
    ("recovered", "reason"),
    [
        (Recovery(Recovery.ENDED, "could not locate required checkpoint record"),
         "could not locate required checkpoint record"),
        (None, "the restored database is not running"),
    ],
    ids=["ended", "nothing-runs"],
)  # fmt: skip
def test_a_recovery_that_ended_is_a_failed_restore_reported_once(
    recovered: Recovery | None, reason: str
) -> None:
    host = recovering_host(recovered)
    assert on_update_status(host) == Done()
    message = f"{msg.FAILED_TO_RESTORE_BACKUP}: {reason}; old data kept at {MOVED_DATA}"
    assert host.status == UnitStatus.blocked(message)
    assert host.app_dict["restoring-backup"] == LABEL  # rollback-restore reads the keys
    before = list(host.effects)
    on_update_status(host)
    assert host.effects == before, "reported once, nothing else touched"


def test_completion_full_call_sequence() -> None:
    host = restoring_host()
    host.fake_workload.timeline = 2
    assert on_update_status(host) == Done()
    assert host.calls == [
        "workload.is_database_service_running",  # Patroni runs: it took the database over
        "workload.member_state",
        "workload.bootstrap_failed",
        "workload.is_member_running",
        "workload.is_primary",
        "workload.current_timeline",
        "workload.switch_wal",  # the new timeline's first segment, archived now
        *CLEAR_KEYS,
        *PIN_SET,
        # The restore is proven: the old data goes, by a process not waited for.
        f"workload.remove_moved_data_later({MOVED_DATA})",
        "app_data[restore-moved-data]=''",
        f"workload.apply_config(stanza={STANZA}, replicas-from={LABEL}@{STANZA})",
        "object_store.get(pgbackups-cluster.json)",  # no repository encloses the path
        "backup_tool.info()",
        f"object_store.get({MARKER_KEY})",
        "workload.system_identifier",
        "workload.system_identifier",
        f"object_store.put({MARKER_KEY})",
        "app_data[s3-block-message]=''",
        "set_status(active)",
    ]
    assert host.app_dict == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "replica-backup-set": LABEL,
        "replica-set-since": "20261128-150000",
    }
    assert host.fake_workload.configs[-1].restore is None


def test_completion_of_a_restore_from_another_cluster_blocks_and_stops_archiving() -> None:
    host = restoring_host(app={**RESTORING, "restore-stanza": "old.main"})
    host.fake_tool.stanzas = [stanza_info("old.main", backups=[backup(LABEL, stanza="old.main")])]
    host.store.objects[MARKER_KEY] = marker_body(stanza="old.main", cluster_id="cluster-old")
    on_update_status(host)
    blocked = UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY)
    # The data is restored: the block says so, and what to do next (the local --wait and
    # a script reading the status see a restore that worked).
    restored = UnitStatus.blocked(msg.restored_from_another_cluster())
    assert host.status == restored
    assert restored.message == (
        "the S3 repository has backups from another cluster: restored; backups paused "
        "until S3 points at a path of this cluster's own (change the S3 path)"
    )
    assert host.effects[-8:] == [
        f"object_store.get({MARKER_KEY})",
        "app_data[stanza]=''",
        "app_data[archive-held]=''",  # another cluster's repository: nothing to hold for
        "workload.apply_config(stanza=-)",
        f"app_data[s3-block-message]={msg.ANOTHER_CLUSTER_REPOSITORY!r}",
        f"set_status({blocked})",
        f"app_data[s3-block-message]={restored.message!r}",
        f"set_status({restored})",
    ]
    assert "stanza" not in host.app_dict

    # update-status's S3 retry (it shows "initialising stanza" on the way) keeps saying
    # what happened and what to do next.
    host.calls.clear()
    on_update_status(host)
    assert "set_status(maintenance: initialising stanza)" in host.effects
    assert host.status == restored


def test_completion_without_s3_settings_skips_the_ownership_check() -> None:
    host = restoring_host(s3=None)
    on_update_status(host)
    assert host.effects == [
        "workload.switch_wal",
        *CLEAR_KEYS,
        *PIN_SET,
        f"workload.remove_moved_data_later({MOVED_DATA})",
        "app_data[restore-moved-data]=''",
        # No settings to push with: WAL is held on the unit until there are.
        "workload.apply_config(stanza=-, hold-wal, s3=-)",
        "set_status(active)",
    ]


def _member_failed(host: FakeHost) -> None:
    host.fake_workload.state = "start failed"


def _bootstrap_failed(host: FakeHost) -> None:
    host.fake_workload.failed_bootstrap = True


def _not_running_yet(host: FakeHost) -> None:
    host.fake_workload.member_running = False
    host.fake_workload.state = "starting"


def _timeline_unreadable(host: FakeHost) -> None:
    host.fake_workload.timeline = None


def _patroni_down(host: FakeHost) -> None:
    host.fake_workload.unavailable = True


FAILED_STATUS = UnitStatus.blocked(f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at {MOVED_DATA}")
WAITING: list[tuple[str, Setup, UnitStatus, list[str]]] = [
    ("member-failed", _member_failed, FAILED_STATUS, [f"set_status({FAILED_STATUS})"]),
    ("bootstrap-failed", _bootstrap_failed, FAILED_STATUS, [f"set_status({FAILED_STATUS})"]),
    ("not-running-yet", _not_running_yet, UnitStatus.maintenance(msg.RESTORING_BACKUP), []),
    ("timeline-unreadable", _timeline_unreadable, UnitStatus.maintenance(msg.RESTORING_BACKUP), []),
    ("patroni-down", _patroni_down, UnitStatus.maintenance(msg.RESTORING_BACKUP), []),
    ("non-leader", _not_leader, UnitStatus.maintenance(msg.RESTORING_BACKUP), []),
]


@pytest.mark.parametrize(
    ("setup", "status", "effects"), [w[1:] for w in WAITING], ids=[w[0] for w in WAITING]
)
def test_restore_not_finished_or_failed(
    setup: Setup, status: UnitStatus, effects: list[str]
) -> None:
    host = restoring_host()
    setup(host)
    assert on_update_status(host) == Done()
    assert host.status == status
    assert host.effects == effects
    assert host.app_dict == {"cluster_initialised": "True", **RESTORING}, "keys and data kept"


def test_failed_restore_is_reported_once() -> None:
    host = restoring_host()
    _member_failed(host)
    on_update_status(host)
    host.calls.clear()
    on_update_status(host)
    assert host.effects == []


def test_failed_restore_without_moved_data_says_so() -> None:
    host = restoring_host(app={k: v for k, v in RESTORING.items() if k != "restore-moved-data"})
    _bootstrap_failed(host)
    on_update_status(host)
    assert host.status == UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP)


def test_restore_then_completion_end_to_end() -> None:
    host = restore_host()
    on_restore(host, {"backup-id": BACKUP_ID})
    host.store.objects[MARKER_KEY] = marker_body()
    host.fake_workload.timeline = 2
    on_update_status(host)
    assert host.status == UnitStatus.active()
    assert host.app_dict == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "replica-backup-set": LABEL,
        "replica-set-since": "20261128-150000",
    }
    assert f"workload.remove_moved_data_later({MOVED_DATA})" in host.calls


@pytest.mark.parametrize(
    "params",
    [
        {"backup-id": "2026-11-28T14:39:26Z", "restore-to-time": ""},
        {"backup-id": " ", "restore-to-time": "latest"},
    ],
)
def test_an_empty_parameter_is_refused_and_nothing_changes(params: dict[str, str]) -> None:
    host = restore_host()
    outcome = on_restore(host, params)
    assert isinstance(outcome, ActionFailed)
    assert "is empty" in outcome.message
    assert not [c for c in host.calls if c.startswith(("workload.", "app_data["))]


# ---------------------------------------------------------------------------
# The archived WAL, before and after (docs/reliability.md, "A restore that falls short")

LATEST = {"backup-id": BACKUP_ID, "restore-to-time": "latest"}


def _archive(*segnos: int, empty: tuple[int, ...] = ()) -> list[ArchivedSegment]:
    return [ArchivedSegment(1, n, 0 if n in empty else 100, segment_name(1, n)) for n in segnos]


def test_restore_to_latest_records_the_end_of_the_archive() -> None:
    host = restore_host()
    host.fake_tool.segments[STANZA] = _archive(2, 3, 4, 5)
    assert isinstance(on_restore(host, LATEST), ActionResults)
    assert host.app_dict["restore-wal-end"] == segment_name(1, 5)


@pytest.mark.parametrize(
    ("params", "archive", "named"),
    [
        # A hole after the backup: recovery to "latest" would stop at segment 3.
        (LATEST, _archive(2, 3, 5), "WAL segment 000000010000000000000004 is missing"),
        # An object the S3 server acknowledged but never wrote.
        (LATEST, _archive(2, 3, 4, empty=(4,)), "000000010000000000000004 is empty"),
        # The backup's own WAL is gone: not even the end of the backup can be reached.
        ({"backup-id": BACKUP_ID}, _archive(3, 4), "000000010000000000000002 is missing"),
    ],
    ids=["hole", "empty-object", "backup-wal-missing"],
)
def test_a_restore_the_archive_cannot_carry_is_refused_and_nothing_changes(
    params: dict[str, str], archive: list[ArchivedSegment], named: str
) -> None:
    host = restore_host()
    host.fake_tool.segments[STANZA] = archive
    outcome = on_restore(host, params)
    assert isinstance(outcome, ActionFailed)
    assert outcome.message.startswith(msg.FAILED_TO_RESTORE_BACKUP)
    assert named in outcome.message and "nothing was changed" in outcome.message
    assert not [c for c in host.effects if not c.startswith("backup_tool.")]  # reads only


def test_a_hole_after_a_time_target_is_left_to_postgresql() -> None:
    # PostgreSQL refuses to promote short of a time target itself: no refusal here.
    host = restore_host()
    host.fake_tool.segments[STANZA] = _archive(2, 3, 5)
    params = {"backup-id": BACKUP_ID, "restore-to-time": "2026-11-28 15:00:00"}
    assert isinstance(on_restore(host, params), ActionResults)


def _restored_to_latest(switch_lsn: str) -> FakeHost:
    host = restoring_host(app={**RESTORING, "restore-type": "default", "restore-to-time": "latest"})
    host.app_data["restore-wal-end"] = segment_name(1, 5)
    host.calls.clear()
    host.fake_workload.timeline = 2
    host.fake_workload.histories[2] = f"1\t{switch_lsn}\tno recovery target specified\n"
    return host


def test_a_restore_that_stopped_short_of_the_archive_is_never_complete() -> None:
    host = _restored_to_latest("0/3000148")  # segment 3: the archive goes to 5
    assert on_update_status(host) == Done()
    assert host.status.is_blocked
    assert host.status.message.startswith(msg.FAILED_TO_RESTORE_BACKUP)
    assert "recovery stopped at 0/3000148" in host.status.message
    assert segment_name(1, 5) in host.status.message and MOVED_DATA in host.status.message
    # Everything kept for rollback-restore: the old data and the restore's record.
    assert "moved_data" not in " ".join(host.calls)  # no removal, begun or done
    assert host.app_dict["restore-moved-data"] == MOVED_DATA
    # Said once: the next update-status changes nothing.
    before = list(host.effects)
    on_update_status(host)
    assert host.effects == before


def test_a_restore_that_replayed_the_whole_archive_completes() -> None:
    host = _restored_to_latest("0/5000148")
    assert on_update_status(host) == Done()
    assert host.status == UnitStatus.active()
    assert "restore-wal-end" not in host.app_dict
    assert f"workload.remove_moved_data_later({MOVED_DATA})" in host.calls


def test_a_restore_that_filled_the_disk_says_so_first() -> None:
    host = restoring_host()
    _member_failed(host)
    host.fake_workload.disk = DiskSpace("/var/lib/pgbackups/main", 12 * 1024, 64 * 1024 * 1024)
    on_update_status(host)
    assert host.status == UnitStatus.blocked(
        f"{msg.FAILED_TO_RESTORE_BACKUP}: disk full: 12 KiB free of 64 MiB at "
        f"/var/lib/pgbackups/main; old data kept at {MOVED_DATA}"
    )
    assert host.app_dict == {"cluster_initialised": "True", **RESTORING}, "keys and data kept"


def test_a_restore_that_fills_the_disk_says_so_and_changes_nothing() -> None:
    """pgBackRest's restore beside the data directory ran out of room: the disk is named
    first, its partial copy removed, and the database runs its own data again."""
    host = restore_host()
    host.fake_workload.staged_ok = False
    host.fake_workload.disk = DiskSpace("/data", 1 << 20, 1 << 33)
    outcome = on_restore(host, {"backup-id": BACKUP_ID})
    assert isinstance(outcome, ActionFailed)
    assert outcome.message.startswith(f"{msg.FAILED_TO_RESTORE_BACKUP}: disk full: ")
    assert outcome.message.endswith("wait_staged_restore failed")
    assert host.effects[-3:] == [
        "workload.discard_staged_restore",
        "workload.start_database",
        "set_status(active: Primary)",
    ]
    assert "restoring-backup" not in host.app_dict
