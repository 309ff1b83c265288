"""The hook and action handlers: one per chart of SPEC.md.

Each handler reads top to bottom like its chart: the guard clauses come in the chart's
order and each box is one small named step. A handler takes a :class:`~pgbackups.core.host.Host`
and returns an :data:`~pgbackups.core.host.Outcome`; everything it does to the world goes
through the host, its workload, its backup tool and its object store.

Peer-bag keys are listed in docs/ARCHITECTURE.md. :func:`desired_config` is the one
place where the bags become the configuration of a unit.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pgbackups.core import messages as msg
from pgbackups.core import targets
from pgbackups.core.host import (
    ActionFailed,
    ActionResults,
    BackupToolError,
    CommandResult,
    Deferred,
    Done,
    Host,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreForbidden,
    Outcome,
    RestoreTarget,
    UnitStatus,
    Workload,
    WorkloadConfig,
    WorkloadError,
)
from pgbackups.core.ids import format_id, is_label, label_to_id, normalise_id
from pgbackups.core.listing import FORMATS, build_rows, format_json, format_table
from pgbackups.core.marker import ClusterMarker, marker_key, object_key, ownership_problem
from pgbackups.core.repository import BackupRecord, StanzaInfo, TimelineBranch, TimelineRecord
from pgbackups.core.settings import S3Settings, S3SettingsProblem, parse_s3_settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# Peer-bag keys (docs/ARCHITECTURE.md)

CLUSTER_INITIALISED = "cluster_initialised"
STANZA = "stanza"
S3_BLOCK_MESSAGE = "s3-block-message"
RESTORING_BACKUP = "restoring-backup"
RESTORE_STANZA = "restore-stanza"
RESTORE_TO_TIME = "restore-to-time"
RESTORE_TIMELINE = "restore-timeline"
RESTORE_TYPE = "restore-type"
RESTORE_MOVED_DATA = "restore-moved-data"
RESTORE_KEYS = (RESTORING_BACKUP, RESTORE_STANZA, RESTORE_TO_TIME, RESTORE_TIMELINE, RESTORE_TYPE)
CONNECTIVITY = "connectivity"
CREATING_BACKUP = "creating-backup"

# ---------------------------------------------------------------------------
# Retries of `pgbackrest check` ("a few retries", SPEC §2). Module constants so that a
# host (or a test) can override them; SLEEP is the function that waits.

CHECK_ATTEMPTS = 3
CHECK_RETRY_DELAY_SECONDS = 3.0
SLEEP: Callable[[float], None] = time.sleep

BACKUP_TYPES = {"full": "full", "differential": "diff", "incremental": "incr"}
_NEW_LABEL_RE = re.compile(r"new backup label = (\S+)")


# ===========================================================================
# desired_config: the one place where peer bags become the unit's configuration


def desired_config(host: Host) -> WorkloadConfig:
    """The configuration this unit must run with, derived from the peer bags.

    - ``s3``: the parsed S3 settings; None when absent, incomplete or invalid.
    - ``stanza``: WAL archiving is on exactly while app ``stanza`` is set (SPEC §1).
      It is not tied to ``s3`` here: a leader clears ``stanza`` whenever the repository
      cannot be used, and pgBackRest's archive-push itself refuses a missing stanza or one
      of another system identifier (the WAL then waits on disk, nothing is lost).
    - ``tls_server``: TLS material present and more than one unit (SPEC §6).
    - ``connectivity``/``creating_backup``: this unit's bag, set while a replica backs up.
    - ``restore``: a restore in progress (app bag), as Patroni's pgBackRest bootstrap.
    """
    app, unit = host.app_data, host.unit_data
    settings = _parse(host.s3_parameters())
    return WorkloadConfig(
        s3=settings if isinstance(settings, S3Settings) else None,
        stanza=app.get(STANZA) or None,
        tls_server=_tls_server_wanted(host),
        connectivity=unit.get(CONNECTIVITY) != "off",
        creating_backup=bool(unit.get(CREATING_BACKUP)),
        restore=_restore_target(app, host.stanza_name),
    )


def _restore_target(app: Mapping[str, str], own_stanza: str) -> RestoreTarget | None:
    """The app bag's restore keys as Patroni's pgBackRest bootstrap (docs/restore.md).

    pgBackRest 2.45 accepts ``--target`` only with ``--type=time``, ``--target-timeline``
    not with ``--type=immediate`` (it writes ``recovery_target_timeline = 'current'``
    itself), and ``--target-action`` not with ``--type=default``.
    """
    if not _restore_in_progress(app):
        return None
    restore_type = app.get(RESTORE_TYPE) or targets.IMMEDIATE
    timeline = app.get(RESTORE_TIMELINE)
    to_time = app.get(RESTORE_TO_TIME)
    return RestoreTarget(
        stanza=app.get(RESTORE_STANZA) or own_stanza,
        label=app.get(RESTORING_BACKUP) or None,
        type=restore_type,
        target=to_time if restore_type == targets.TIME and to_time else None,
        target_timeline=(int(timeline) if timeline and restore_type != targets.IMMEDIATE else None),
        target_action=None if restore_type == targets.DEFAULT else "promote",
    )


def _restore_in_progress(app: Mapping[str, str]) -> bool:
    return bool(app.get(RESTORING_BACKUP) or app.get(RESTORE_TO_TIME))


def _apply_config(host: Host) -> None:
    host.workload.apply_config(desired_config(host))


# ===========================================================================
# s3-credentials-changed (SPEC §2) and leader-elected


def on_s3_credentials_changed(host: Host) -> Outcome:
    """SPEC §2, box by box. Also run by leader-elected and by update-status (S3 retry)."""
    if not _has_cluster_initialised(host):
        return Deferred("cluster not initialised yet")
    if _restore_in_progress(host.app_data):
        # Part of "Has cluster initialised?": a cluster being restored is not (yet) the
        # cluster the repository must be checked against; its completion re-checks §7.1.
        return Deferred("a restore is in progress")
    settings = _required_settings(host)
    if settings is None:
        return Done()
    _update_backup_settings(host)
    if not host.is_leader():
        return Done()
    if _is_blocked_other_than_s3(host):
        log.info("S3 initialisation skipped: unit is blocked (%s)", host.get_status().message)
        return Done()
    store = host.object_store(settings)
    if not _could_initialise_stanza(host, settings, store):
        return Done()
    working = _is_wal_archiving_to_s3_working(host, settings, store)
    if working is None:
        return Deferred("waiting for the primary to archive with pgBackRest")
    if not working:
        return Done()
    _tls_server_steps(host)  # the chart returns after every TLS branch
    return Done()


def on_leader_elected(host: Host) -> Outcome:
    """A new leader re-runs S3 initialisation: only the old leader saw credentials-gone."""
    return on_s3_credentials_changed(host)


def _has_cluster_initialised(host: Host) -> bool:
    return bool(host.app_data.get(CLUSTER_INITIALISED))


def _required_settings(host: Host) -> S3Settings | None:
    """ "Are all required S3 settings provided?" The settings, or None (logged).

    Missing settings: no status change (SPEC §2). Invalid settings (a bad CA chain, an
    unknown URI style...): the leader blocks with a message that names the problem; it is
    an S3 block, so a corrected setting clears it.
    """
    raw = host.s3_parameters()
    settings = _parse(raw)
    if isinstance(settings, S3Settings):
        return settings
    if settings is None:
        log.info("No S3 settings: backups are not configured")
    elif settings.missing:
        log.warning("S3 settings incomplete: %s", settings.message())
    else:
        log.error("S3 settings rejected: %s", settings.message())
        if host.is_leader() and not _is_blocked_other_than_s3(host):
            _block_s3(host, msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, settings.message()))
    return None


def _parse(raw: Mapping[str, str] | None) -> S3Settings | S3SettingsProblem | None:
    return None if raw is None else parse_s3_settings(raw)


def _update_backup_settings(host: Host) -> None:
    """Render pgbackrest.conf (and Patroni's configuration) on this unit."""
    _apply_config(host)


def _is_blocked_other_than_s3(host: Host) -> bool:
    status = host.get_status()
    return status.is_blocked and not msg.is_s3_block_message(status.message)


def _could_initialise_stanza(host: Host, settings: S3Settings, store: ObjectStore) -> bool:
    """Bucket, then repository ownership (§7.1), then ``stanza-create``; each failure
    sets its own Blocked message."""
    host.set_status(UnitStatus.maintenance(msg.INITIALISING_STANZA))
    if not _ensure_bucket(host, store):
        return False
    problem = _repository_problem(host, settings, store)
    if problem is not None:
        _block_s3(host, problem)
        return False
    return _create_stanza(host)


def _ensure_bucket(host: Host, store: ObjectStore) -> bool:
    """True to go on. A 403 on the bucket check (wrong keys, or keys without access) says
    neither that the bucket exists nor that it does not: the next step, pgBackRest reading
    the repository with the same keys, fails with its own error line (issue 4: a wrong
    secret key blocks with ``failed to initialize stanza``). Nothing is written before
    that read succeeds."""
    try:
        if store.ensure_bucket():
            log.info("Created the S3 bucket")
    except ObjectStoreForbidden as exc:
        log.warning("S3 refused the bucket check (%s): pgBackRest will tell why", exc)
    except ObjectStoreError as exc:
        log.error("S3 bucket cannot be accessed or created: %s", exc)
        _block_s3(host, msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, str(exc)))
        return False
    return True


def _repository_problem(host: Host, settings: S3Settings, store: ObjectStore) -> str | None:
    """The Blocked message when the repository is not empty and not ours (SPEC §7.1)."""
    try:
        stanzas = host.backup_tool.info()
    except BackupToolError as exc:
        log.error("pgBackRest cannot list the repository: %s", exc)
        return msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, str(exc))
    try:
        body = store.get(marker_key(settings.path))
    except ObjectStoreError as exc:
        log.error("The cluster marker cannot be read: %s", exc)
        return msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, str(exc))
    system_id = _system_identifier(host)
    problem = ownership_problem(
        stanzas=stanzas,
        marker_body=body,
        stanza_name=host.stanza_name,
        cluster_id=host.cluster_id,
        system_identifier=system_id,
    )
    if problem is None:
        return None
    log.error("The S3 repository cannot be used: %s", problem.reason)
    if problem.foreign:
        return msg.ANOTHER_CLUSTER_REPOSITORY
    return msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, problem.reason)


def _create_stanza(host: Host) -> bool:
    result = host.backup_tool.stanza_create()
    if result.ok:
        return True
    reason = host.backup_tool.error_line(result)
    log.error("pgBackRest stanza-create failed: %s", reason)
    _block_s3(host, msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, reason))
    return False


def _is_wal_archiving_to_s3_working(
    host: Host, settings: S3Settings, store: ObjectStore
) -> bool | None:
    """Archiving on (``stanza``), reload, ``pgbackrest check`` with retries; on failure
    archiving off again and Blocked. On success the marker is written and the leader is
    Active.

    None means "not known yet": a leader that is not the primary turned archiving on in
    the app bag, but the primary renders its ``archive_command`` only when it sees that
    bag, which is after this hook ends (Juju commits peer data at the end of a hook). The
    hook then defers, keeping ``stanza``, and its re-run decides.
    """
    host.set_status(UnitStatus.maintenance(msg.CHECKING_STANZA))
    host.app_data[STANZA] = host.stanza_name
    _apply_config(host)
    result = _check_with_retries(host)
    if not result.ok:
        reason = host.backup_tool.error_line(result)
        if _primary_not_archiving_yet(host, reason):
            log.info("The primary does not archive with pgBackRest yet; checking again later")
            return None
        log.error("pgBackRest check failed: %s", reason)
        _block_s3(host, msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, reason))
        return False
    _write_marker(host, settings, store)
    host.app_data[S3_BLOCK_MESSAGE] = ""
    host.set_status(UnitStatus.active())
    log.info("WAL archiving into stanza %s works", host.stanza_name)
    return True


# pgBackRest's error 068: "archive_command '...' must contain pgbackrest".
_ARCHIVE_COMMAND_NOT_PGBACKREST = "[068]"


def _primary_not_archiving_yet(host: Host, reason: str) -> bool:
    if _ARCHIVE_COMMAND_NOT_PGBACKREST not in reason:
        return False
    return host.workload.is_primary() is False


def _check_with_retries(host: Host) -> CommandResult:
    result = host.backup_tool.check()
    for _ in range(CHECK_ATTEMPTS - 1):
        if result.ok or _primary_not_archiving_yet(host, host.backup_tool.error_line(result)):
            break  # success, or nothing this hook can change by waiting
        SLEEP(CHECK_RETRY_DELAY_SECONDS)
        result = host.backup_tool.check()
    return result


def _write_marker(host: Host, settings: S3Settings, store: ObjectStore) -> None:
    """Claim the repository. A failure is logged, not blocked: a repository holding our
    stanza with our system identifier is ours even without the marker (§7.1), and the
    marker is written again after the next successful check."""
    system_id = _system_identifier(host)
    if system_id is None:
        log.warning("Cluster marker not written: the system identifier cannot be read")
        return
    marker = ClusterMarker(host.stanza_name, host.cluster_id, system_id)
    try:
        store.put(marker_key(settings.path), marker.encode())
    except ObjectStoreError as exc:
        log.warning("Cluster marker not written: %s", exc)


def _system_identifier(host: Host) -> int | None:
    """The cluster's system identifier, or None while PostgreSQL cannot tell it."""
    return host.workload.system_identifier()


def _block_s3(host: Host, message: str) -> None:
    """An S3 block on the leader: archiving off, the message kept in the app bag (so that
    update-status can retry and a new leader shows it), Blocked."""
    if host.app_data.get(STANZA):
        host.app_data[STANZA] = ""
        _apply_config(host)
    host.app_data[S3_BLOCK_MESSAGE] = message
    host.set_status(UnitStatus.blocked(message))


# ===========================================================================
# The pgBackRest TLS server (SPEC §6)


def reconcile_tls_server(host: Host) -> Outcome:
    """certificates-changed / peer-changed: re-render (TLS files and peers may have
    changed), then the TLS-server steps. A replica whose primary does not answer yet
    defers."""
    _apply_config(host)
    if _tls_server_steps(host):
        return Done()
    return Deferred("waiting for the pgBackRest TLS server of the primary")


def _tls_server_steps(host: Host) -> bool:
    """False when the TLS server could not be started (yet)."""
    if not _tls_server_wanted(host):
        host.workload.stop_tls_server()
        return True
    replica = _is_replica(host)
    if replica is None:
        log.info("Patroni cannot tell this unit's role yet")
        return False
    if replica and not _primary_tls_server_answers(host):
        log.info("Waiting for the pgBackRest TLS server of the primary")
        return False
    try:
        host.workload.start_tls_server()
    except WorkloadError as exc:
        log.error("The pgBackRest TLS server did not start: %s", exc)
        return False
    return True


def _tls_server_wanted(host: Host) -> bool:
    """The pgBackRest TLS server runs only with TLS and more than one unit (SPEC §6): the
    configuration, the server itself and create-backup's refusal on a primary agree."""
    return host.tls() is not None and host.planned_units() > 1


def _is_replica(host: Host) -> bool | None:
    primary = host.workload.is_primary()
    return None if primary is None else not primary


def _primary_tls_server_answers(host: Host) -> bool:
    address = host.workload.primary_address()
    return address is not None and host.backup_tool.server_ping(address)


# ===========================================================================
# s3-credentials-gone


def on_s3_credentials_gone(host: Host) -> Outcome:
    """Archiving off (the leader clears ``stanza``), re-render without a repository, and
    clear an S3 block: there is nothing left to fix on the S3 side."""
    if host.is_leader():
        host.app_data[STANZA] = ""
        host.app_data[S3_BLOCK_MESSAGE] = ""
    _apply_config(host)
    status = host.get_status()
    if status.is_blocked and msg.is_s3_block_message(status.message):
        host.set_status(UnitStatus.active())
    return Done()


# ===========================================================================
# update-status


def on_update_status(host: Host) -> Outcome:
    """(a) a backup left this unit hidden: bring it back; (b) a restore in progress:
    detect its end; (c) the leader blocked by S3: retry S3 initialisation (SPEC §9: the
    reference never self-heals); otherwise nothing (a moved data directory still recorded
    after a finished restore is left alone)."""
    _bring_back_after_interrupted_backup(host)
    if _restore_in_progress(host.app_data):
        if not host.is_leader():
            return Done()
        return _detect_restore_end(host)
    if host.is_leader() and _has_s3_block(host):
        log.info("Retrying S3 initialisation")
        return on_s3_credentials_changed(host)
    return Done()


def _bring_back_after_interrupted_backup(host: Host) -> None:
    """The "Always" step of create-backup, for a backup whose process was killed before it
    could run it (SIGKILL, a lost machine). Hooks and actions on one unit never overlap,
    so flags still set when update-status runs belong to a backup that is gone (SPEC §9:
    no replica is left rejecting clients)."""
    unit = host.unit_data
    if not unit.get(CREATING_BACKUP) and unit.get(CONNECTIVITY) != "off":
        return
    log.warning("A backup on this unit ended without cleaning up: accepting clients again")
    status = host.get_status()
    after = UnitStatus.active() if status == UnitStatus.maintenance(msg.CREATING_BACKUP) else status
    _restore_unit_after_backup(host, after)


def _has_s3_block(host: Host) -> bool:
    status = host.get_status()
    if status.is_blocked:
        return msg.is_s3_block_message(status.message)
    return bool(host.app_data.get(S3_BLOCK_MESSAGE))


def primary_timeline(workload: Workload) -> int | None:
    """The timeline once Patroni runs this member as the primary (it holds the leader
    key), else None. After a pgBackRest bootstrap Patroni restarts PostgreSQL out of
    recovery before it takes the key, and the timeline is readable (too early) in
    between."""
    ready = workload.is_member_running() is True and workload.is_primary() is True
    return workload.current_timeline() if ready else None


def _detect_restore_end(host: Host) -> Outcome:
    workload = host.workload
    moved = host.app_data.get(RESTORE_MOVED_DATA, "")
    state = workload.member_state()
    failed = workload.bootstrap_failed() or (state is not None and "failed" in state)
    if failed:
        if _is_failed_restore_status(host.get_status()):
            return Done()  # once: a later look (Patroni gone, state None) says no more
        # An unreachable target shows first as Patroni's "start failed" (PostgreSQL
        # ended recovery before the target), seconds later as a Patroni that exited:
        # whichever is seen first must give the PITR message.
        if host.app_data.get(RESTORE_TO_TIME) and state != _RESTORE_COMMAND_FAILED:
            return _pitr_failed(host, moved)
        return _restore_failed(host, moved, state or "bootstrap failed")
    timeline = primary_timeline(workload)
    if timeline is None:
        return Done()  # still restoring: look again at the next update-status
    _restore_succeeded(host, moved, timeline)
    return Done()


# Patroni's member state when its bootstrap command (pgbackrest restore) exited non-zero:
# the restore itself failed, whatever its target.
_RESTORE_COMMAND_FAILED = "custom bootstrap failed"


def _is_failed_restore_status(status: UnitStatus) -> bool:
    """The unit shows a failed restore: what update-status reports once and what
    rollback-restore requires."""
    return status.is_blocked and msg.is_failed_restore(status.message)


def _restore_failed(host: Host, moved: str, state: str | None) -> Done:
    """Blocked, the restore keys kept (a new restore is allowed), the old data kept."""
    reason = f"old data kept at {moved}" if moved else ""
    message = msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason)
    log.error("Restore failed: Patroni member state %s; %s", state, reason or "no old data")
    host.set_status(UnitStatus.blocked(message))
    return Done()


def _pitr_failed(host: Host, moved: str) -> Done:
    """Patroni's bootstrap gave up on a point-in-time target (PostgreSQL: "recovery ended
    before configured recovery target was reached", or a timeline that is not a child of
    the backup's): Blocked ``cannot restore PITR, <where the logs are> for details``.
    The restore keys stay (a new restore with other parameters is allowed) and the data
    from before the restore stays where it was moved."""
    app = host.app_data
    log.error(
        "Restore failed: the database did not reach the point-in-time target "
        "(backup %s, type %s, target %s, timeline %s). You can launch another restore "
        "with different parameters. The data from before the restore is kept at %s",
        app.get(RESTORING_BACKUP) or "-",
        app.get(RESTORE_TYPE) or "-",
        app.get(RESTORE_TO_TIME) or "-",
        app.get(RESTORE_TIMELINE) or "-",
        moved or "(nothing was moved)",
    )
    host.set_status(UnitStatus.blocked(msg.cannot_restore_pitr(host.log_hint())))
    return Done()


def _restore_succeeded(host: Host, moved: str, timeline: int) -> None:
    """Clear the flags, normal bootstrap again, re-check ownership (§7.1), remove the
    moved-aside data, Active (or the S3 block the ownership check set)."""
    label = host.app_data.get(RESTORING_BACKUP, "")
    to_time = host.app_data.get(RESTORE_TO_TIME, "")
    for key in RESTORE_KEYS:
        host.app_data[key] = ""
    _apply_config(host)
    log.info(
        "Restored backup %s%s; now on the new timeline %d",
        label or "(none)",
        f" to {to_time}" if to_time else "",
        timeline,
    )
    blocked = _recheck_repository_after_restore(host)
    if moved:
        try:
            host.workload.remove_moved_data(moved)
        except WorkloadError as exc:  # the restore stands; the old data is only left over
            log.warning("The data from before the restore was not removed: %s", exc)
        host.app_data[RESTORE_MOVED_DATA] = ""
    if not blocked:
        host.set_status(UnitStatus.active())


def _recheck_repository_after_restore(host: Host) -> bool:
    """True when the repository turned out not to be usable (the S3 block is set)."""
    settings = _parse(host.s3_parameters())
    if not isinstance(settings, S3Settings):
        log.info("No usable S3 settings after the restore: repository not re-checked")
        return False
    store = host.object_store(settings)
    problem = _repository_problem(host, settings, store)
    if problem is not None:
        _block_s3(host, problem)
        return True
    if host.app_data.get(STANZA):
        _write_marker(host, settings, store)
    host.app_data[S3_BLOCK_MESSAGE] = ""
    return False


# ===========================================================================
# create-backup (SPEC §3)


def on_create_backup(host: Host, params: Mapping[str, str]) -> Outcome:
    """SPEC §3, in chart order.

    The one-backup-at-a-time check comes after every check of the chart and before the
    metadata upload: the chart's reasons are the more fundamental ones, and a refused
    second request must not overwrite the ``latest`` metadata of the running backup.
    Peer bags propagate with a delay, so two units may both pass it; pgBackRest's own
    stanza lock is the backstop (its error comes back as "Failed to backup PostgreSQL").
    """
    requested = (params.get("type") or "full").strip()
    if requested not in BACKUP_TYPES:
        return ActionFailed(
            f"{msg.INVALID_BACKUP_TYPE}: {requested}. Possible values: {', '.join(BACKUP_TYPES)}."
        )
    if host.get_status().is_blocked:
        return _backup_refused(msg.BACKUP_UNIT_BLOCKED)
    on_primary = host.workload.is_primary()
    if on_primary is None:
        return _backup_refused(msg.BACKUP_NOT_RUNNING)
    if on_primary and _tls_server_wanted(host):
        return _backup_refused(msg.BACKUP_ON_PRIMARY)
    if not on_primary and host.tls() is None:
        return _backup_refused(msg.BACKUP_TLS_DISABLED)
    if not host.workload.is_member_running():
        return _backup_refused(msg.BACKUP_NOT_RUNNING)
    stanza = host.app_data.get(STANZA)
    if not stanza:
        return _backup_refused(msg.STANZA_NOT_INITIALISED)
    settings = _parse(host.s3_parameters())
    if settings is None:
        return _backup_refused(msg.S3_RELATION_MISSING)
    if isinstance(settings, S3SettingsProblem):
        return _backup_refused(settings.message())
    running = _backup_running_elsewhere(host)
    if running is not None:
        return _backup_refused(msg.with_reason(msg.BACKUP_ALREADY_RUNNING, running))
    place = _BackupPlace(settings, host.object_store(settings), stanza)
    if not _upload_metadata(host, place, requested):
        return _backup_refused(msg.FAILED_TO_UPLOAD_METADATA)
    log.info("A %s backup has been requested on unit %s", requested, host.unit_name)
    before = host.get_status()
    try:
        if not on_primary:
            _hide_unit(host)
        host.set_status(UnitStatus.maintenance(msg.CREATING_BACKUP))
        return _run_backup(host, place, requested, on_primary=on_primary)
    finally:
        _restore_unit_after_backup(host, before)


@dataclass(frozen=True)
class _BackupPlace:
    """Where a backup's metadata and logs go: ``<path>/backup/<stanza>/...``."""

    settings: S3Settings
    store: ObjectStore
    stanza: str

    def key(self, relative: str) -> str:
        return object_key(self.settings.path, f"backup/{self.stanza}/{relative}")


def _backup_refused(message: str) -> ActionFailed:
    log.error("Backup failed: %s", message)
    return ActionFailed(message)


def _backup_running_elsewhere(host: Host) -> str | None:
    """Which unit (own or peer) is creating a backup, with when it started."""
    bags = {host.unit_name: host.unit_data, **host.peer_data()}
    for name, bag in sorted(bags.items()):
        started = bag.get(CREATING_BACKUP)
        if started:
            return f"{name} started one at {started}"
    return None


def _upload_metadata(host: Host, place: _BackupPlace, requested: str) -> bool:
    lines = [
        f"Date Backup Requested: {format_id(host.now())}",
        f"Unit Name: {host.unit_name}",
        f"Stanza: {place.stanza}",
        f"Backup Type: {requested}",
        *(f"{k}: {v}" for k, v in host.describe().items()),
    ]
    try:
        place.store.put(place.key("latest"), ("\n".join(lines) + "\n").encode())
    except ObjectStoreError as exc:
        log.error("Backup failed: metadata upload: %s", exc)
        return False
    return True


def _hide_unit(host: Host) -> None:
    """A replica: reject clients (connectivity off) and keep it from being promoted or
    load-balanced (Patroni tags); ``creating-backup`` also tells other units that a
    backup runs (one per cluster)."""
    host.unit_data[CONNECTIVITY] = "off"
    host.unit_data[CREATING_BACKUP] = format_id(host.now())
    _apply_config(host)


def _run_backup(host: Host, place: _BackupPlace, requested: str, *, on_primary: bool) -> Outcome:
    tool = host.backup_tool
    result = tool.backup(BACKUP_TYPES[requested], on_primary=on_primary)
    if not result.ok:
        reason = tool.error_line(result)
        failed_id = _id_from_output(result) or format_id(host.now())
        _upload_logs(place, failed_id, result)
        return _backup_refused(msg.with_reason(msg.FAILED_TO_BACKUP, reason))
    backup_id = (
        _newest_backup_id(host, place.stanza) or _id_from_output(result) or format_id(host.now())
    )
    if not _upload_logs(place, backup_id, result):
        return _backup_refused(msg.with_reason(msg.FAILED_TO_UPLOAD_LOGS, f"backup {backup_id}"))
    log.info("Backup %s (%s) created on unit %s", backup_id, requested, host.unit_name)
    return ActionResults(
        {msg.RESULT_BACKUP_STATUS: msg.BACKUP_CREATED, "backup-id": backup_id, "type": requested}
    )


def _id_from_output(result: CommandResult) -> str | None:
    """The user id of the label pgBackRest announced (``new backup label = ...``)."""
    match = _NEW_LABEL_RE.search(result.stdout) or _NEW_LABEL_RE.search(result.stderr)
    if match and is_label(match.group(1)):
        return label_to_id(match.group(1))
    return None


def _newest_backup_id(host: Host, stanza: str) -> str | None:
    try:
        stanzas = host.backup_tool.info(stanza)
    except BackupToolError as exc:
        log.warning("The new backup's id cannot be read from pgBackRest: %s", exc)
        return None
    backups = [b for s in stanzas if s.name == stanza for b in s.backups]
    if not backups:
        return None
    return max(backups, key=lambda b: b.start).backup_id


def _upload_logs(place: _BackupPlace, backup_id: str, result: CommandResult) -> bool:
    """``<path>/backup/<stanza>/<backup-id>/backup.log``: one id form (the user id, SPEC
    §5) whether the backup succeeded or not."""
    body = f"Stdout:\n{result.stdout}\n\nStderr:\n{result.stderr}\n"
    try:
        place.store.put(place.key(f"{backup_id}/backup.log"), body.encode())
    except ObjectStoreError as exc:
        log.error("Backup logs of %s not uploaded: %s", backup_id, exc)
        return False
    return True


def _restore_unit_after_backup(host: Host, before: UnitStatus) -> None:
    """ "Always": connectivity on, tag cleared, configuration applied, status restored —
    whatever happened and whatever the unit's role is now (a switchover may have
    happened meanwhile), so no unit is left rejecting clients (SPEC §9)."""
    host.unit_data[CONNECTIVITY] = ""
    host.unit_data[CREATING_BACKUP] = ""
    try:
        _apply_config(host)
    finally:
        host.set_status(before)


# ===========================================================================
# list-backups (SPEC §4)


def on_list_backups(host: Host, params: Mapping[str, str]) -> Outcome:
    output = (params.get("format") or "table").strip()
    if output not in FORMATS:
        return ActionFailed(f"Invalid format: {output}. Possible values: {', '.join(FORMATS)}.")
    settings = _parse(host.s3_parameters())
    if settings is None:
        return ActionFailed(msg.S3_RELATION_MISSING_LIST)
    if isinstance(settings, S3SettingsProblem):
        return ActionFailed(settings.message())
    try:
        stanzas = host.backup_tool.info()
        timelines = _restore_timelines(host, stanzas)
    except BackupToolError as exc:
        log.error("list-backups: %s", exc)
        return ActionFailed(msg.with_reason(msg.FAILED_TO_LIST_BACKUPS, str(exc)))
    rows = build_rows(stanzas, timelines)
    if output == "json":
        text = format_json(rows)
    else:
        text = format_table(settings.bucket, settings.path, rows)
    return ActionResults({msg.RESULT_BACKUPS: text})


# ===========================================================================
# restore (SPEC §7)


def _restore_timelines(host: Host, stanzas: list[StanzaInfo]) -> list[TimelineRecord]:
    """The timelines restores created, of every stanza that exists (list-backups and the
    restore target read the same ones). Raises BackupToolError."""
    timelines: list[TimelineRecord] = []
    for stanza in stanzas:
        if stanza.exists:
            timelines += host.backup_tool.timelines(stanza.name)
    return timelines


def on_restore(host: Host, params: Mapping[str, str]) -> Outcome:
    """SPEC §7, in chart order, with point-in-time recovery (docs/restore.md): the first
    box takes ``backup-id`` and/or ``restore-to-time`` and checks the time's form, and
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
    if host.planned_units() > 1:
        return _restore_refused(msg.RESTORE_MORE_THAN_ONE_UNIT)
    if not host.is_leader():
        return _restore_refused(msg.RESTORE_NOT_LEADER)
    chosen = _find_backup(host, request)
    if isinstance(chosen, ActionFailed):
        return chosen
    before = host.get_status()
    host.set_status(UnitStatus.maintenance(msg.RESTORING_BACKUP))
    workload = host.workload
    if not _done(workload.stop_database):
        host.set_status(before)
        return _restore_refused(_restore_failure("could not stop the database"))
    if not _done(workload.remove_dcs_state):
        return _start_again(host, before, "could not remove the previous cluster from the DCS")
    try:
        moved = workload.move_data_aside() or ""
    except WorkloadError as exc:
        log.error("%s", exc)
        return _start_again(host, before, "could not move the data directory aside")
    _record_restore(host, chosen, moved)
    _apply_config(host)  # Patroni now bootstraps from the pgBackRest backup
    if not _done(workload.start_database):
        kept = host.app_data.get(RESTORE_MOVED_DATA) or moved
        message = _restore_failure(f"the database did not start; old data kept at {kept}")
        host.set_status(UnitStatus.blocked(message))
        return _restore_refused(message)
    log.info("Restore started: %s (stanza %s)", chosen.description, chosen.stanza)
    return ActionResults({msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED})


def _restore_refused(message: str) -> ActionFailed:
    log.error("Restore failed: %s", message)
    return ActionFailed(message)


def _restore_failure(reason: str) -> str:
    return msg.with_reason(msg.FAILED_TO_RESTORE_BACKUP, reason)


def _restore_request(host: Host, params: Mapping[str, str]) -> targets.Request | ActionFailed:
    """ "Has the user asked for a restore target?" ``backup-id``, ``restore-to-time`` or
    both; a time must be well-formed and not in the future. Nothing else is asked yet."""
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


def _done(action: Callable[[], None]) -> bool:
    """Run a workload action; False (its reason logged) when it raised WorkloadError."""
    try:
        action()
    except WorkloadError as exc:
        log.error("%s", exc)
        return False
    return True


def _is_blocked_for_restore(host: Host) -> bool:
    """Blocked, other than by a foreign repository or a failed restore (SPEC §7)."""
    status = host.get_status()
    if not status.is_blocked:
        return False
    if msg.is_failed_restore(status.message):
        return False
    return not msg.has_prefix(status.message, msg.ANOTHER_CLUSTER_REPOSITORY)


def _find_backup(host: Host, request: targets.Request) -> targets.Chosen | ActionFailed:
    """ "Is the restore target valid?" The repository's finished backups and the
    timelines restores created, and targets.choose_target's pick among them."""
    if request.backup_id:
        try:
            normalise_id(request.backup_id)
        except ValueError:
            return _restore_refused(f"{msg.INVALID_BACKUP_ID}: {request.backup_id}")
    settings = _parse(host.s3_parameters())
    if settings is None:
        return _restore_refused(msg.S3_RELATION_MISSING_RESTORE)
    if isinstance(settings, S3SettingsProblem):
        return _restore_refused(settings.message())
    try:
        stanzas = host.backup_tool.info()
        records = [b for s in stanzas for b in s.backups]
        timelines: list[TimelineRecord] = []
        if request.has_time or not _names_a_backup(records, request.backup_id):
            timelines = _restore_timelines(host, stanzas)
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
        return _restore_refused(chosen)
    return chosen


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
    if _done(host.workload.start_database):
        host.set_status(before)
        return _restore_refused(_restore_failure(reason))
    message = _restore_failure(f"{reason}; the database did not start again")
    host.set_status(UnitStatus.blocked(message))
    return _restore_refused(message)


def _record_restore(host: Host, chosen: targets.Chosen, moved: str) -> None:
    """The restore keys; desired_config turns them into Patroni's pgBackRest bootstrap.

    When a failed restore already moved the original data aside, that path is kept (it
    holds the cluster's real data): it is never replaced, and never removed before a
    restore succeeded. ``moved`` is then the failed attempt's directory ("" when there was
    none: Patroni moves a failed bootstrap's data to ``<data>.failed`` itself); it is only
    logged.
    """
    app = host.app_data
    previous = app.get(RESTORE_MOVED_DATA)
    if previous:
        log.warning(
            "The data from before the first restore is kept at %s; the failed restore's "
            "data is at %s",
            previous,
            moved or "(none)",
        )
    app[RESTORING_BACKUP] = chosen.label
    app[RESTORE_STANZA] = chosen.stanza
    app[RESTORE_TYPE] = chosen.type
    app[RESTORE_TO_TIME] = chosen.restore_to_time
    app[RESTORE_TIMELINE] = str(chosen.timeline) if chosen.timeline is not None else ""
    app[RESTORE_MOVED_DATA] = previous or moved
    app[S3_BLOCK_MESSAGE] = ""


# ===========================================================================
# rollback-restore (ours; docs/restore.md "Rolling back a failed restore")
#
# SPEC §7: the data from before a restore "is moved back if the restore fails and the
# user asks to roll back". The chart:
#
#   rollback-restore
#     Is the unit blocked by a failed restore?      no  -> fail (nothing to roll back)
#     Is the data from before the restore recorded? no  -> fail (nothing to move back)
#     Is current unit leader?                       no  -> fail
#     Maintenance: rolling back the restore
#     Has the database stopped?                     no  -> status as before, fail
#     Was the failed restore removed from the DCS?  no  -> status as before, fail
#     Was the data moved back?                      no  -> status as before, fail
#     Clear the restore keys, normal bootstrap, start the database
#     Did it start?                                 no  -> Blocked, fail
#     Active; results: rollback-status


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
    if not _is_failed_restore_status(before):
        return _rollback_refused(msg.with_reason(msg.NO_FAILED_RESTORE, _no_failure(host)))
    moved = host.app_data.get(RESTORE_MOVED_DATA, "")
    if not moved:
        return _rollback_refused(
            msg.with_reason(msg.NO_FAILED_RESTORE, "no data from before the restore is kept")
        )
    if not host.is_leader():
        return _rollback_refused(msg.ROLLBACK_NOT_LEADER)
    host.set_status(UnitStatus.maintenance(msg.ROLLING_BACK_RESTORE))
    workload = host.workload
    for step, done in (
        ("could not stop the database", workload.stop_database),
        ("could not remove the failed restore from the DCS", workload.remove_dcs_state),
        (f"could not move {moved} back", lambda: workload.move_data_back(moved)),
    ):
        if not _done(done):
            host.set_status(before)
            return _rollback_refused(msg.with_reason(msg.FAILED_TO_ROLL_BACK, step))
    for key in (*RESTORE_KEYS, RESTORE_MOVED_DATA):
        host.app_data[key] = ""
    _apply_config(host)  # Patroni's normal bootstrap: it starts the data that is back
    if not _done(workload.start_database):
        message = msg.with_reason(
            msg.FAILED_TO_ROLL_BACK, "the data is back but the database did not start"
        )
        host.set_status(UnitStatus.blocked(message))
        return _rollback_refused(message)
    log.info("Rolled back the failed restore: the data from %s is back", moved)
    host.set_status(UnitStatus.active())
    return ActionResults({msg.RESULT_ROLLBACK_STATUS: msg.ROLLED_BACK})


def _no_failure(host: Host) -> str:
    """Why there is nothing to roll back, for the refusal."""
    if _restore_in_progress(host.app_data):
        return "a restore is in progress"
    status = host.get_status()
    if status.message:
        return f"the unit is {status.kind.value} ({status.message})"
    return f"the unit is {status.kind.value}"


def _rollback_refused(message: str) -> ActionFailed:
    log.error("Rollback of the restore failed: %s", message)
    return ActionFailed(message)
