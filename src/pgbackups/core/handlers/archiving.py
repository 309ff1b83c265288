"""Is WAL archiving working? update-status's look at the primary's archiver (ours: the
reference operator never looks, so a primary whose pushes failed, lagged or had WAL
dropped over pgBackRest's queue cap kept showing "active" and "WAL archiving: on").

Failing and dropped are Blocked (a person must act: fix S3, take a backup); lagging is
Active with the facts in the message (a backup still works). Only an Active status, or
one this module set, is replaced; each clears by itself: failing and lagging once the
waiting segments are archived, dropped once a backup newer than every hole exists
(pgBackRest: "a new backup will be required to regain full restore capability").
The decision is :mod:`pgbackups.core.archive_health`'s.
"""

from __future__ import annotations

import logging

from pgbackups.core import archive, archive_health
from pgbackups.core import messages as msg
from pgbackups.core.archive_health import Hole
from pgbackups.core.host import BackupToolError, Host, StatusKind, UnitStatus
from pgbackups.core.peer_keys import ARCHIVE_DROPPED, STANZA
from pgbackups.core.policy import policy_or_default

log = logging.getLogger(__name__)


def check_archiving(host: Host) -> None:
    """Set, keep or clear this unit's archiving status (see the module's docstring).
    Drop notices are recorded whatever the status: pgBackRest removes them at its next
    run, and a hole must not be forgotten because another status was showing."""
    stanza = host.app_data.get(STANZA) or ""
    primary = bool(stanza) and host.workload.is_primary() is True
    stats = host.workload.archiver_stats() if primary else None
    holes = _dropped_holes(host, stanza, stats.dropped if stats is not None else ())
    status = host.get_status()
    ours = msg.is_archive_health_message(status.message)
    if status.kind is not StatusKind.ACTIVE and not ours:
        return
    if primary and stats is None:
        return  # PostgreSQL does not answer: say nothing rather than something wrong
    problem: UnitStatus | None = None
    if holes:
        problem = UnitStatus.blocked(archive_health.dropped_message(holes))
    elif stats is not None:
        lag = policy_or_default(host.config_options()).archive_lag_threshold
        text = archive_health.archiving_problem(stats, now=host.now(), lag_threshold=lag)
        if text is not None and text.startswith(msg.ARCHIVING_FAILING):
            problem = UnitStatus.blocked(text)
        elif text is not None:
            problem = UnitStatus.active(text)
    if problem is None:
        if ours:
            log.info("WAL archiving works again: %s is over", status.message)
            host.set_status(UnitStatus.active())
        return
    if problem != status:
        log.error("WAL archiving: %s", problem.message)
        host.set_status(problem)


def _dropped_holes(host: Host, stanza: str, announced: tuple[str, ...]) -> tuple[Hole, ...]:
    """The holes dropped WAL left (this unit's bag), with what the spool announces now;
    () once a backup newer than all of them exists."""
    known = archive_health.parse_holes(host.unit_data.get(ARCHIVE_DROPPED, ""))
    if not known and not announced:
        return ()
    holes = archive_health.merge(known, _exact_holes(host, stanza, announced))
    try:
        stanzas = host.backup_tool.info(stanza) if stanza else []
    except BackupToolError as exc:
        log.warning("Cannot tell whether a backup covers the dropped WAL: %s", exc)
        stanzas = []
    starts = [b.wal_start for s in stanzas for b in s.backups if b.finished]
    if archive_health.covered_by(holes, starts):
        if known:
            log.info("A backup newer than the dropped WAL exists: forgetting %s", holes)
        host.unit_data[ARCHIVE_DROPPED] = ""
        return ()
    text = archive_health.format_holes(holes)
    if host.unit_data.get(ARCHIVE_DROPPED, "") != text:
        log.error("pgBackRest dropped WAL over the archive queue cap: holes %s", text)
        host.unit_data[ARCHIVE_DROPPED] = text
    return holes


def _exact_holes(host: Host, stanza: str, announced: tuple[str, ...]) -> tuple[Hole, ...]:
    """Each announced hole widened to the run of segments the repository's archive is
    missing around it: pgBackRest drops its whole queue at once, but a notice lives only
    until its next async run, so the spool may name part of a hole and the archive says
    exactly which segments are gone."""
    notices = archive_health.holes_of(announced)
    if not notices:
        return ()
    try:
        segments = host.backup_tool.archive_segments(stanza)
    except BackupToolError as exc:
        log.warning("The archive cannot be listed; the dropped segments as announced: %s", exc)
        return notices
    missing = {
        parsed
        for problem in archive.gaps(segments)
        if (parsed := archive.parse_segment_name(problem.segment)) is not None
    }
    widened: list[Hole] = []
    for hole in notices:
        first, last = hole.first, hole.last
        while (hole.timeline, first - 1) in missing:
            first -= 1
        while (hole.timeline, last + 1) in missing:
            last += 1
        widened.append(Hole(hole.timeline, first, last))
    return archive_health.merge(widened)
