"""Is WAL archiving working on the primary? The pure decision update-status makes.

The facts come from the primary's PostgreSQL (``pg_stat_archiver``, and the ``.ready``
files of ``pg_wal/archive_status``: segments PostgreSQL has not had archived yet) and from
pgBackRest's asynchronous spool, where pgBackRest 2.45 announces a segment it dropped
because the queue exceeded ``archive-push-queue-max``: it writes that segment's
``archive/<stanza>/out/<segment>.ok`` with ``0`` and the warning ``dropped WAL file
'<segment>' because archive queue exceeded <size>`` (seen on the real program), tells
PostgreSQL the segment was archived, and removes the ``.ok`` at its next run.

- **failing**: segments wait and the last attempt failed (pgBackRest's async push gives
  up after ``archive-timeout``, 60 s): since the oldest waiting segment was ready.
- **lagging**: nothing failed, but the oldest waiting segment waits longer than the
  threshold (S3 slower than the WAL written).
- **dropped**: WAL was thrown away; no restore crosses the hole until a newer backup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pgbackups.core import messages as msg
from pgbackups.core.archive import parse_segment_name, segment_name
from pgbackups.core.ids import format_id

_DROPPED_RE = re.compile(r"dropped WAL file '([0-9A-F]{24})' because archive queue exceeded")


@dataclass(frozen=True)
class ArchiverStats:
    """One look at the primary's archiver (all times aware, UTC)."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    ready_count: int  # segments waiting to be archived
    oldest_ready_wal: str | None
    oldest_ready_time: datetime | None  # when the oldest waiting segment became ready
    dropped: tuple[str, ...] = ()  # segments pgBackRest's spool says it dropped


def dropped_segments(ok_files: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The segments named by drop notices among spool ``(name, text)`` ``.ok`` files."""
    found = {m.group(1) for _, text in ok_files for m in _DROPPED_RE.finditer(text)}
    return tuple(sorted(found))


def archiving_problem(stats: ArchiverStats, *, now: datetime, lag_threshold: int) -> str | None:
    """The failing or lagging message, or None when archiving keeps up."""
    if stats.ready_count <= 0:
        return None
    since = stats.oldest_ready_time or stats.last_failed_time or now
    waiting = f"{stats.ready_count} WAL segment{'s' if stats.ready_count != 1 else ''} waiting"
    failing = stats.last_failed_time is not None and (
        stats.last_archived_time is None or stats.last_failed_time > stats.last_archived_time
    )
    if failing:
        assert stats.last_failed_time is not None
        return (
            f"{msg.ARCHIVING_FAILING} since {format_id(since)}, check your S3 settings: "
            f"{waiting}, {stats.last_failed_wal or 'a segment'} failed at "
            f"{format_id(stats.last_failed_time)}"
        )
    if now - since > timedelta(seconds=lag_threshold):
        return (
            f"{msg.ARCHIVING_LAGGING} since {format_id(since)}: {waiting}, "
            f"oldest {stats.oldest_ready_wal or '?'} (threshold {lag_threshold}s)"
        )
    return None


# --- the holes dropped WAL left, as the unit bag keeps them ------------------------------


@dataclass(frozen=True, order=True)
class Hole:
    """Missing segments ``first..last`` (numbers) of one timeline."""

    timeline: int
    first: int
    last: int

    def __str__(self) -> str:
        first, last = (
            segment_name(self.timeline, self.first),
            segment_name(self.timeline, self.last),
        )
        return first if first == last else f"{first}..{last}"


def holes_of(names: Iterable[str]) -> tuple[Hole, ...]:
    """Consecutive segment names folded into holes (names that are not segments ignored)."""
    parsed = sorted(p for p in (parse_segment_name(n) for n in names) if p is not None)
    holes: list[Hole] = []
    for timeline, segno in parsed:
        if holes and holes[-1].timeline == timeline and holes[-1].last + 1 >= segno:
            last = holes[-1]
            holes[-1] = Hole(timeline, last.first, max(last.last, segno))
        else:
            holes.append(Hole(timeline, segno, segno))
    return tuple(holes)


def merge(*groups: Sequence[Hole]) -> tuple[Hole, ...]:
    names = [
        segment_name(h.timeline, s) for g in groups for h in g for s in range(h.first, h.last + 1)
    ]
    return holes_of(names)


def format_holes(holes: Sequence[Hole]) -> str:
    return ",".join(str(h) for h in holes)


def parse_holes(text: str) -> tuple[Hole, ...]:
    """The unit bag's form back (``A..B,C``); anything unreadable is dropped."""
    names: list[str] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("..")
        a, b = parse_segment_name(first), parse_segment_name(last or first)
        if a is None or b is None or a[0] != b[0] or b[1] < a[1] or b[1] - a[1] > 1_000_000:
            continue
        names += [segment_name(a[0], s) for s in range(a[1], b[1] + 1)]
    return holes_of(names)


def covered_by(holes: Sequence[Hole], backup_wal_starts: Iterable[str]) -> bool:
    """True when a backup starts after every hole (same timeline, later segment, or a
    later timeline): restores from it never cross a hole."""
    newest = max(holes, default=None, key=lambda h: (h.timeline, h.last))
    if newest is None:
        return True
    for wal in backup_wal_starts:
        parsed = parse_segment_name(wal)
        if parsed is not None and (parsed[0], parsed[1]) > (newest.timeline, newest.last):
            return True
    return False


SHOWN_HOLES = 3  # a status message stays short; the unit bag keeps every hole


def dropped_message(holes: Sequence[Hole]) -> str:
    shown = format_holes(holes[:SHOWN_HOLES])
    more = f" and {len(holes) - SHOWN_HOLES} more" if len(holes) > SHOWN_HOLES else ""
    return f"{msg.WAL_DROPPED}, take a full backup: no restore across {shown}{more}"
