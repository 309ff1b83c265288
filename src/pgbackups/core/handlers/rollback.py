"""rollback-restore (ours; docs/restore.md "Rolling back a failed restore").

docs/behaviour/rollback-restore.md: the data from before a restore "is moved back if the restore
fails and the user asks to roll back". The chart:

  rollback-restore
    Is the unit blocked by a failed restore,
      or has Patroni given up a restore in progress? no -> fail (nothing to roll back)
    Is the data from before the restore recorded? no  -> fail (nothing to move back)
    Is current unit leader?                       no  -> fail
    Maintenance: rolling back the restore
    Has the database stopped?                     no  -> status as before, fail
    Was the failed restore removed from the DCS?  no  -> status as before, fail
    Was the data moved back?                      no  -> status as before, fail
    Clear the restore keys, normal bootstrap, start the database
      (several units: stage rolling-back; the others put their data back once this
      unit runs as the primary, see cluster_restore)
    Did it start?                                 no  -> Blocked, fail
    Active (several units: Maintenance until the others are back); results
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import apply_config, workload_done
from pgbackups.core.handlers.restore import is_failed_restore_status
from pgbackups.core.host import Host, UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.restore_state import ROLLING_BACK, RestoreState, restore_in_progress

log = logging.getLogger(__name__)


def on_rollback_restore(host: Host, params: Mapping[str, str]) -> Outcome:
    """Put the data from before a failed restore back and start the database on it.

    Nothing is deleted: whatever the failed attempt left in the data directory is renamed
    aside by ``Workload.move_data_back``. The archive and the stanza are untouched. With
    no DCS state Patroni starts the data as a replica and promotes it: the cluster goes
    on on the next timeline, from the data's own history.
    """
    if params:
        return _rollback_refused(
            f"{msg.FAILED_TO_ROLL_BACK}: it takes no parameters (got {', '.join(sorted(params))})"
        )
    before = host.get_status()
    if not (is_failed_restore_status(before) or _failed_unrecorded(host)):
        return _rollback_refused(msg.with_reason(msg.NO_FAILED_RESTORE, _no_failure(host)))
    state = RestoreState.read(host.app_data)
    moved = state.moved_data if state is not None else ""
    if not moved:
        return _rollback_refused(
            msg.with_reason(msg.NO_FAILED_RESTORE, "no data from before the restore is kept")
        )
    if not host.is_leader():
        return _rollback_refused(msg.ROLLBACK_NOT_LEADER)
    if state is not None and state.restores_elsewhere(host.unit_name):
        # The data to put back is on the unit that restored; leadership moved since.
        reason = (
            f"the restore ran on {state.unit}, the leader when it began, where the data from "
            f"before it is kept; roll back once {state.unit} is the leader again"
        )
        return _rollback_refused(msg.with_reason(msg.FAILED_TO_ROLL_BACK, reason))
    host.set_status(UnitStatus.maintenance(msg.ROLLING_BACK_RESTORE))
    workload = host.workload
    if not workload_done(workload.stop_database):
        host.set_status(before)
        return _rollback_refused(
            msg.with_reason(msg.FAILED_TO_ROLL_BACK, "could not stop the database")
        )
    # A restore's pgBackRest that outlived its Patroni writes by path: moving the old data
    # back under it would mix the two (docs/reliability.md, "No process outlives its
    # operation"). Nothing is moved while anything still uses the data directory.
    users = workload.data_dir_users()
    if users:
        host.set_status(before)
        reason = "still in use by " + "; ".join(users) + " (stop it, then roll back again)"
        return _rollback_refused(msg.with_reason(msg.FAILED_TO_ROLL_BACK, reason))
    for step, done in (
        ("could not remove the failed restore from the DCS", workload.remove_dcs_state),
        (f"could not move {moved} back", lambda: workload.move_data_back(moved)),
    ):
        if not workload_done(done):
            host.set_status(before)
            return _rollback_refused(msg.with_reason(msg.FAILED_TO_ROLL_BACK, step))
    others = bool(state is not None and state.epoch and host.peers())
    RestoreState.clear(host.app_data, keep_stages=others)
    if others:
        # The other units put their own data back once this one runs as the primary
        # (cluster_restore): started before, their Patroni would race it for the DCS.
        RestoreState.set_stage(host.app_data, ROLLING_BACK)
    apply_config(host)  # Patroni's normal bootstrap: it starts the data that is back
    if not workload_done(workload.start_database):
        message = msg.with_reason(
            msg.FAILED_TO_ROLL_BACK, "the data is back but the database did not start"
        )
        host.set_status(UnitStatus.blocked(message))
        return _rollback_refused(message)
    log.info("Rolled back the failed restore: the data from %s is back", moved)
    if others:
        host.set_status(UnitStatus.maintenance(msg.ROLLING_BACK_RESTORE))
    else:
        host.set_status(UnitStatus.active())
    return ActionResults({msg.RESULT_ROLLBACK_STATUS: msg.ROLLED_BACK})


def _failed_unrecorded(host: Host) -> bool:
    """A restore in progress whose bootstrap Patroni gave up, though the unit does not
    show it: the Blocked status could not be written (the disk the restore filled held
    it too) or update-status has not run since. The failure is the workload's to tell."""
    if not restore_in_progress(host.app_data):
        return False
    if host.workload.bootstrap_failed() is not True:
        return False
    log.warning("The restore failed but the unit does not show it: rolling back anyway")
    return True


def _no_failure(host: Host) -> str:
    """Why there is nothing to roll back, for the refusal."""
    if restore_in_progress(host.app_data):
        return "a restore is in progress"
    status = host.get_status()
    if status.message:
        return f"the unit is {status.kind.value} ({status.message})"
    return f"the unit is {status.kind.value}"


def _rollback_refused(message: str) -> ActionFailed:
    log.error("Rollback of the restore failed: %s", message)
    return ActionFailed(message)
