"""rollback-restore (docs/restore.md): only from a failed restore with the old data kept,
on the leader; every box of the chart in order; a failed step leaves the failed-restore
state as it was (a retry is possible) and nothing is ever deleted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import LOG_HINT, MOVED_DATA, STANZA, FakeHost

from pgbackups.core import messages as msg
from pgbackups.core.handlers.rollback import on_rollback_restore
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults

FAILED = UnitStatus.blocked(f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at {MOVED_DATA}")
PITR_FAILED = UnitStatus.blocked(msg.cannot_restore_pitr(LOG_HINT))
FAILED_RESTORE_KEYS = {
    "stanza": STANZA,
    "restoring-backup": "20261128-100000F",
    "restore-stanza": STANZA,
    "restore-type": "time",
    "restore-to-time": "2026-11-28 10:30:00.000000+00",
    "restore-timeline": "1",
    "restore-moved-data": MOVED_DATA,
}
CLEARED = [
    "app_data[restoring-backup]=''",
    "app_data[restore-stanza]=''",
    "app_data[restore-to-time]=''",
    "app_data[restore-timeline]=''",
    "app_data[restore-type]=''",
    "app_data[restore-moved-data]=''",
]


def failed_host(status: UnitStatus = PITR_FAILED, **kwargs: object) -> FakeHost:
    kwargs.setdefault("app", FAILED_RESTORE_KEYS)
    return FakeHost(status=status, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [FAILED, PITR_FAILED], ids=["plain", "pitr"])
def test_rollback_full_call_sequence(status: UnitStatus) -> None:
    host = failed_host(status)
    outcome = on_rollback_restore(host, {})
    assert outcome == ActionResults({"rollback-status": msg.ROLLED_BACK})
    assert host.calls == [
        "set_status(maintenance: rolling back the restore)",
        "workload.stop_database",
        "workload.data_dir_users",  # nothing may still write where the data goes back
        "workload.remove_dcs_state",
        f"workload.move_data_back({MOVED_DATA})",
        *CLEARED,
        f"workload.apply_config(stanza={STANZA})",
        "workload.start_database",
        "set_status(active)",
    ]
    assert host.app_dict == {"cluster_initialised": "True", "stanza": STANZA}
    assert host.fake_workload.configs[-1].restore is None, "Patroni's normal bootstrap"
    assert not any("remove_moved_data" in c for c in host.calls), "nothing deleted"


Setup = Callable[[FakeHost], None]


def _in_progress(host: FakeHost) -> None:
    host.set_status(UnitStatus.maintenance(msg.RESTORING_BACKUP))


def _no_restore(host: FakeHost) -> None:
    for key in FAILED_RESTORE_KEYS:
        if key != "stanza":
            host.app_data[key] = ""


def _healthy(host: FakeHost) -> None:
    _no_restore(host)
    host.set_status(UnitStatus.active("Primary"))


def _s3_blocked(host: FakeHost) -> None:
    _no_restore(host)
    host.set_status(UnitStatus.blocked(msg.FAILED_TO_INITIALIZE_STANZA))


def _nothing_kept(host: FakeHost) -> None:
    host.app_data["restore-moved-data"] = ""


def _not_leader(host: FakeHost) -> None:
    host.set_leader(False)


REFUSALS: list[tuple[str, Setup, str]] = [
    ("in-progress", _in_progress, f"{msg.NO_FAILED_RESTORE}: a restore is in progress"),
    ("healthy", _healthy, f"{msg.NO_FAILED_RESTORE}: the unit is active (Primary)"),
    (
        "s3-blocked",
        _s3_blocked,
        f"{msg.NO_FAILED_RESTORE}: the unit is blocked ({msg.FAILED_TO_INITIALIZE_STANZA})",
    ),
    (
        "nothing-kept",
        _nothing_kept,
        f"{msg.NO_FAILED_RESTORE}: no data from before the restore is kept",
    ),
    ("not-leader", _not_leader, msg.ROLLBACK_NOT_LEADER),
]


@pytest.mark.parametrize(
    ("setup", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_change_nothing(setup: Setup, message: str) -> None:
    host = failed_host()
    setup(host)
    status, app = host.status, dict(host.app_dict)
    host.calls.clear()
    assert on_rollback_restore(host, {}) == ActionFailed(message)
    assert host.effects == []
    assert (host.status, host.app_dict) == (status, app)


def test_parameters_are_refused() -> None:
    host = failed_host()
    outcome = on_rollback_restore(host, {"backup-id": "x"})
    assert isinstance(outcome, ActionFailed)
    assert "takes no parameters (got backup-id)" in outcome.message
    assert host.effects == []


def _stop_fails(host: FakeHost) -> None:
    host.fake_workload.stop_ok = False


def _dcs_fails(host: FakeHost) -> None:
    host.fake_workload.remove_dcs_ok = False


def _move_back_fails(host: FakeHost) -> None:
    host.fake_workload.move_back_ok = False


STEP_FAILURES: list[tuple[str, Setup, str, str]] = [
    ("stop", _stop_fails, "could not stop the database", "workload.stop_database"),
    (
        "dcs",
        _dcs_fails,
        "could not remove the failed restore from the DCS",
        "workload.remove_dcs_state",
    ),
    (
        "move-back",
        _move_back_fails,
        f"could not move {MOVED_DATA} back",
        f"workload.move_data_back({MOVED_DATA})",
    ),
]


@pytest.mark.parametrize(
    ("setup", "reason", "last_call"),
    [s[1:] for s in STEP_FAILURES],
    ids=[s[0] for s in STEP_FAILURES],
)
def test_a_failed_step_keeps_the_failed_restore_state(
    setup: Setup, reason: str, last_call: str
) -> None:
    host = failed_host()
    setup(host)
    outcome = on_rollback_restore(host, {})
    assert outcome == ActionFailed(f"{msg.FAILED_TO_ROLL_BACK}: {reason}")
    assert host.calls[-2:] == [last_call, f"set_status({PITR_FAILED})"]
    assert host.status == PITR_FAILED
    assert host.app_dict == {"cluster_initialised": "True", **FAILED_RESTORE_KEYS}, "retry possible"


def test_data_back_but_no_start_blocks_and_says_where_things_are() -> None:
    host = failed_host()
    host.fake_workload.start_results = [False]
    outcome = on_rollback_restore(host, {})
    message = f"{msg.FAILED_TO_ROLL_BACK}: the data is back but the database did not start"
    assert outcome == ActionFailed(message)
    assert host.status == UnitStatus.blocked(message)
    assert host.app_dict == {"cluster_initialised": "True", "stanza": STANZA}


def test_after_a_rollback_a_new_restore_is_allowed_and_update_status_is_quiet() -> None:
    host = failed_host()
    on_rollback_restore(host, {})
    host.calls.clear()
    on_update_status(host)
    assert host.effects == [], "no restore left to watch"
    assert host.status == UnitStatus.active()


def test_a_failure_the_unit_could_not_record_is_rolled_back() -> None:
    """The restore filled the disk that held the status too: the unit still says
    "restoring backup", but Patroni gave the bootstrap up. Once there is room again the
    rollback must not be refused for want of a Blocked status."""
    host = failed_host(UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.failed_bootstrap = True
    outcome = on_rollback_restore(host, {})
    assert outcome == ActionResults({"rollback-status": msg.ROLLED_BACK})
    assert f"workload.move_data_back({MOVED_DATA})" in host.effects
    assert host.status == UnitStatus.active()


def test_a_restore_still_running_is_not_rolled_back() -> None:
    host = failed_host(UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.failed_bootstrap = False
    outcome = on_rollback_restore(host, {})
    assert outcome == ActionFailed(f"{msg.NO_FAILED_RESTORE}: a restore is in progress")
    assert host.effects == []


def test_rollback_refuses_while_a_process_still_writes_into_the_data_directory() -> None:
    # What a restore's pgBackRest does when its Patroni died: it goes on writing by path
    # (docs/reliability.md, "No process outlives its operation").
    host = failed_host(UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP))
    host.fake_workload.users = ["pid 4242 pgbackrest (argument --pg1-path=/data)"]
    before = host.status
    outcome = on_rollback_restore(host, {})
    assert isinstance(outcome, ActionFailed)
    assert outcome.message.startswith(msg.FAILED_TO_ROLL_BACK)
    assert "still in use by pid 4242 pgbackrest" in outcome.message
    assert host.status == before
    assert "workload.move_data_back" not in " ".join(host.calls)
    assert "restore-moved-data" in host.app_dict
