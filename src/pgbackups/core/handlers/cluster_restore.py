"""A restore of a cluster of several units, after the action (docs/behaviour/restore.md,
"A cluster of several units"): the stages the application bag records, the leader's
steps from one to the next, and every other unit's part.

The leader's ``restore`` action records the target with the stage ``stopping`` and refuses
clients. Then, run by update-status and peer-changed on each unit:

  stopping     every other unit stops its database, moves its data aside and says so in its
               bag (restore-joined); the leader waits for all of them: a Patroni still
               running on the old data would race its bootstrap for the emptied DCS.
               Every unit is tagged nofailover meanwhile and the primary stops last: a
               replica promoted when the primary stopped left a stray timeline
  restoring    the leader restores as a single unit would (restore.restore_here) and
               watches its bootstrap (restore.detect_restore_end); the others wait
  re-creating  the restored primary runs (and its timeline's history is archived): the
               others start Patroni on an empty data directory, which re-creates them as
               replicas (from the repository, or from the primary); each says so once it
               streams the new timeline (restore-done) and removes its old data; once all
               have, the leader ends the restore (restore.finish_restore)

A rollback (rollback-restore) goes the other way: ``rolling-back`` while the leader's old
data starts as the primary, ``rolled-back`` once it runs: every other unit moves its own
data back and starts, and the leader ends it once none is left.

A unit that is away meanwhile does its part when it is back: the stage waits for it.

Leadership may move while a restore runs. Before the restore began (``stopping``) the new
leader carries on as if it had started it: its own data, moved aside when it stopped as
another unit, is the copy the restore keeps. Once a unit restores (``restore-unit``), the
restore stays there: that unit never stops for it as another unit, it says in its bag
when it runs as the restored primary (or failed), and the new leader leads the other
stages from what it says.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import apply_config, workload_done
from pgbackups.core.handlers.restore import (
    detect_restore_end,
    finish_restore,
    is_failed_restore_status,
    primary_restored,
    primary_timeline,
    restore_here,
    take_over,
)
from pgbackups.core.handlers.tls_server import reconcile_tls_server
from pgbackups.core.host import Host, Recovery, UnitStatus, WorkloadError
from pgbackups.core.outcomes import Deferred, Done, Outcome
from pgbackups.core.restore_state import (
    RECREATING,
    RESTORE_STAGES,
    RESTORING,
    ROLLED_BACK,
    ROLLING_BACK,
    STOPPING,
    RestoreState,
    UnitRestoreState,
)

log = logging.getLogger(__name__)

# How long a re-creation must look stalled before it is started again (Patroni's loop is
# 10 s by default: a Patroni that just started has begun creating the replica by then).
STALLED_FOR_SECONDS = 20


# ===========================================================================
# The leader


def advance_restore(host: Host, state: RestoreState) -> Outcome:
    """The leader's step for the stage the bag records (update-status, peer-changed)."""
    if state.stage == STOPPING:
        return _restore_when_stopped(host, state)
    if state.stage == RESTORING and state.restores_elsewhere(host.unit_name):
        return _watch_restore_elsewhere(host, state)
    if state.stage == RECREATING:
        return _end_when_recreated(host, state)
    if state.stage == ROLLING_BACK:
        return _rolled_back_when_primary(host)
    if state.stage == ROLLED_BACK:
        return _end_rollback_when_back(host)
    if state.in_progress:  # restoring, or a restore from before the stages
        return detect_restore_end(host, state)
    return Done()


def _units_not(host: Host, done: str, epoch: str) -> list[str]:
    """The other units whose bag does not (yet) say ``done`` for this restore."""
    bags = host.peer_data()
    waiting = []
    for peer in host.peers():
        mine = UnitRestoreState.read(bags.get(peer.name, {}))
        value = mine.joined if done == "joined" else mine.done
        if value != epoch:
            waiting.append(peer.name)
    return waiting


def _restore_when_stopped(host: Host, state: RestoreState) -> Outcome:
    waiting = _units_not(host, "joined", state.epoch)
    if waiting:
        _say(host, UnitStatus.maintenance(msg.waiting_for_units("stop", waiting)))
        return Done()
    log.info("Every other unit stopped for restore %s: restoring", state.epoch)
    mine = UnitRestoreState.read(host.unit_data)
    if mine.joined == state.epoch:
        # Leadership moved here after this unit stopped for the restore as another unit:
        # its data is aside already, and that copy is the one the restore keeps.
        log.info(
            "Leading restore %s; this unit's data is aside at %s", state.epoch, mine.moved_data
        )
        state = replace(state, moved_data=state.moved_data or mine.moved_data)
    before = host.get_status()
    failed = restore_here(host, state, before)
    if mine.joined == state.epoch and RestoreState.read(host.app_data) != state:
        UnitRestoreState.clear(host.unit_data)  # the app bag names the copy now
    if failed is None:
        return Done()
    after = RestoreState.read(host.app_data)
    if after is not None and after.stage == RESTORING:
        return Done()  # the data was moved aside: rollback-restore is the user's call
    # Nothing was moved here (the database was started again, or tried): the others take
    # their data back once it runs as the primary.
    log.error("The restore did not start (%s): the other units take their data back", failed)
    RestoreState.clear(host.app_data, keep_moved_data=True, keep_stages=True)
    RestoreState.set_stage(host.app_data, ROLLING_BACK)
    # The database was started again on its own data under the `stopping` stage's tags
    # (nofailover): without this, Patroni never promotes it and the others wait for ever.
    try:
        apply_config(host)
    except WorkloadError as exc:
        log.error("The configuration after the failed restore was not applied: %s", exc)
    host.set_status(UnitStatus.blocked(failed.message))
    return Done()


def _watch_restore_elsewhere(host: Host, state: RestoreState) -> Outcome:
    """Leadership moved to this unit while ``state.unit`` restores: what that unit says
    in its bag moves the restore on (or shows its failure here)."""
    bags = host.peer_data()
    report = UnitRestoreState.read(bags.get(state.unit, {})).primary_report(state.epoch)
    if report == "failed":
        if not is_failed_restore_status(host.get_status()):
            reason = f"on {state.unit}, where the data from before it is kept"
            if state.moved_data:
                reason += f" at {state.moved_data}"
            host.set_status(
                UnitStatus.blocked(msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason))
            )
        return Done()
    if report.isdigit():
        return primary_restored(host, state, int(report))
    _say(host, UnitStatus.maintenance(msg.with_reason(msg.RESTORING_BACKUP, f"on {state.unit}")))
    return Done()


def _end_when_recreated(host: Host, state: RestoreState) -> Outcome:
    # The unit that restored (when leadership left it) is the primary: nothing to wait for.
    waiting = [u for u in _units_not(host, "done", state.epoch) if u != state.unit]
    if waiting:
        what = "re-create from the restored primary"
        _say(host, UnitStatus.maintenance(msg.waiting_for_units(what, waiting)))
        return Done()
    if state.restores_elsewhere(host.unit_name):
        timeline = state.new_timeline
    else:
        timeline = primary_timeline(host.workload)
    if timeline is None:
        return Done()  # the primary does not answer now: look again
    log.info("Every unit runs the restored data: the restore %s is complete", state.epoch)
    finish_restore(host, state, timeline)
    return Done()


def _rolled_back_when_primary(host: Host) -> Outcome:
    if primary_timeline(host.workload) is None:
        return Done()
    RestoreState.set_stage(host.app_data, ROLLED_BACK)
    log.info("The data from before the restore runs as the primary: the others follow")
    return _end_rollback_when_back(host)


def _end_rollback_when_back(host: Host) -> Outcome:
    bags = host.peer_data()
    waiting = [p.name for p in host.peers() if UnitRestoreState.read(bags.get(p.name, {})).joined]
    if waiting:
        message = msg.with_reason(msg.ROLLING_BACK_RESTORE, f"waiting for {', '.join(waiting)}")
        _say(host, UnitStatus.maintenance(message))
        return Done()
    RestoreState.end_stages(host.app_data)
    status = host.get_status()
    if not status.is_blocked:
        host.set_status(UnitStatus.active())
    log.info("Every unit runs its data from before the restore again")
    return Done()


def _say(host: Host, status: UnitStatus) -> None:
    if host.get_status() != status:
        host.set_status(status)


# ===========================================================================
# Every other unit


def follow_restore(host: Host) -> Outcome | None:
    """This unit's part in a cluster restore or its rollback; None when it has none (the
    caller goes on with its own steps)."""
    state = RestoreState.read(host.app_data)
    mine = UnitRestoreState.read(host.unit_data)
    stage = state.stage if state is not None else ""
    restoring_here = state is not None and state.unit == host.unit_name
    if (
        state is not None
        and state.in_progress
        and stage in (RESTORING, RECREATING)
        and restoring_here
    ):
        return _restore_led_elsewhere(host, state)
    if state is not None and state.in_progress and stage in RESTORE_STAGES and state.epoch:
        if mine.joined != state.epoch:
            return _stop_for_restore(host, state, mine)
        if stage in (STOPPING, RESTORING):
            _say(host, UnitStatus.waiting(msg.WAITING_FOR_RESTORED_PRIMARY))
            return Done()
        return _recreate(host, state, mine)
    if stage == ROLLING_BACK and mine.joined:
        _say(host, UnitStatus.waiting(msg.WAITING_FOR_ROLLED_BACK_PRIMARY))
        return Done()
    if stage == ROLLED_BACK and mine.joined:
        return _take_data_back(host, mine)
    if mine.involved:
        return _restore_over(host, mine)
    return None


def _restore_led_elsewhere(host: Host, state: RestoreState) -> Outcome:
    """This unit restores and leadership moved away: it never stops for the restore as
    another unit would (that would stop the restored primary); it says how its bootstrap
    went, for the new leader."""
    workload = host.workload
    if state.stage == RESTORING:
        if workload.is_database_service_running() is False:
            # The restored PostgreSQL recovers on its own (restore.detect_restore_end on
            # a leader that restores): Patroni takes it over once it promoted.
            recovery = workload.recovery()
            state_now = recovery.state if recovery is not None else Recovery.ENDED
            if state_now == Recovery.PROMOTED and take_over(workload) is not None:
                state_now = Recovery.ENDED
            if state_now == Recovery.ENDED:
                return _report_failed(host, state)
            _say(host, UnitStatus.maintenance(msg.RESTORING_BACKUP))
            return Done()
        member = workload.member_state()
        if workload.bootstrap_failed() or (member is not None and "failed" in member):
            return _report_failed(host, state)
        timeline = primary_timeline(workload)
        if timeline is not None:
            # The new timeline's first segment, for the others' standby restore
            # (restore._timeline_archived): the new leader cannot close it from there.
            workload_done(workload.switch_wal)
            UnitRestoreState.report_primary(host.unit_data, state.epoch, str(timeline))
    _say(host, UnitStatus.maintenance(msg.RESTORING_BACKUP))
    return Done()


def _report_failed(host: Host, state: RestoreState) -> Done:
    UnitRestoreState.report_primary(host.unit_data, state.epoch, "failed")
    kept = f"old data kept at {state.moved_data}" if state.moved_data else ""
    _say(host, UnitStatus.blocked(msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, kept)))
    return Done()


def _stop_for_restore(host: Host, state: RestoreState, mine: UnitRestoreState) -> Outcome:
    """Stop, move the data aside (kept until this unit streams the restored data; a unit
    that already moved its data for a failed attempt keeps that first copy), say so."""
    _say(host, UnitStatus.maintenance(msg.STOPPING_FOR_RESTORE))
    workload = host.workload
    if workload.is_primary() is True:
        # The primary stops last: a replica still running when it stopped took the leader
        # lock and promoted itself for a few seconds, and that stray timeline kept the
        # re-created replicas from ever streaming the restored primary (seen in
        # tests/e2e/test_network_faults.py). The leader never joins (it stops for its own
        # restore, tagged nofailover meanwhile): every other unit has once only it is left.
        bags = host.peer_data()
        running = [
            p.name
            for p in host.peers()
            if UnitRestoreState.read(bags.get(p.name, {})).joined != state.epoch
        ]
        if len(running) > 1:
            log.info("The primary stops for the restore once the replicas have: %s", running)
            return Done()
    if not workload_done(workload.stop_database):
        return Deferred("the database did not stop for the restore")
    # A restore's pgBackRest that outlived its Patroni would write into what is moved.
    users = workload.data_dir_users()
    if users:
        return Deferred("the data directory is still in use by " + "; ".join(users))
    try:
        moved = workload.move_data_aside() or ""
    except WorkloadError as exc:
        log.error("%s", exc)
        return Deferred("the data directory could not be moved aside")
    kept = mine.moved_data or moved
    if mine.moved_data and moved:
        log.warning(
            "The data from before the first restore is kept at %s; a failed attempt's at %s",
            mine.moved_data,
            moved,
        )
    UnitRestoreState(joined=state.epoch, moved_data=kept).write(host.unit_data)
    apply_config(host)  # clients refused; how to re-create once the primary is restored
    log.info("Stopped for restore %s; the data from before it is at %s", state.epoch, kept)
    _say(host, UnitStatus.waiting(msg.WAITING_FOR_RESTORED_PRIMARY))
    return Done()


def _recreate(host: Host, state: RestoreState, mine: UnitRestoreState) -> Outcome:
    """Patroni on an empty data directory re-creates this unit from the restored primary.
    After a killed attempt Patroni is started again and finds the attempt's files, which
    it leaves to a person: it is asked to re-create the replica over them (pgBackRest's
    ``--delta`` reuses what is already right)."""
    if mine.done == state.epoch:
        return Done()
    workload = host.workload
    if workload.is_database_service_running() is not True:
        apply_config(host)
        if not workload_done(workload.start_database):
            return Deferred("the database did not start to re-create this unit")
        _say(host, UnitStatus.maintenance(msg.RECREATING_REPLICA))
        return Done()
    if workload.replica_creation_stalled() is True:
        # A killed attempt left its files: Patroni waits for a person. Create it again
        # over them (pgBackRest's --delta keeps what is already right) -- but only once
        # the stall lasts: a Patroni that just started looks the same for a moment, and
        # a reinitialise then cancelled the creation it was beginning (seen in the e2e
        # run: that replica then reloaded the primary's configuration and never
        # streamed).
        now = host.now()
        seen = datetime.fromisoformat(
            UnitRestoreState.stalled_since(host.unit_data, now.isoformat())
        )
        if (now - seen).total_seconds() >= STALLED_FOR_SECONDS:
            log.info("The re-creation was interrupted: creating this replica again")
            UnitRestoreState.stalled_since(host.unit_data, None)
            workload_done(workload.recreate_replica)
    else:
        UnitRestoreState.stalled_since(host.unit_data, None)
    streams = workload.streaming_timeline()
    if streams is None or streams != state.new_timeline:
        _say(host, UnitStatus.maintenance(msg.RECREATING_REPLICA))
        return Done()
    if mine.moved_data:
        try:  # not waited for, as on the leader (restore._remove_old_data)
            workload.remove_moved_data_later(mine.moved_data)
        except WorkloadError as exc:  # the unit stands; the old copy is only left over
            log.warning("The data from before the restore was not removed: %s", exc)
    UnitRestoreState(joined=mine.joined, done=state.epoch).write(host.unit_data)
    log.info("Re-created from the restored primary: streaming timeline %d", streams)
    host.set_status(UnitStatus.active())
    return Done()


def _take_data_back(host: Host, mine: UnitRestoreState) -> Outcome:
    """The leader's data from before the restore runs as the primary again: this unit's
    own data goes back and follows it."""
    _say(host, UnitStatus.maintenance(msg.ROLLING_BACK_RESTORE))
    workload = host.workload
    if not workload_done(workload.stop_database):
        return Deferred("the database did not stop for the rollback")
    users = workload.data_dir_users()
    if users:
        return Deferred("the data directory is still in use by " + "; ".join(users))
    if mine.moved_data and not workload_done(lambda: workload.move_data_back(mine.moved_data)):
        message = msg.with_reason(msg.FAILED_TO_ROLL_BACK, f"could not move {mine.moved_data} back")
        host.set_status(UnitStatus.blocked(message))
        return Done()
    UnitRestoreState.clear(host.unit_data)
    apply_config(host)
    if not workload_done(workload.start_database):
        message = msg.with_reason(
            msg.FAILED_TO_ROLL_BACK, "the data is back but the database did not start"
        )
        host.set_status(UnitStatus.blocked(message))
        return Done()
    log.info("Rolled back: the data from %s is back", mine.moved_data or "(none)")
    host.set_status(UnitStatus.active())
    return Done()


def _restore_over(host: Host, mine: UnitRestoreState) -> Outcome:
    """The restore ended on the leader: clients are let in again. Data this unit still
    keeps aside (it never streamed: it was away, or removed) stays for a person."""
    if mine.moved_data and not mine.done:
        log.warning("The restore is over; the data from before it stays at %s", mine.moved_data)
    UnitRestoreState.clear(host.unit_data)
    if mine.primary:  # this unit restored after leadership left it: it is the primary
        _say(host, UnitStatus.active())
    apply_config(host)
    if host.workload.is_database_service_running() is False:
        # It never re-created itself: Patroni makes it a replica of the primary now.
        workload_done(host.workload.start_database)
    return Done()


# ===========================================================================
# Both: what update-status and peer-changed run first


def restore_step(host: Host) -> Outcome | None:
    """This unit's step in a restore under way (the leader's or another unit's); None
    when there is none and the caller goes on with its own steps."""
    if host.is_leader():
        state = RestoreState.read(host.app_data)
        if state is not None and (state.in_progress or state.stage):
            return advance_restore(host, state)
        return None
    return follow_restore(host)


def on_peer_changed(host: Host) -> Outcome:
    """peer-changed: a restore's next step first (Juju fires it when the leader records a
    stage and when a unit says it did its part), else the TLS server
    (docs/behaviour/tls-server.md)."""
    step = restore_step(host)
    return step if step is not None else reconcile_tls_server(host)
