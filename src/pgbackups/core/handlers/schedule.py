"""Scheduled backups: update-status starts the backups the schedules say are due (ours: the
reference operator only backs up when asked).

Two halves, because only the leader writes the application bag and a backup must run on
the unit create-backup would use (a streaming replica with TLS and more than one unit,
otherwise the primary):

1. **Every unit** says in its own bag whether it could take a backup now
   (``backup-ready``: create-backup's own checks, without running anything).
2. **The leader** finds the latest scheduled minute of each schedule (UTC). A minute later
   than the one last handled (``schedule-<type>`` in the app bag: the expression and its
   last minute) is due: it names a ready unit in ``scheduled-backup`` and records the
   minute. However many minutes passed meanwhile (the machine was down), the schedule
   runs once. A schedule seen for the first time (or changed) starts from now: nothing
   is run for minutes before it was set. When several types are due at once, the
   biggest runs (full, then differential, then incremental) and the others are skipped.
3. **The named unit** runs create-backup, annotates the new backup ``trigger=scheduled``
   (pgBackRest's ``annotate``: list-backups shows it) and reports the outcome in its bag
   (``scheduled-backup-done``); the leader then clears the request. A named unit that is
   no longer ready is replaced by another ready one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pgbackups.core.handlers._steps import tls_server_wanted
from pgbackups.core.handlers.create_backup import on_create_backup
from pgbackups.core.host import BackupToolError, Host
from pgbackups.core.ids import format_id, parse_id
from pgbackups.core.listing import TRIGGER
from pgbackups.core.outcomes import ActionResults
from pgbackups.core.peer_keys import (
    BACKUP_READY,
    SCHEDULE_PREFIX,
    SCHEDULED_BACKUP,
    SCHEDULED_BACKUP_DONE,
    STANZA,
)
from pgbackups.core.policy import policy_or_default

log = logging.getLogger(__name__)

ORDER = ("full", "differential", "incremental")  # the biggest first
SCHEDULED = "scheduled"


@dataclass(frozen=True)
class Request:
    """A scheduled run the leader asked for: ``<type>|<minute>|<unit>``."""

    backup_type: str
    minute: str
    unit: str

    def __str__(self) -> str:
        return f"{self.backup_type}|{self.minute}|{self.unit}"

    @classmethod
    def parse(cls, text: str) -> Request | None:
        parts = text.split("|")
        if len(parts) != 3 or parts[0] not in ORDER:
            return None
        return cls(*parts)


def run_schedules(host: Host) -> None:
    """update-status's scheduling step (see the module's docstring). Without any schedule
    it only forgets what an earlier one left (no peer-bag writes otherwise)."""
    if not policy_or_default(host.config_options()).schedules:
        _forget(host)
        return
    _say_whether_ready(host)
    if host.is_leader():
        _leader_step(host)
    _run_if_named(host)


def _forget(host: Host) -> None:
    if host.unit_data.get(BACKUP_READY):
        host.unit_data[BACKUP_READY] = ""
    if host.is_leader():
        for key in (SCHEDULED_BACKUP, *(SCHEDULE_PREFIX + t for t in ORDER)):
            if host.app_data.get(key):
                host.app_data[key] = ""


# --- 1. every unit: ready? ----------------------------------------------------------------


def can_take_backup(host: Host) -> bool:
    """create-backup's checks that say whether this unit would take a backup, asked
    without running anything (docs/behaviour/create-backup.md)."""
    if host.get_status().is_blocked or not host.app_data.get(STANZA):
        return False
    primary = host.workload.is_primary()
    if primary is None or (primary and tls_server_wanted(host)):
        return False
    if not primary and host.tls() is None:
        return False
    return bool(host.workload.is_member_running())


def _say_whether_ready(host: Host) -> None:
    ready = "yes" if can_take_backup(host) else ""
    if host.unit_data.get(BACKUP_READY, "") != ready:
        host.unit_data[BACKUP_READY] = ready  # only on change: every write wakes the peers


# --- 2. the leader: what is due, and who runs it ------------------------------------------


def _leader_step(host: Host) -> None:
    app = host.app_data
    bags = {host.unit_name: host.unit_data, **host.peer_data()}
    pending = Request.parse(app.get(SCHEDULED_BACKUP, ""))
    if pending is not None:
        done = [b.get(SCHEDULED_BACKUP_DONE, "") for b in bags.values()]
        if any(d.startswith(f"{pending}|") for d in done):
            app[SCHEDULED_BACKUP] = ""
            pending = None
    ready = sorted(name for name, bag in bags.items() if bag.get(BACKUP_READY) == "yes")
    if pending is not None:
        if pending.unit not in ready and ready:
            moved = Request(pending.backup_type, pending.minute, ready[0])
            log.info("Scheduled %s backup moves to %s (%s is not ready)", moved.backup_type,
                     moved.unit, pending.unit)  # fmt: skip
            app[SCHEDULED_BACKUP] = str(moved)
        return
    if not ready:
        # Nothing is marked handled: what is due runs once a unit can take it.
        log.debug("No unit can take a backup now: schedules wait")
        return
    due = _due(host)
    if not due:
        return
    backup_type, minute = due[0]
    for skipped, _ in due[1:]:
        log.info("Scheduled %s backup skipped: a %s backup runs for %s", skipped, backup_type,
                 minute)  # fmt: skip
    request = Request(backup_type, minute, ready[0])
    log.info("Scheduled %s backup for %s: asking %s", backup_type, minute, request.unit)
    app[SCHEDULED_BACKUP] = str(request)


def _due(host: Host) -> list[tuple[str, str]]:
    """(type, minute) of each schedule due now, the biggest first; every due schedule's
    minute is recorded as handled, and a new or changed schedule starts from now."""
    policy = policy_or_default(host.config_options())
    now = host.now()
    due: list[tuple[str, str]] = []
    for backup_type in ORDER:
        key = SCHEDULE_PREFIX + backup_type
        schedule = policy.schedules.get(backup_type)
        if schedule is None:
            if host.app_data.get(key):
                host.app_data[key] = ""
            continue
        latest = schedule.latest_at_or_before(now)
        handled = host.app_data.get(key, "")
        text, _, last = handled.partition("|")
        minute = format_id(latest) if latest is not None else ""
        if text != schedule.text:
            # New or changed: from now on (a run for a minute before it was set would be
            # a surprise), and no run at the very minute it was set either.
            host.app_data[key] = f"{schedule.text}|{minute}"
            log.info("Schedule %s: %r, last minute %s", backup_type, schedule.text, minute or "-")
            continue
        if latest is not None and (not last or latest > _moment(last)):
            host.app_data[key] = f"{schedule.text}|{minute}"
            due.append((backup_type, minute))
    return due


def _moment(text: str) -> datetime:
    try:
        return parse_id(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # unreadable: as if never run


# --- 3. the named unit runs it ----------------------------------------------------------------


def _run_if_named(host: Host) -> None:
    request = Request.parse(host.app_data.get(SCHEDULED_BACKUP, ""))
    if request is None or request.unit != host.unit_name:
        return
    if host.unit_data.get(SCHEDULED_BACKUP_DONE, "").startswith(f"{request}|"):
        return  # already run; the leader has not cleared it yet
    if host.unit_data.get(BACKUP_READY) != "yes":
        return  # no longer ready (a switchover made it the primary): the leader moves it
    log.info("Scheduled %s backup for %s starts on %s", request.backup_type, request.minute,
             host.unit_name)  # fmt: skip
    outcome = on_create_backup(host, {"type": request.backup_type})
    if isinstance(outcome, ActionResults):
        backup_id = outcome.results.get("backup-id", "")
        _annotate(host, backup_id)
        log.info("Scheduled %s backup for %s created: %s", request.backup_type, request.minute,
                 backup_id)  # fmt: skip
        result = backup_id
    else:
        reason = getattr(outcome, "message", "") or getattr(outcome, "reason", "")
        log.error("Scheduled %s backup for %s failed: %s", request.backup_type, request.minute,
                  reason)  # fmt: skip
        result = "failed"
    host.unit_data[SCHEDULED_BACKUP_DONE] = f"{request}|{result}"


def _annotate(host: Host, backup_id: str) -> None:
    """``trigger=scheduled`` on the backup just made, found by its id in ``info``."""
    stanza = host.app_data.get(STANZA, "")
    try:
        stanzas = host.backup_tool.info(stanza)
    except BackupToolError as exc:
        log.warning("The scheduled backup %s is not annotated: %s", backup_id, exc)
        return
    label = next((b.label for s in stanzas for b in s.backups if b.backup_id == backup_id), None)
    if label is None:
        log.warning("The scheduled backup %s is not in the repository's list", backup_id)
        return
    tool = host.backup_tool
    result = tool.annotate(label, {TRIGGER: SCHEDULED})
    if not result.ok:
        log.warning("The scheduled backup %s is not annotated: %s", backup_id,
                    tool.error_line(result))  # fmt: skip
