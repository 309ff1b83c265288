"""The archived WAL, as the restore and list-backups charts check it (core/archive.py).

A restore to the end of the archive (``latest``) is where lost WAL stays silent:
PostgreSQL replays what it finds and promotes at the first segment it cannot read. So
before anything is moved the chain a restore needs is followed segment by segment (a
missing or empty segment refuses the restore, naming it), and once it has ended, where
recovery really stopped is compared with the last segment the chain reached. Time and
backup targets are checked for the backup's own WAL; beyond it PostgreSQL itself refuses
to promote short of a time target ("recovery ended before configured recovery target
was reached"), which the restore chart already reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from pgbackups.core import targets
from pgbackups.core.archive import (
    ArchivedSegment,
    ChainProblem,
    Lineage,
    follow,
    gaps,
    parse_segment_name,
    segment_name,
    segno_of_lsn,
)
from pgbackups.core.host import BackupToolError, Host
from pgbackups.core.repository import (
    BackupRecord,
    StanzaInfo,
    TimelineRecord,
    parse_history_file,
)
from pgbackups.core.window import Window, windows

log = logging.getLogger(__name__)


def check_before_restore(
    host: Host, chosen: targets.Chosen, records: Sequence[BackupRecord]
) -> tuple[str | None, str]:
    """(why the restore must not start, or None; the segment recovery must then reach,
    "" when the end is not ours to check)."""
    backup = next((b for b in records if b.label == chosen.label), None)
    start = parse_segment_name(backup.wal_start) if backup else None
    stop = parse_segment_name(backup.wal_stop) if backup else None
    if backup is None or start is None or stop is None:
        log.warning("No WAL range recorded for backup %s: its archive is not checked", chosen.label)
        return None, ""
    try:
        segments = host.backup_tool.archive_segments(chosen.stanza)
    except BackupToolError as exc:
        return f"the archived WAL cannot be listed: {exc}", ""
    # The backup's own WAL: without it the backup cannot even become consistent.
    own = follow(segments, start[1], Lineage.of(backup.timeline), end_segno=stop[1])
    if own.problems:
        return _refusal(own.problems[0], "the backup cannot be restored without it"), ""
    if chosen.type != targets.DEFAULT:
        return None, ""
    lineage = _lineage(host, chosen, backup)
    if lineage is None:
        return None, ""
    chain = follow(segments, start[1], lineage)
    if chain.problems:
        return _refusal(chain.problems[0], f"recovery would stop at {chain.end}"), ""
    return None, chain.end or ""


def _refusal(problem: ChainProblem, consequence: str) -> str:
    return f"{problem.describe()}; {consequence} (nothing was changed)"


def _lineage(host: Host, chosen: targets.Chosen, backup: BackupRecord) -> Lineage | None:
    """The timelines recovery follows to ``chosen.timeline``; None when its history
    cannot be read (then only PostgreSQL's own checks apply, logged)."""
    target = chosen.timeline or backup.timeline
    if target == backup.timeline:
        return Lineage.of(target)
    try:
        record = next(
            (r for r in host.backup_tool.timelines(chosen.stanza) if r.timeline == target), None
        )
        branches = host.backup_tool.history(record) if record is not None else None
    except BackupToolError as exc:
        log.warning("Timeline %s's history is unreadable (%s): WAL not checked", target, exc)
        return None
    if branches is None:
        log.warning("Timeline %s has no history in the archive: its WAL is not checked", target)
        return None
    return Lineage.of(target, branches)


def stopped_short(host: Host, timeline: int, wal_end: str) -> str | None:
    """Why the restore that created ``timeline`` did not reach ``wal_end``, or None when
    it did. Where recovery ended is the last line of the new timeline's history."""
    want = parse_segment_name(wal_end)
    if want is None:
        return None
    text = host.workload.timeline_history(timeline)
    try:
        branches = parse_history_file(text) if text is not None else ()
    except ValueError as exc:
        log.error("The history of timeline %s is unreadable: %s", timeline, exc)
        branches = ()
    if not branches:
        return f"where recovery ended cannot be read (timeline {timeline} history)"
    end = branches[-1]
    reached = segno_of_lsn(end.switch_lsn)
    if reached >= want[1]:
        return None
    return (
        f"recovery stopped at {end.switch_lsn} (WAL segment "
        f"{segment_name(end.parent, reached)}) short of the archived {wal_end}"
    )


def archive_gaps(host: Host, stanza: str) -> list[ChainProblem]:
    """Holes and empty objects in a stanza's archive (list-backups and status show them).
    Raises BackupToolError."""
    segments: list[ArchivedSegment] = host.backup_tool.archive_segments(stanza)
    return gaps(segments)


def own_archive(
    host: Host,
    stanzas: Sequence[StanzaInfo],
    timelines: Sequence[TimelineRecord],
    segments: Sequence[ArchivedSegment],
) -> tuple[list[ChainProblem], list[Window]]:
    """Holes and empty objects in this cluster's archive (listed once, with the
    timelines: ``BackupTool.info_and_archive``), and its recoverable windows; none
    without a stanza of its own. Given the listings, nothing here raises: an unreadable
    history or commit time is logged and shown as such."""
    own = next((s for s in stanzas if s.name == host.stanza_name and s.exists), None)
    if own is None:
        return [], []
    mine = [t for t in timelines if t.stanza == own.name]
    return gaps(segments), recoverable_windows(host, own, segments, mine)


def recoverable_windows(
    host: Host,
    stanza: StanzaInfo,
    segments: Sequence[ArchivedSegment] | None = None,
    timelines: Sequence[TimelineRecord] | None = None,
    unreadable: list[int] | None = None,
) -> list[Window]:
    """The recoverable windows of a stanza (core/window.py): its backups, its archived
    segments, each restore-created timeline's lineage (an unreadable history: that
    timeline on its own, logged) and the last commit read from the WAL. ``segments`` and
    ``timelines``: the stanza's, when the caller listed them already; ``unreadable``
    collects the timelines whose history could not be read.
    Raises BackupToolError when the archive cannot be listed."""
    if segments is None:
        segments = host.backup_tool.archive_segments(stanza.name)
    if timelines is None:
        timelines = host.backup_tool.timelines(stanza.name)
    lineages: dict[int, Lineage] = {}
    for record in timelines:
        try:
            lineages[record.timeline] = Lineage.of(
                record.timeline, host.backup_tool.history(record)
            )
        except BackupToolError as exc:
            log.warning("Timeline %s's history is unreadable (%s)", record.timeline, exc)
            if unreadable is not None:
                unreadable.append(record.timeline)
    return windows(
        stanza.name, stanza.backups, segments, lineages, host.backup_tool.last_commit_time
    )


def outside_windows(found: Sequence[Window], timeline: int, moment: datetime) -> str | None:
    """Why a time target is out of reach on ``timeline`` (naming its windows), or None
    when a window holds it or cannot tell (an unreadable latest end: logged, and
    PostgreSQL's own check stays)."""
    mine = [w for w in found if w.timeline == timeline]
    answers = [w.contains(moment) for w in mine]
    if any(answer is not False for answer in answers):
        if None in answers:
            log.warning("The recoverable window of timeline %s has no known end", timeline)
        return None
    shown = "; ".join(w.describe() for w in mine) or f"timeline {timeline}: none"
    return (
        f"{targets.describe_time(moment)} is outside the recoverable window ({shown}) "
        "(nothing was changed)"
    )
