"""restore (docs/behaviour/restore.md, with point-in-time recovery: docs/restore.md), and the
detection of its end.

The end of a restore is part of this chart, not of update-status's: docs/behaviour/restore.md draws
the restore as one chart that goes on after the action returned ("Patroni bootstraps from the
backup... once the cluster is healthy: keys cleared, normal bootstrap, ownership
re-checked, the moved-aside data removed, Active"). update-status is only the clock that
runs :func:`detect_restore_end` on the leader while a restore is in progress; what the end
means (the PITR block, the old data kept or removed) is decided here, next to the keys
:func:`on_restore` records. rollback-restore reads the same state
(:func:`is_failed_restore_status`) and the local ``--wait`` the same readiness
(:func:`primary_timeline`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pgbackups.core import messages as msg
from pgbackups.core import targets
from pgbackups.core.handlers._steps import (
    apply_config,
    block_s3,
    parse_settings,
    replica_source,
    repository_problem,
    restore_target,
    restore_timelines,
    workload_done,
    write_marker,
)
from pgbackups.core.handlers._wal import (
    check_before_restore,
    outside_windows,
    recoverable_windows,
    stopped_short,
)
from pgbackups.core.handlers.health import disk_full_reason
from pgbackups.core.host import (
    BackupToolError,
    Host,
    ObjectStore,
    Recovery,
    UnitStatus,
    Workload,
    WorkloadError,
)
from pgbackups.core.ids import normalise_id
from pgbackups.core.outcomes import ActionFailed, ActionResults, Done, Outcome
from pgbackups.core.peer_keys import S3_BLOCK_MESSAGE, STANZA
from pgbackups.core.repository import BackupRecord, StanzaInfo, TimelineBranch, TimelineRecord
from pgbackups.core.restore_state import (
    RECREATING,
    RESTORING,
    ROLLBACK_STAGES,
    STOPPING,
    ReplicaSet,
    RestoreState,
)
from pgbackups.core.settings import S3Settings, S3SettingsProblem

log = logging.getLogger(__name__)

# How long a takeover waits for Patroni to hold the leader key before leaving the rest to
# the next update-status (about a second here; more on a loaded machine).
TAKEOVER_WAIT_SECONDS = 30.0


def on_restore(host: Host, params: Mapping[str, str]) -> Outcome:
    """docs/behaviour/restore.md, in chart order, with point-in-time recovery (docs/restore.md): the
    first box takes ``backup-id`` and/or ``restore-to-time`` and checks the time's form, and
    "Is backup id valid" became "Is the restore target valid" (targets.choose_target).

    Nothing is deleted: the data directory is moved aside and removed only once
    update-status has seen the restored cluster healthy. If the database does not start
    after the data was moved aside, the restore keys stay set and the unit is Blocked
    ``Failed to restore backup: ...`` naming where the old data is; update-status keeps
    watching (Patroni may still come up), and a new restore is allowed. The data is not
    moved back automatically: that is the user's call (rollback-restore).
    """
    request = _restore_request(host, params)
    if isinstance(request, ActionFailed):
        return request
    if not _is_workload_accessible(host):
        return _restore_refused(msg.WORKLOAD_NOT_ACCESSIBLE)
    if _is_blocked_for_restore(host):
        return _restore_refused(msg.RESTORE_UNIT_BLOCKED)
    if not host.is_leader():
        return _restore_refused(msg.RESTORE_NOT_LEADER)
    if _is_restore_running(host):
        return _restore_refused(msg.RESTORE_ALREADY_RUNNING)
    found = _find_backup(host, request)
    if isinstance(found, ActionFailed):
        return found
    chosen, wal_end = found
    wanted = _wanted_state(host, chosen, wal_end)
    if host.peers():
        return _start_cluster_restore(host, wanted)
    failed = restore_here(host, wanted, host.get_status())
    if failed is not None:
        return failed
    log.info("Restore started: %s (stanza %s)", chosen.description, chosen.stanza)
    return ActionResults({msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED})


def _wanted_state(host: Host, chosen: targets.Chosen, wal_end: str) -> RestoreState:
    """The restore keys for this attempt; the data from before the first failed attempt
    stays recorded (it holds the cluster's real data)."""
    previous = RestoreState.read(host.app_data)
    return RestoreState(
        label=chosen.label,
        stanza=chosen.stanza,
        type=chosen.type,
        to_time=chosen.restore_to_time,
        timeline=chosen.timeline,
        moved_data=previous.moved_data if previous is not None else "",
        wal_end=wal_end,
        epoch=host.now().strftime("%Y%m%dT%H%M%S.%fZ"),
        stage=RESTORING,
    )


def _is_restore_running(host: Host) -> bool:
    """A restore (or its rollback) is under way and has not failed: a second one would
    stop the units that are re-creating themselves from the first."""
    state = RestoreState.read(host.app_data)
    if state is None:
        return False
    if state.stage in ROLLBACK_STAGES:
        return True
    return state.in_progress and not is_failed_restore_status(host.get_status())


def _start_cluster_restore(host: Host, wanted: RestoreState) -> Outcome:
    """Several units: the others stop and move their data aside first (their Patroni
    would otherwise race the leader's bootstrap for the empty DCS, with the old data);
    the leader refuses clients now and restores once they all have
    (cluster_restore.advance_restore, run by update-status and peer-changed)."""
    state = replace(wanted, stage=STOPPING)
    state.write(host.app_data)
    host.app_data[S3_BLOCK_MESSAGE] = ""
    apply_config(host)  # clients refused here too
    waiting = [p.name for p in host.peers()]
    host.set_status(UnitStatus.maintenance(msg.waiting_for_units("stop", waiting)))
    log.info("Cluster restore %s started: waiting for %s to stop", state.epoch, ", ".join(waiting))
    return ActionResults({msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED})


def restore_here(host: Host, wanted: RestoreState, before: UnitStatus) -> ActionFailed | None:
    """The leader's own restore: pgBackRest restores into a new directory while the
    database stops and the cluster is forgotten in the DCS; the copy replaces the data
    directory (moved aside, never deleted), the keys are recorded, and PostgreSQL starts
    on the copy to recover to the target. None once it started (detect_restore_end
    watches it promote and has Patroni take it over); otherwise the failure, with the
    status set: ``before`` again while the data directory was untouched (the database is
    started as it was), Blocked once it was moved aside."""
    host.set_status(UnitStatus.maintenance(msg.RESTORING_BACKUP))
    workload = host.workload
    target = restore_target(replace(wanted, stage=RESTORING), host.stanza_name)
    assert target is not None  # a restoring state always has one
    try:
        workload.start_staged_restore(target)
    except WorkloadError as exc:
        log.error("%s", exc)
        host.set_status(before)
        return _restore_refused(_restore_failure(f"could not begin the restore: {exc}"))
    stopped = workload_done(workload.stop_database)
    forgotten = stopped and workload_done(workload.remove_dcs_state)
    try:
        workload.wait_staged_restore()
    except WorkloadError as exc:
        log.error("%s", exc)
        # A restore that filled the disk says so first (before its copy is removed).
        full = disk_full_reason(workload.data_disk())
        reason = "; ".join(part for part in (full, str(exc)) if part)
        workload_done(workload.discard_staged_restore)
        if not stopped:
            host.set_status(before)
            return _restore_refused(_restore_failure(reason))
        return _start_again(host, before, reason)
    if not stopped or not forgotten:
        workload_done(workload.discard_staged_restore)
        if not stopped:
            host.set_status(before)
            return _restore_refused(_restore_failure("could not stop the database"))
        return _start_again(host, before, "could not remove the previous cluster from the DCS")
    try:
        moved = workload.swap_in_restored(wanted.moved_data)
    except WorkloadError as exc:
        log.error("%s", exc)
        workload_done(workload.discard_staged_restore)
        return _start_again(host, before, "could not move the data directory aside")
    kept = _record_restore(host, wanted, moved)
    apply_config(host)  # the restore's configuration, for Patroni once it takes over
    try:
        workload.start_recovery(moved or kept)
    except WorkloadError as exc:
        log.error("%s", exc)
        message = _restore_failure(f"the database did not start; old data kept at {kept}")
        host.set_status(UnitStatus.blocked(message))
        return _restore_refused(message)
    return None


def _restore_refused(message: str) -> ActionFailed:
    log.error("Restore failed: %s", message)
    return ActionFailed(message)


def _restore_failure(reason: str) -> str:
    return msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason)


def _restore_request(host: Host, params: Mapping[str, str]) -> targets.Request | ActionFailed:
    """ "Has the user asked for a restore target?" ``backup-id``, ``restore-to-time`` or
    both; a time must be well-formed and not in the future. Nothing else is asked yet."""
    # A parameter given empty means nothing, never "the default": `backup-id=X
    # restore-to-time=` must not restore to the end of X (the hosts refuse it first too).
    # (All of them empty is no target at all: the chart's "missing target" refusal.)
    empty = sorted(key for key, value in params.items() if not value.strip())
    if empty and len(empty) < len(params):
        return _restore_refused(f"{empty[0]} is empty: give a value or leave the parameter out")
    backup_id = (params.get("backup-id") or "").strip()
    to_time = (params.get("restore-to-time") or "").strip()
    if not backup_id and not to_time:
        return _restore_refused(msg.MISSING_RESTORE_TARGET)
    request = targets.parse_request(backup_id, to_time, host.now())
    if isinstance(request, str):
        return _restore_refused(request)
    return request


def _is_workload_accessible(host: Host) -> bool:
    return host.workload.is_cluster_initialised() is True


def _is_blocked_for_restore(host: Host) -> bool:
    """Blocked, other than by a foreign repository, a failed restore or WAL archiving
    (docs/behaviour/restore.md#step-3-which-blocked-statuses-allow-a-restore): a restore
    is a way out of each, and checks the archive it needs itself."""
    status = host.get_status()
    if not status.is_blocked:
        return False
    if msg.is_failed_restore(status.message) or msg.is_archive_health_message(status.message):
        return False
    return not msg.has_prefix(status.message, msg.ANOTHER_CLUSTER_REPOSITORY)


def _find_backup(host: Host, request: targets.Request) -> tuple[targets.Chosen, str] | ActionFailed:
    """ "Is the restore target valid?" The repository's finished backups and the
    timelines restores created, and targets.choose_target's pick among them; then "Does
    the archive hold the WAL it needs?" (docs/reliability.md). Returns the choice and the
    WAL segment recovery must reach ("" when PostgreSQL checks the end itself)."""
    if request.backup_id:
        try:
            normalise_id(request.backup_id)
        except ValueError:
            return _restore_refused(f"{msg.INVALID_BACKUP_ID}: {request.backup_id}")
    settings = parse_settings(host.s3_parameters())
    if settings is None:
        return _restore_refused(msg.S3_RELATION_MISSING_RESTORE)
    if isinstance(settings, S3SettingsProblem):
        return _restore_refused(settings.message())
    try:
        stanzas = host.backup_tool.info()
        records = [b for s in stanzas for b in s.backups]
        timelines: list[TimelineRecord] = []
        if request.has_time or not _names_a_backup(records, request.backup_id):
            timelines = restore_timelines(host, stanzas)
    except BackupToolError as exc:
        return _restore_refused(msg.with_reason(msg.FAILED_TO_LIST_BACKUPS, str(exc)))
    chosen = targets.choose_target(
        records,
        timelines,
        request,
        own_stanza=host.stanza_name,
        ancestry=lambda row: _read_history(host, row),
    )
    if isinstance(chosen, str):
        if request.time is not None and chosen.startswith(_TOO_EARLY):
            chosen += _window_text(host, stanzas)
        return _restore_refused(chosen)
    refusal, wal_end = check_before_restore(host, chosen, records)
    if refusal is None and chosen.type == targets.TIME and request.time is not None:
        refusal = _outside_window(host, chosen, request.time, stanzas)
    if refusal is not None:
        return _restore_refused(_restore_failure(refusal))
    return chosen, wal_end


# targets' refusals of a time before anything a backup reaches: the window is shown too.
_TOO_EARLY = (targets.BEFORE_FIRST, targets.BEFORE_BACKUP_END, targets.BEFORE_TIMELINE)


def _window_text(host: Host, stanzas: list[StanzaInfo]) -> str:
    """``; recoverable window: …`` for this cluster's stanza, or "" when it has none or
    it cannot be read (logged)."""
    own = next((s for s in stanzas if s.name == host.stanza_name and s.exists), None)
    if own is None:
        return ""
    try:
        found = recoverable_windows(host, own)
    except BackupToolError as exc:
        log.warning("The recoverable window cannot be read: %s", exc)
        return ""
    return ("; recoverable window: " + "; ".join(w.describe() for w in found)) if found else ""


def _outside_window(
    host: Host, chosen: targets.Chosen, moment: datetime, stanzas: list[StanzaInfo]
) -> str | None:
    """A time outside the recoverable window (core/window.py) is refused here, before
    anything changes, with the window in the message."""
    info = next((s for s in stanzas if s.name == chosen.stanza), None)
    backup = next((b for b in info.backups if b.label == chosen.label), None) if info else None
    if info is None or backup is None:
        return None
    timeline = chosen.timeline or backup.timeline
    unreadable: list[int] = []
    try:
        found = recoverable_windows(host, info, unreadable=unreadable)
    except BackupToolError as exc:
        return f"the recoverable window cannot be read: {exc}"
    if timeline in unreadable:  # its lineage is unknown: PostgreSQL's own checks stay
        log.warning("Timeline %s's window is unknown: restore-to-time not checked", timeline)
        return None
    return outside_windows(found, timeline, moment)


def _read_history(host: Host, row: TimelineRecord) -> tuple[TimelineBranch, ...] | None:
    """A timeline's parents, or None (then targets falls back to timestamps, which can
    pick a backup PostgreSQL refuses: the restore ends Blocked, nothing lost)."""
    try:
        return host.backup_tool.history(row)
    except BackupToolError as exc:
        log.warning("Could not read %s (%s): choosing its base backup by time", row.key, exc)
        return None


def _names_a_backup(records: list[BackupRecord], backup_id: str) -> bool:
    """A finished backup has this id: the timelines need not be listed."""
    wanted = normalise_id(backup_id) if backup_id else None
    return any(b.finished and b.backup_id == wanted for b in records)


def _start_again(host: Host, before: UnitStatus, reason: str) -> ActionFailed:
    """Nothing was changed on disk: start the database as it was, and fail."""
    if workload_done(host.workload.start_database):
        host.set_status(before)
        return _restore_refused(_restore_failure(reason))
    message = _restore_failure(f"{reason}; the database did not start again")
    host.set_status(UnitStatus.blocked(message))
    return _restore_refused(message)


def _record_restore(host: Host, wanted: RestoreState, moved: str) -> str:
    """The restore state; desired_config turns it into Patroni's pgBackRest bootstrap.
    Returns where the data from before the restore is kept.

    When a failed restore already moved the original data aside, that path is kept (it
    holds the cluster's real data): it is never replaced, and never removed before a
    restore succeeded. ``moved`` is then the failed attempt's directory ("" when there was
    none: Patroni moves a failed bootstrap's data to ``<data>.failed`` itself); it is only
    logged.
    """
    kept_before = wanted.moved_data
    if kept_before:
        log.warning(
            "The data from before the first restore is kept at %s; the failed restore's "
            "data is at %s",
            kept_before,
            moved or "(none)",
        )
    # Who restores, once there are other units: leadership may move meanwhile.
    unit = host.unit_name if host.peers() else ""
    state = replace(wanted, moved_data=kept_before or moved, stage=RESTORING, unit=unit)
    state.write(host.app_data)
    host.app_data[S3_BLOCK_MESSAGE] = ""
    return state.moved_data


# ===========================================================================
# The restore's end, seen by update-status on the leader


def detect_restore_end(
    host: Host, state: RestoreState, ownership: OwnershipRead | None = None
) -> Outcome:
    """Still restoring (nothing), failed (Blocked once, everything kept), or done.
    ``ownership``: the repository read during the takeover (None: read at the end)."""
    workload = host.workload
    moved = state.moved_data
    if workload.is_database_service_running() is False:
        return _watch_recovery(host, state)
    member = workload.member_state()
    failed = workload.bootstrap_failed() or (member is not None and "failed" in member)
    if failed:
        if is_failed_restore_status(host.get_status()):
            return Done()  # once: a later look (Patroni gone, state None) says no more
        # An unreachable target shows first as Patroni's "start failed" (PostgreSQL
        # ended recovery before the target), seconds later as a Patroni that exited:
        # whichever is seen first must give the PITR message.
        if state.to_time and member != _RESTORE_COMMAND_FAILED:
            return _pitr_failed(host, state)
        return _restore_failed(host, moved, member or "bootstrap failed")
    timeline = primary_timeline(workload)
    if timeline is None:
        return Done()  # still restoring: look again at the next update-status
    if state.wal_end:
        # A restore to the end of the archive must have replayed all of it: PostgreSQL
        # promotes at the first segment it cannot read and says nothing.
        if is_failed_restore_status(host.get_status()):
            return Done()  # reported once; the data stays as it is for rollback-restore
        short = stopped_short(host, timeline, state.wal_end)
        if short is not None:
            return _restore_short(host, state, short)
    if host.peers():
        return primary_restored(host, state, timeline)
    # The new timeline's first segment to the archive now, not at archive_timeout: a unit
    # added from the repository soon after needs it (_timeline_archived says why).
    workload_done(workload.switch_wal)
    finish_restore(host, state, timeline, ownership)
    return Done()


def _watch_recovery(host: Host, state: RestoreState) -> Outcome:
    """Patroni does not run: the restored PostgreSQL recovers on its own. Once it has
    promoted at the target Patroni takes it over as the primary (the end is then seen
    as before, from Patroni); if it ended before, or nothing runs, the restore failed."""
    workload = host.workload
    recovery = workload.recovery()
    if recovery is not None and recovery.state == Recovery.RECOVERING:
        return Done()
    if recovery is not None and recovery.state == Recovery.PROMOTED:
        log.info("The restored database ended recovery at its target: Patroni takes it over")
        return _take_over(host, state)
    if is_failed_restore_status(host.get_status()):
        return Done()  # reported once
    reason = recovery.reason if recovery is not None else "the restored database is not running"
    if state.to_time:
        log.error("The restored database stopped before its target: %s", reason)
        return _pitr_failed(host, state)
    return _restore_failed(host, state.moved_data, None, reason)


def _take_over(host: Host, state: RestoreState) -> Outcome:
    failed = take_over(host.workload)
    if failed is not None:
        return _restore_failed(host, state.moved_data, None, failed)
    # While Patroni starts (most of a second: its interpreter and imports), the
    # repository's ownership is read against the restored data, which is what the
    # completion re-checks; what the completion writes still waits for the leader key.
    # (Several units: the completion comes later, once the others re-created, and reads
    # it then.)
    ownership = None if host.peers() else read_ownership(host)
    # Patroni holds the leader key about a second after its start: the restore's end is
    # seen in this hook, not at the next update-status (minutes apart under Juju).
    if host.workload.wait_until_leader(TAKEOVER_WAIT_SECONDS):
        return detect_restore_end(host, state, ownership)
    return Done()


def take_over(workload: Workload) -> str | None:
    """This cluster's passwords on the restored database's users (Patroni's bootstrap set
    them; a backup of another cluster, or from before a password changed, has others:
    replicas could not connect), then Patroni, which takes the primary over. None when
    done, else what failed."""
    if not workload_done(workload.set_passwords):
        return "the users' passwords were not set"
    if not workload_done(workload.start_database):
        return "Patroni did not start"
    return None


def primary_restored(host: Host, state: RestoreState, timeline: int) -> Done:
    """The restored primary runs: the other units may re-create themselves from it. From
    the repository, only once the new timeline's ``.history`` and its first WAL segment
    are archived (_timeline_archived): a standby started before follows the old timeline
    past the branch point, and never streams."""
    source = replica_source(host, state)
    own = not state.restores_elsewhere(host.unit_name)
    if source.stanza is not None and not _timeline_archived(host, source.stanza, timeline, own):
        host.set_status(
            UnitStatus.maintenance(
                msg.with_reason(
                    msg.RESTORING_BACKUP,
                    f"waiting for timeline {timeline}'s history and first WAL segment "
                    "to reach the repository",
                )
            )
        )
        return Done()
    RestoreState.set_stage(host.app_data, RECREATING, timeline)
    log.info(
        "The restored primary runs on timeline %d; the other units re-create themselves from %s",
        timeline,
        "the repository" if source.stanza else "the primary",
    )
    waiting = [p.name for p in host.peers()]
    host.set_status(
        UnitStatus.maintenance(
            msg.waiting_for_units("re-create from the restored primary", waiting)
        )
    )
    return Done()


def _timeline_archived(host: Host, stanza: str, timeline: int, own: bool) -> bool:
    """The new timeline's ``.history`` and a segment of it are in the repository.

    A standby restored from the backup replays the old timeline up to the branch point,
    then asks the archive for the new timeline's copy of the segment the branch is in.
    While that segment is the primary's current one it is not archived, and PostgreSQL
    falls back to the old timeline's copy (which the old primary archived when it shut
    down) and replays past the branch point: "requested starting point ... is ahead of
    the WAL flush position" for ever. So the segment is closed (pg_switch_wal, here when
    this unit is the primary, ``own``; by the restoring unit otherwise) and waited for.
    (Patroni's pgBackRest bootstrap restarted PostgreSQL after recovery, and that shutdown
    closed it.)"""
    try:
        listing = host.backup_tool.archive(stanza)
    except BackupToolError as exc:
        log.warning("The archived timelines cannot be listed: %s", exc)
        return False
    history = any(t.timeline == timeline for t in listing.timelines)
    segment = any(s.timeline == timeline for s in listing.segments)
    if own and not segment:
        workload_done(host.workload.switch_wal)
    return history and segment


# Patroni's member state when its bootstrap command (pgbackrest restore) exited non-zero:
# the restore itself failed, whatever its target.
_RESTORE_COMMAND_FAILED = "custom bootstrap failed"


def primary_timeline(workload: Workload) -> int | None:
    """The timeline once Patroni runs this member as the primary (it holds the leader
    key), else None. After a pgBackRest bootstrap Patroni restarts PostgreSQL out of
    recovery before it takes the key, and the timeline is readable (too early) in
    between."""
    ready = workload.is_member_running() is True and workload.is_primary() is True
    return workload.current_timeline() if ready else None


def is_failed_restore_status(status: UnitStatus) -> bool:
    """The unit shows a failed restore: what update-status reports once and what
    rollback-restore requires."""
    return status.is_blocked and msg.is_failed_restore(status.message)


def _restore_failed(host: Host, moved: str, state: str | None, why: str = "") -> Done:
    """Blocked, the restore keys kept (a new restore is allowed), the old data kept. A
    restore that filled the disk says so first: that is what the user must fix; ``why``
    (the restored database's own reason) next."""
    kept = f"old data kept at {moved}" if moved else ""
    full = disk_full_reason(host.workload.data_disk())
    reason = "; ".join(part for part in (full, why, kept) if part)
    message = msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason)
    log.error("Restore failed: Patroni member state %s; %s", state, reason or "no old data")
    host.set_status(UnitStatus.blocked(message))
    return Done()


def _restore_short(host: Host, state: RestoreState, reason: str) -> Done:
    """The restore ended before the end of the archive: never "restore complete". Blocked
    like a failed restore, so the data from before it stays and rollback-restore can put
    it back; the restored database keeps running for a person to look at."""
    kept = f"; old data kept at {state.moved_data}" if state.moved_data else ""
    message = msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason + kept)
    log.error("Restore fell short of its target: %s", message)
    host.set_status(UnitStatus.blocked(message))
    return Done()


def _pitr_failed(host: Host, state: RestoreState) -> Done:
    """Patroni's bootstrap gave up on a point-in-time target (PostgreSQL: "recovery ended
    before configured recovery target was reached", or a timeline that is not a child of
    the backup's): Blocked ``cannot restore PITR, <where the logs are> for details``.
    The restore keys stay (a new restore with other parameters is allowed) and the data
    from before the restore stays where it was moved."""
    log.error(
        "Restore failed: the database did not reach the point-in-time target "
        "(backup %s, type %s, target %s, timeline %s). You can launch another restore "
        "with different parameters. The data from before the restore is kept at %s",
        state.label or "-",
        state.type or "-",
        state.to_time or "-",
        state.timeline if state.timeline is not None else "-",
        state.moved_data or "(nothing was moved)",
    )
    host.set_status(UnitStatus.blocked(msg.cannot_restore_pitr(host.log_hint())))
    return Done()


def finish_restore(
    host: Host, state: RestoreState, timeline: int, ownership: OwnershipRead | None = None
) -> None:
    """Clear the flags, normal bootstrap again, re-check ownership
    (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository), remove the
    moved-aside data, Active (or the S3 block the ownership check set: after a restore
    from another cluster's repository, the block says the data is restored and what to do
    next). When leadership moved during the restore, the moved-aside data is on the unit
    that restored: it stays there, a leftover a person removes (``leftovers``).

    ``ownership`` is the repository as read while Patroni took over (the same reading,
    earlier: the restored data's system identifier does not change meanwhile); None
    reads it here."""
    RestoreState.clear(host.app_data, keep_moved_data=True)
    _pin_replica_set(host, state)
    _remove_old_data(host, state)  # the restore is proven: Patroni runs it as the primary
    apply_config(host)
    log.info(
        "Restored backup %s%s; now on the new timeline %d",
        state.label or "(none)",
        f" to {state.to_time}" if state.to_time else "",
        timeline,
    )
    problem = _recheck_repository_after_restore(host, ownership or read_ownership(host))
    if problem == msg.ANOTHER_CLUSTER_REPOSITORY:
        restored = msg.restored_from_another_cluster()
        host.app_data[S3_BLOCK_MESSAGE] = restored
        host.set_status(UnitStatus.blocked(restored))
    if problem is None:
        host.set_status(UnitStatus.active())


def _remove_old_data(host: Host, state: RestoreState) -> None:
    """The data from before the restore is deleted by a process of its own, which the
    restore does not wait for: deleting is the disk's work (about 0.3 s per 500 MB here,
    minutes for a large database), and nothing of the restore depends on it. A removal
    that fails leaves the directory as it is, a leftover ``status`` and ``leftovers``
    show. The state forgets it either way."""
    if not state.moved_data:
        return
    if state.restores_elsewhere(host.unit_name):
        log.warning(
            "The data from before the restore stays on %s at %s (the restore ran there)",
            state.unit,
            state.moved_data,
        )
    else:
        try:
            host.workload.remove_moved_data_later(state.moved_data)
        except WorkloadError as exc:  # the restore stands; the old data is only left over
            log.warning("The data from before the restore was not removed: %s", exc)
    RestoreState.forget_moved_data(host.app_data)


def _pin_replica_set(host: Host, state: RestoreState) -> None:
    """A unit added from now on creates itself from the set this restore used, until a
    backup taken since exists (restore_state.ReplicaSet): the repository's newest set may
    lie on the old timeline past the branch point, which a standby can never leave. A
    backup of another cluster (or no set: none to pin) leaves pgBackRest's choice."""
    ReplicaSet.clear(host.app_data)
    own = (state.stanza or host.stanza_name) == host.stanza_name
    if state.label and own:
        since = host.now().astimezone(UTC).strftime("%Y%m%d-%H%M%S")
        ReplicaSet(state.label, since).write(host.app_data)
        log.info("New replicas restore backup set %s until a backup is taken", state.label)


@dataclass(frozen=True)
class OwnershipRead:
    """The repository, read for the completion's ownership re-check: the settings and
    store it was read through (None: no usable S3 settings, nothing to re-check) and the
    Blocked message when it is not usable (None: ours, or empty)."""

    settings: S3Settings | None
    store: ObjectStore | None
    problem: str | None


def read_ownership(host: Host) -> OwnershipRead:
    """Read the repository for the re-check; nothing is written."""
    settings = parse_settings(host.s3_parameters())
    if not isinstance(settings, S3Settings):
        return OwnershipRead(None, None, None)
    store = host.object_store(settings)
    return OwnershipRead(settings, store, repository_problem(host, settings, store))


def _recheck_repository_after_restore(host: Host, read: OwnershipRead) -> str | None:
    """The S3 block's message when the repository turned out not to be usable (the block
    is set), else None (the marker claims it again)."""
    if read.settings is None or read.store is None:
        log.info("No usable S3 settings after the restore: repository not re-checked")
        return None
    if read.problem is not None:
        block_s3(host, read.problem)
        return read.problem
    if host.app_data.get(STANZA):
        write_marker(host, read.settings, read.store)
    host.app_data[S3_BLOCK_MESSAGE] = ""
    return None
