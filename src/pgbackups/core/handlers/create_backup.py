"""create-backup (docs/behaviour/create-backup.md), and its "Always" step for a backup that was
killed before it could run it (update-status calls :func:`bring_back_after_interrupted_backup`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pgbackups.core import backup_claim
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
from pgbackups.core.peer_keys import BACKUP_CLAIM_LEFT, CONNECTIVITY, CREATING_BACKUP, STANZA
from pgbackups.core.repository import BackupRecord
from pgbackups.core.restore_state import record_backup_taken
from pgbackups.core.settings import S3Settings, S3SettingsProblem

log = logging.getLogger(__name__)

BACKUP_TYPES = {"full": "full", "differential": "diff", "incremental": "incr"}
# pgBackRest's type -> ours, and the letter that ends a label of that type.
USER_TYPES = {tool: user for user, tool in BACKUP_TYPES.items()}
LABEL_SUFFIXES = {"full": "F", "diff": "D", "incr": "I"}
_NEW_LABEL_RE = re.compile(r"new backup label = (\S+)")


def on_create_backup(host: Host, params: Mapping[str, str]) -> Outcome:
    """docs/behaviour/create-backup.md, in chart order.

    The one-backup-at-a-time check comes after every check of the chart and before the
    metadata upload: the chart's reasons are the more fundamental ones, and a refused
    second request must not overwrite the ``latest`` metadata of the running backup. The
    peer bags are looked at first (cheap, and enough on one unit); the claim in the
    repository (:mod:`pgbackups.core.backup_claim`) is what keeps two units apart.
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
        return _backup_refused(msg.with_reason(msg.BACKUP_NOT_RUNNING, _PATRONI_SILENT))
    if on_primary and tls_server_wanted(host):
        return _backup_refused(msg.BACKUP_ON_PRIMARY)
    if not on_primary and host.tls() is None:
        return _backup_refused(msg.BACKUP_TLS_DISABLED)
    if not host.workload.is_member_running():
        return _backup_refused(_not_running(host))
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
    claim = _claim_backup(host, place)
    if not isinstance(claim, backup_claim.Claim):
        return claim
    try:
        return _claimed_backup(host, place, requested, on_primary=on_primary)
    finally:
        _release_claim(host, place, claim)


def _claimed_backup(
    host: Host, place: _BackupPlace, requested: str, *, on_primary: bool
) -> Outcome:
    """Steps 10 to 18, with this unit's claim held."""
    if not _upload_metadata(host, place, requested):
        return _backup_refused(msg.FAILED_TO_UPLOAD_METADATA)
    log.info("A %s backup has been requested on unit %s", requested, host.unit_name)
    before = host.get_status()
    try:
        # Every unit that backs up says so (one backup per cluster); only a replica hides.
        host.unit_data[CREATING_BACKUP] = format_id(host.now())
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

    def claims(self) -> str:
        return backup_claim.claims_prefix(self.key(""))


_PATRONI_SILENT = "Patroni does not answer"


def _not_running(host: Host) -> str:
    """The refusal with Patroni's own word for the member: a unit that has just rejoined
    passes through ``stopped`` and ``starting`` while Patroni rewinds it, which is worth a
    retry, unlike ``start failed``."""
    state = host.workload.member_state()
    reason = f"Patroni reports the member {state}" if state else _PATRONI_SILENT
    return msg.with_reason(msg.BACKUP_NOT_RUNNING, reason)


def _backup_refused(message: str) -> ActionFailed:
    log.error("Backup failed: %s", message)
    return ActionFailed(message)


def _backup_running_elsewhere(host: Host) -> str | None:
    """Which unit (own or peer) says in its bag that it is creating a backup, and since when."""
    bags = {host.unit_name: host.unit_data, **host.peer_data()}
    for name, bag in sorted(bags.items()):
        started = bag.get(CREATING_BACKUP)
        if started:
            return f"{name} started one at {started}"
    return None


def _claim_backup(host: Host, place: _BackupPlace) -> backup_claim.Claim | ActionFailed:
    """Step 9 in the repository: this unit's claim, or the refusal naming the unit that
    holds one (docs/behaviour/create-backup.md#step-9-one-backup-at-a-time)."""
    # Every other unit of the cluster: the local host's peer_data leaves out a unit whose
    # bag is empty (Juju's lists every unit of the relation), peers() lists them all.
    members = set(host.peer_data()) | {peer.name for peer in host.peers()}
    try:
        claim = backup_claim.take(place.store, place.claims(), host.unit_name, host.now, members)
    except ObjectStoreError as exc:
        return _backup_refused(msg.with_reason(msg.FAILED_TO_CLAIM_BACKUP, str(exc)))
    if isinstance(claim, backup_claim.Refused):
        return _backup_refused(msg.with_reason(msg.BACKUP_ALREADY_RUNNING, claim.reason))
    return claim


def _release_claim(host: Host, place: _BackupPlace, claim: backup_claim.Claim) -> None:
    """Step 19: the claim goes; one S3 refused to remove is noted for update-status."""
    if not backup_claim.release(place.store, claim):
        host.unit_data[BACKUP_CLAIM_LEFT] = claim.key
    elif host.unit_data.get(BACKUP_CLAIM_LEFT):
        # A claim left by an earlier backup of this unit: step 9 removed it as stale.
        host.unit_data[BACKUP_CLAIM_LEFT] = ""


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
    load-balanced (Patroni tags, while ``creating-backup`` is set too)."""
    host.unit_data[CONNECTIVITY] = "off"
    apply_config(host)


def _run_backup(host: Host, place: _BackupPlace, requested: str, *, on_primary: bool) -> Outcome:
    tool = host.backup_tool
    started = host.now()
    # A replica's backup starts and stops on the primary, through its TLS server: the
    # tool stops the backup when that server stays unreachable (docs/reliability.md,
    # "Network faults"), rather than waiting pgBackRest's half an hour.
    primary = None if on_primary else host.workload.primary_address()
    result = tool.backup(BACKUP_TYPES[requested], on_primary=on_primary, primary=primary)
    if not result.ok:
        reason = tool.error_line(result)
        failed_id = _id_from_output(result) or format_id(host.now())
        _upload_logs(place, failed_id, result)
        return _backup_refused(msg.with_reason(msg.FAILED_TO_BACKUP, reason))
    taken = _read_back(host, place.stanza, started)
    if isinstance(taken, _TakenBackup):
        backup_id = taken.record.backup_id
    else:
        backup_id = _id_from_output(result) or format_id(host.now())
    if not _upload_logs(place, backup_id, result):
        return _backup_refused(msg.with_reason(msg.FAILED_TO_UPLOAD_LOGS, f"backup {backup_id}"))
    results = {
        msg.RESULT_BACKUP_STATUS: msg.BACKUP_CREATED,
        "backup-id": backup_id,
        "type": requested,
        "requested-type": requested,
    }
    if isinstance(taken, _TakenBackup):
        record_backup_taken(host.unit_data, taken.record.label)
        results["type"] = taken.user_type
        if taken.user_type != requested:
            results["message"] = msg.backup_type_changed(
                requested, taken.user_type, no_full_backup=not taken.full_before
            )
            log.warning("Backup %s: %s", backup_id, results["message"])
    else:
        results["message"] = msg.backup_type_unknown(requested, taken)
        log.warning("Backup %s: %s", backup_id, results["message"])
    log.info("Backup %s (%s) created on unit %s", backup_id, results["type"], host.unit_name)
    return ActionResults(results)


@dataclass(frozen=True)
class _TakenBackup:
    record: BackupRecord
    user_type: str  # full | differential | incremental
    full_before: bool  # a finished full backup of the stanza existed before it


def _read_back(host: Host, stanza: str, started: datetime) -> _TakenBackup | str:
    """The backup this run took, as ``pgbackrest info`` lists it: the newest one that
    started no earlier than the command (labels have whole seconds), with the type from
    its ``type`` field, checked against its label's letter. Never from pgBackRest's log
    text. A string says why it cannot be told."""
    try:
        stanzas = host.backup_tool.info(stanza)
    except BackupToolError as exc:
        log.warning("The new backup cannot be read back from pgBackRest: %s", exc)
        return f"pgBackRest info failed: {exc}"
    backups = [b for s in stanzas if s.name == stanza for b in s.backups]
    since = started.replace(microsecond=0)
    new = [b for b in backups if b.start >= since and not b.error]
    if not new:
        return f"pgBackRest lists no backup started since {format_id(since)}"
    record = max(new, key=lambda b: b.start)
    if record.type not in USER_TYPES:
        return f"pgBackRest lists backup {record.label} with type {record.type!r}"
    if not record.label.endswith(LABEL_SUFFIXES[record.type]):
        return f"backup {record.label} has type {record.type!r} but not its label's letter"
    full_before = any(b.type == "full" and not b.error and b.start < record.start for b in backups)
    return _TakenBackup(record, USER_TYPES[record.type], full_before)


def _id_from_output(result: CommandResult) -> str | None:
    """The user id of the label pgBackRest announced (``new backup label = ...``)."""
    match = _NEW_LABEL_RE.search(result.stdout) or _NEW_LABEL_RE.search(result.stderr)
    if match and is_label(match.group(1)):
        return label_to_id(match.group(1))
    return None


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
    (docs/behaviour/create-backup.md#step-18-always)."""
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
    (docs/behaviour/create-backup.md#step-18-always: no replica is left rejecting clients).
    Its claim in the repository is removed too (step 19), and so is a claim that S3
    refused to remove when its backup ended, so that other units may back up."""
    unit = host.unit_data
    killed = bool(unit.get(CREATING_BACKUP)) or unit.get(CONNECTIVITY) == "off"
    if not killed and not unit.get(BACKUP_CLAIM_LEFT):
        return
    try:
        if killed:
            log.warning("A backup on this unit ended without cleaning up: accepting clients again")
            status = host.get_status()
            backing_up = status == UnitStatus.maintenance(msg.CREATING_BACKUP)
            _restore_unit_after_backup(host, UnitStatus.active() if backing_up else status)
    finally:
        _remove_claims_left(host)


def _remove_claims_left(host: Host) -> None:
    """This unit's claims; ``backup-claim-left`` is kept while S3 refuses."""
    stanza = host.app_data.get(STANZA)
    settings = parse_settings(host.s3_parameters())
    if not stanza or not isinstance(settings, S3Settings):
        return  # nothing to reach now; the claim is stale for the others after its limit
    place = _BackupPlace(settings, host.object_store(settings), stanza)
    try:
        backup_claim.release_unit(place.store, place.claims(), host.unit_name)
    except ObjectStoreError as exc:
        log.warning("This unit's backup claims could not be removed: %s", exc)
        host.unit_data[BACKUP_CLAIM_LEFT] = host.unit_data.get(BACKUP_CLAIM_LEFT) or "unknown"
        return
    if host.unit_data.get(BACKUP_CLAIM_LEFT):
        host.unit_data[BACKUP_CLAIM_LEFT] = ""
