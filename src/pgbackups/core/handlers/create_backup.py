"""create-backup (docs/behaviour/create-backup.md), and its "Always" step for a backup that was
killed before it could run it (update-status calls :func:`bring_back_after_interrupted_backup`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import apply_config, parse_settings, tls_server_wanted
from pgbackups.core.host import (
    BackupToolError,
    CommandResult,
    Host,
    ObjectStore,
    ObjectStoreError,
    UnitStatus,
)
from pgbackups.core.ids import format_id, is_label, label_to_id
from pgbackups.core.marker import object_key
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.peer_keys import CONNECTIVITY, CREATING_BACKUP, STANZA
from pgbackups.core.settings import S3Settings, S3SettingsProblem

log = logging.getLogger(__name__)

BACKUP_TYPES = {"full": "full", "differential": "diff", "incremental": "incr"}
_NEW_LABEL_RE = re.compile(r"new backup label = (\S+)")


def on_create_backup(host: Host, params: Mapping[str, str]) -> Outcome:
    """docs/behaviour/create-backup.md, in chart order.

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
    if on_primary and tls_server_wanted(host):
        return _backup_refused(msg.BACKUP_ON_PRIMARY)
    if not on_primary and host.tls() is None:
        return _backup_refused(msg.BACKUP_TLS_DISABLED)
    if not host.workload.is_member_running():
        return _backup_refused(msg.BACKUP_NOT_RUNNING)
    stanza = host.app_data.get(STANZA)
    if not stanza:
        return _backup_refused(msg.STANZA_NOT_INITIALISED)
    settings = parse_settings(host.s3_parameters())
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
    apply_config(host)


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
    """``<path>/backup/<stanza>/<backup-id>/backup.log``: one id form (the user id,
    docs/behaviour/backup-ids.md) whether the backup succeeded or not."""
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
    happened meanwhile), so no unit is left rejecting clients
    (docs/behaviour/create-backup.md#step-17-always)."""
    host.unit_data[CONNECTIVITY] = ""
    host.unit_data[CREATING_BACKUP] = ""
    try:
        apply_config(host)
    finally:
        host.set_status(before)


def bring_back_after_interrupted_backup(host: Host) -> None:
    """The "Always" step of create-backup, for a backup whose process was killed before it
    could run it (SIGKILL, a lost machine). Hooks and actions on one unit never overlap,
    so flags still set when update-status runs belong to a backup that is gone
    (docs/behaviour/create-backup.md#step-17-always: no replica is left rejecting clients)."""
    unit = host.unit_data
    if not unit.get(CREATING_BACKUP) and unit.get(CONNECTIVITY) != "off":
        return
    log.warning("A backup on this unit ended without cleaning up: accepting clients again")
    status = host.get_status()
    after = UnitStatus.active() if status == UnitStatus.maintenance(msg.CREATING_BACKUP) else status
    _restore_unit_after_backup(host, after)
