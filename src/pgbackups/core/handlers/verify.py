"""verify (docs/behaviour/verify.md): pgBackRest ``verify`` of this cluster's stanza, its
result per backup, kept in the repository (core/verification.py) for list-backups."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import parse_settings
from pgbackups.core.host import BackupToolError, Host, ObjectStoreError
from pgbackups.core.ids import label_to_id, normalise_id
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.repository import VerifiedBackup
from pgbackups.core.settings import S3SettingsProblem
from pgbackups.core.verification import decode, encode, outcome, updated, verify_key

log = logging.getLogger(__name__)


def on_verify(host: Host, params: Mapping[str, str]) -> Outcome:
    """Checks the settings and the backup id, runs pgBackRest verify (2.45 reads the whole
    stanza: ``backup-id`` only narrows what is reported), records the result of every
    backup it read, and fails naming each invalid backup."""
    settings = parse_settings(host.s3_parameters())
    if settings is None:
        return ActionFailed(msg.S3_RELATION_MISSING_VERIFY)
    if isinstance(settings, S3SettingsProblem):
        return ActionFailed(settings.message())
    wanted = (params.get("backup-id") or "").strip()
    try:
        own = [s for s in host.backup_tool.info(host.stanza_name) if s.exists]
    except BackupToolError as exc:
        return ActionFailed(msg.with_reason(msg.FAILED_TO_VERIFY, str(exc)))
    finished = {b.label: b for s in own for b in s.backups if b.finished}
    label = ""
    if wanted:
        try:
            wanted_id = normalise_id(wanted)
        except ValueError:
            return ActionFailed(f"{msg.INVALID_BACKUP_ID}: {wanted}")
        label = next((lb for lb, b in finished.items() if b.backup_id == wanted_id), "")
        if not label:
            return ActionFailed(f"{msg.INVALID_BACKUP_ID}: {wanted}")
    if not own:
        return ActionFailed(msg.with_reason(msg.FAILED_TO_VERIFY, "this cluster has no stanza"))
    try:
        report = host.backup_tool.verify()
    except BackupToolError as exc:
        log.error("verify: %s", exc)
        return ActionFailed(msg.with_reason(msg.FAILED_TO_VERIFY, str(exc)))
    _record(host, settings.path, report.backups, finished)
    shown = [b for b in report.backups if not label or b.label == label]
    results = {
        msg.RESULT_VERIFY_STATUS: "ok",
        msg.RESULT_BACKUPS: json.dumps([_row(b) for b in shown], indent=2),
        "wal": f"{report.wal_valid} of {report.wal_checked} archived WAL segments valid",
    }
    invalid = [b for b in shown if not b.valid]
    if label and not shown:
        invalid_text = f"backup {wanted} was not read by pgBackRest verify"
        return ActionFailed(msg.with_reason(msg.VERIFY_FAILED, invalid_text))
    if invalid or (not label and report.wal_valid < report.wal_checked):
        named = [f"backup {label_to_id(b.label)}: {b.problems()}" for b in invalid]
        if not label and report.wal_valid < report.wal_checked:
            named.append(results["wal"])
        return ActionFailed(msg.with_reason(msg.VERIFY_FAILED, "; ".join(named)))
    return ActionResults(results)


def _row(found: VerifiedBackup) -> dict[str, str | int]:
    return {
        "backup-id": label_to_id(found.label),
        "result": outcome(found),
        "files-checked": found.files_checked,
        "files-valid": found.files_valid,
    }


def _record(
    host: Host, path: str, results: tuple[VerifiedBackup, ...], finished: Mapping[str, object]
) -> None:
    """Keep the results in the repository; a failure to write them is logged, never the
    action's failure (the verification itself happened and is reported)."""
    settings = parse_settings(host.s3_parameters())
    if settings is None or isinstance(settings, S3SettingsProblem):
        return
    key = verify_key(path)
    try:
        store = host.object_store(settings)
        records = decode(store.get(key))
        merged = updated(records, host.stanza_name, results, host.now(), finished)
        store.put(key, encode(merged))
    except ObjectStoreError as exc:
        log.warning("The verification result was not recorded (%s): %s", key, exc)
