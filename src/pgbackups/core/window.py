"""The recoverable window: per timeline, the earliest and the latest time a restore can
reach, and where the archive breaks (docs/behaviour/recoverable-window.md).

A time-target restore replays a backup, then archived WAL until the first commit (or
abort) record at or after the target; PostgreSQL refuses to promote when no such record
exists ("recovery ended before configured recovery target was reached") and refuses a
stop point before the backup's end. So, on one timeline:

- **earliest**: for the oldest finished backup whose WAL is all in the archive, the later
  of its end as pgBackRest records it (whole seconds: a restore target before it picks an
  older backup or none) and the last commit written before the backup's end LSN (its
  consistency point), read from the backup's own WAL: a target earlier than that commit
  would make recovery stop before the database is consistent, which PostgreSQL refuses.
  When that WAL cannot be read, the recorded end plus one second (pgBackRest takes the
  time after ``pg_backup_stop`` returned: the next whole second lies after it);
- **latest**: one microsecond before the last commit/abort record in the unbroken chain
  of archived WAL that starts at that backup, read from the segment itself
  (``pg_waldump``). With ``recovery_target_inclusive`` (the default) PostgreSQL stops
  *before* the first commit whose time is later than the target, and only there: so a
  target is reached only while a later commit exists in the archive, and that commit is
  not replayed (measured: a restore to the last commit's own time fails). The last commit
  itself is restored by ``restore-to-time=latest``. Not the object's modification time
  (an upper bound: a segment is pushed long after its last commit when idle) nor
  ``pg_stat_archiver`` (when a segment was archived, and only on the primary);
- a **gap** (a missing or empty segment) ends a window: the next backup after the gap
  starts a new one. Each gap is named.

Pure: the caller lists the backups and segments and supplies ``last_commit`` (the
``pgbackrest`` adapter's ``pg_waldump`` reading).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pgbackups.core.archive import (
    ArchivedSegment,
    ChainProblem,
    Lineage,
    follow,
    parse_segment_name,
    segment_name,
)
from pgbackups.core.host import BackupToolError
from pgbackups.core.ids import format_id
from pgbackups.core.repository import BackupRecord

log = logging.getLogger(__name__)

# How far back from the end of a chain the last commit is looked for (segments; each is
# fetched and read): an idle cluster's last segments hold only checkpoints and switches.
COMMIT_SEARCH_SEGMENTS = 8

# The last commit time of an archived segment (before an LSN, when one is given); None
# when it holds no commit or abort. Raises BackupToolError.
LastCommit = Callable[[ArchivedSegment, str | None], datetime | None]


@dataclass(frozen=True)
class Window:
    """One stretch of time a restore can reach on ``timeline``."""

    stanza: str
    timeline: int
    earliest: datetime  # aware UTC: see the module's docstring
    earliest_backup: str  # the backup id the window starts from
    # the last archived commit (aware UTC, to the microsecond): a time target before it
    # is reached, it is not; None when it could not be read (see latest_note)
    last_commit: datetime | None
    latest_segment: str  # the last segment of the unbroken chain
    latest_note: str = ""  # why latest is None, or that no transaction committed
    gap: ChainProblem | None = None  # the break that ends the window, if one does

    @property
    def latest(self) -> datetime | None:
        """The latest time target that is reached (PostgreSQL's clock is microseconds)."""
        return None if self.last_commit is None else self.last_commit - timedelta(microseconds=1)

    def contains(self, moment: datetime) -> bool | None:
        """Whether a time target of ``moment`` is reached; None when the latest end is
        unknown and ``moment`` is after the earliest."""
        if moment < self.earliest:
            return False
        if self.latest is None:
            return None if not self.latest_note.startswith(NO_COMMIT) else False
        return moment <= self.latest

    def describe(self) -> str:
        latest = _time(self.latest) if self.latest is not None else f"? ({self.latest_note})"
        text = (
            f"timeline {self.timeline}: {_time(self.earliest)} (backup {self.earliest_backup})"
            f" -> {latest} (before the last archived commit, in WAL {self.latest_segment})"
        )
        if self.latest is not None and self.latest < self.earliest:
            text += f"; {NO_COMMIT}: only the backup's end or 'latest' can be restored"
        if self.gap is not None:
            text += f"; then {self.gap.describe()}"
        return text

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "stanza": self.stanza,
            "timeline": self.timeline,
            "earliest": _time(self.earliest),
            "earliest-backup": self.earliest_backup,
            "latest": _time(self.latest) if self.latest is not None else None,
            "last-commit": _time(self.last_commit) if self.last_commit is not None else None,
            "latest-segment": self.latest_segment,
            "latest-note": self.latest_note or None,
            "gap": self.gap.describe() if self.gap is not None else None,
        }


NO_COMMIT = "no transaction committed after the backup"
RECOVERABLE = "recoverable window"


def status_summary(found: Sequence[Window]) -> str:
    """The newest window in a few words, for a unit's status message (the charm's leader):
    ``recoverable window <earliest> to <latest> on timeline <n>``, to the second and on
    the safe side of both ends (the earliest rounded up, the latest down: a restore to
    either second is reached); "" when there is no window. The whole list, gaps and
    older windows: list-backups."""
    if not found:
        return ""
    newest = max(found, key=lambda w: (w.timeline, w.earliest))
    earliest = newest.earliest
    if earliest.microsecond:
        earliest = earliest.replace(microsecond=0) + timedelta(seconds=1)
    latest = newest.latest
    if latest is None:
        return f"{RECOVERABLE} {format_id(earliest)} to ? on timeline {newest.timeline}"
    if latest < earliest:
        # Only the backup's end (or 'latest') is restorable: no time range to give.
        return (
            f"{RECOVERABLE} {format_id(earliest)} (no commit archived since) "
            f"on timeline {newest.timeline}"
        )
    return (
        f"{RECOVERABLE} {format_id(earliest)} to {format_id(latest.replace(microsecond=0))}"
        f" on timeline {newest.timeline}"
    )


def _time(moment: datetime | None) -> str:
    if moment is None:
        return "?"
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return format_id(moment)


def windows(
    stanza: str,
    backups: Sequence[BackupRecord],
    segments: Sequence[ArchivedSegment],
    lineages: Mapping[int, Lineage],
    last_commit: LastCommit,
) -> list[Window]:
    """Every window of ``stanza``, by timeline then time. ``lineages``: the timelines a
    recovery onto each timeline reads (from its ``.history``); a timeline not in it is
    taken on its own. A backup whose own WAL is not all archived starts no window."""
    timelines = {s.timeline for s in segments} | {b.timeline for b in backups}
    found: list[Window] = []
    for timeline in sorted(timelines):
        lineage = lineages.get(timeline) or Lineage.of(timeline)
        found += _timeline_windows(stanza, timeline, backups, segments, lineage, last_commit)
    return found


def _timeline_windows(  # noqa: PLR0917 - the pieces windows() assembled, once per timeline
    stanza: str,
    timeline: int,
    backups: Sequence[BackupRecord],
    segments: Sequence[ArchivedSegment],
    lineage: Lineage,
    last_commit: LastCommit,
) -> list[Window]:
    by_key = {(s.timeline, s.segno): s for s in segments}
    result: list[Window] = []
    covered = -1  # the last segment number already inside a window
    for backup in sorted(_usable(backups, stanza, lineage), key=lambda b: b.stop):
        start = parse_segment_name(backup.wal_start)
        stop = parse_segment_name(backup.wal_stop)
        if start is None or stop is None or stop[1] <= covered:
            continue
        chain = follow(segments, start[1], lineage)
        reached = parse_segment_name(chain.end) if chain.end else None
        if reached is None or reached[1] < stop[1]:
            continue  # its own WAL is not all there: it cannot be restored at all
        latest, note = _latest(reached[1], start[1], lineage, by_key, last_commit)
        problem = chain.problems[0] if chain.problems else None
        result.append(
            Window(
                stanza=stanza,
                timeline=timeline,
                earliest=_earliest(backup, start[1], stop[1], lineage, by_key, last_commit),
                earliest_backup=backup.backup_id,
                last_commit=latest,
                latest_segment=chain.end or "",
                latest_note=note,
                gap=problem,
            )
        )
        covered = reached[1]
    return result


def _usable(backups: Sequence[BackupRecord], stanza: str, lineage: Lineage) -> list[BackupRecord]:
    """Finished backups of ``stanza`` that a recovery onto ``lineage.target`` can start
    from: taken on the target or on an ancestor before the target branched off it."""
    usable = []
    for backup in backups:
        stop = parse_segment_name(backup.wal_stop)
        if backup.stanza != stanza or not backup.finished or stop is None:
            continue
        if backup.timeline in lineage.timelines_for(stop[1]):
            usable.append(backup)
    return usable


def _earliest(  # noqa: PLR0917 - the backup's segments and how to read them
    backup: BackupRecord,
    start: int,
    stop: int,
    lineage: Lineage,
    by_key: Mapping[tuple[int, int], ArchivedSegment],
    last_commit: LastCommit,
) -> datetime:
    """The first time target recovery from ``backup`` reaches (module docstring)."""
    for segno in range(stop, max(start, stop - COMMIT_SEARCH_SEGMENTS + 1) - 1, -1):
        segment = next(
            (by_key[(tl, segno)] for tl in lineage.timelines_for(segno) if (tl, segno) in by_key),
            None,
        )
        if segment is None:
            break
        try:
            moment = last_commit(segment, backup.lsn_stop)
        except BackupToolError as exc:
            log.warning("The backup %s's own WAL is unreadable: %s", backup.backup_id, exc)
            break
        if moment is not None:
            return max(backup.stop, moment)
        if segno == start:
            return backup.stop  # no commit in the backup's own WAL before its end
    return backup.stop + timedelta(seconds=1)


def _latest(
    end: int,
    start: int,
    lineage: Lineage,
    by_key: Mapping[tuple[int, int], ArchivedSegment],
    last_commit: LastCommit,
) -> tuple[datetime | None, str]:
    """The last commit time at or before segment ``end`` (looking back no further than
    ``start`` nor COMMIT_SEARCH_SEGMENTS), and a note when there is none or it is
    unknown."""
    for segno in range(end, max(start, end - COMMIT_SEARCH_SEGMENTS + 1) - 1, -1):
        segment = next(
            (by_key[(tl, segno)] for tl in lineage.timelines_for(segno) if (tl, segno) in by_key),
            None,
        )
        if segment is None:
            continue
        try:
            moment = last_commit(segment, None)
        except BackupToolError as exc:
            log.warning("The last commit of %s could not be read: %s", segment.name, exc)
            return None, f"{segment_name(segment.timeline, segno)} unreadable: {exc}"
        if moment is not None:
            return moment, ""
    if end - start + 1 <= COMMIT_SEARCH_SEGMENTS:
        return None, NO_COMMIT
    return None, f"no commit in the last {COMMIT_SEARCH_SEGMENTS} segments"
