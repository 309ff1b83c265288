"""expire (ours: the reference operator has no such action): apply the retention now.

pgBackRest expires by itself after every successful backup when retention is set
(:mod:`pgbackups.core.policy`); this action runs ``pgbackrest expire`` on demand, e.g. right
after the retention was lowered, and says what it removed. What was removed is read from
the repository (``info`` before and after), never from pgBackRest's log lines.

1. the stanza must be initialised and the S3 settings complete (as create-backup);
2. no backup may be running on the cluster (its set would be half-written);
3. ``info`` before, ``expire``, ``info`` after: the backups that are gone, and the WAL
   (the archive's oldest segment before and after).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import parse_settings
from pgbackups.core.host import BackupToolError, Host
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.peer_keys import CREATING_BACKUP, STANZA
from pgbackups.core.policy import policy_or_default
from pgbackups.core.repository import StanzaInfo
from pgbackups.core.settings import S3SettingsProblem

log = logging.getLogger(__name__)


def on_expire(host: Host, params: Mapping[str, str]) -> Outcome:
    del params  # none: the retention is a setting, not a parameter
    stanza = host.app_data.get(STANZA)
    if not stanza:
        return _refused(msg.STANZA_NOT_INITIALISED)
    settings = parse_settings(host.s3_parameters())
    if settings is None:
        return _refused(msg.S3_RELATION_MISSING)
    if isinstance(settings, S3SettingsProblem):
        return _refused(settings.message())
    running = _backup_running(host)
    if running is not None:
        return _refused(msg.with_reason(msg.EXPIRE_BACKUP_RUNNING, running))
    tool = host.backup_tool
    try:
        before = _stanza(tool.info(stanza), stanza)
    except BackupToolError as exc:
        return _refused(msg.with_reason(msg.FAILED_TO_EXPIRE, str(exc)))
    result = tool.expire()
    if not result.ok:
        return _refused(msg.with_reason(msg.FAILED_TO_EXPIRE, tool.error_line(result)))
    try:
        after = _stanza(tool.info(stanza), stanza)
    except BackupToolError as exc:
        return _refused(msg.with_reason(msg.FAILED_TO_EXPIRE, f"expired; then {exc}"))
    return _results(host, before, after, settings.delete_older_than_days)


def _refused(message: str) -> ActionFailed:
    log.error("Expire failed: %s", message)
    return ActionFailed(message)


def _backup_running(host: Host) -> str | None:
    bags = {host.unit_name: host.unit_data, **host.peer_data()}
    for name, bag in sorted(bags.items()):
        if bag.get(CREATING_BACKUP):
            return f"{name} started one at {bag[CREATING_BACKUP]}"
    return None


def _stanza(stanzas: list[StanzaInfo], name: str) -> StanzaInfo | None:
    return next((s for s in stanzas if s.name == name), None)


def _results(
    host: Host, before: StanzaInfo | None, after: StanzaInfo | None, s3_days: int
) -> ActionResults:
    kept = {b.label for b in after.backups} if after else set()
    gone = [b.backup_id for b in (before.backups if before else ()) if b.label not in kept]
    old_min = before.archive_min if before else None
    new_min = after.archive_min if after else None
    wal = "none"
    if old_min and old_min != new_min:
        wal = f"{old_min} up to {new_min}" if new_min else f"from {old_min} on"
    retention = policy_or_default(host.config_options()).retention
    rule = retention.describe() if retention else f"full: {s3_days} days (time, S3 settings)"
    log.info("Expire (%s): backups %s, WAL %s", rule, gone or "none", wal)
    return ActionResults(
        {
            msg.RESULT_EXPIRE_STATUS: msg.BACKUPS_EXPIRED
            if gone or wal != "none"
            else msg.NOTHING_EXPIRED,
            "expired-backups": ",".join(gone) or "none",
            "expired-wal": wal,
            "kept-backups": str(len(kept)),
            "retention": rule,
        }
    )
