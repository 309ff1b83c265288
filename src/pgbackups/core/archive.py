"""The archived WAL as a chain of segments: what a restore needs, and where it breaks.

pgBackRest's ``info`` gives only the lowest and highest archived segment. Between them a
segment can be missing (WAL dropped over the async queue cap, a lost object) or empty (an
S3 server that acknowledged a PUT it never wrote), and PostgreSQL's recovery then simply
stops there: a restore to ``latest`` "succeeds" with whatever came before the hole. So
the chain is checked segment by segment, on the timeline lineage a restore would follow,
before a restore starts and again once it has ended (docs/reliability.md).

Pure functions over names and sizes; the ``pgbackrest`` adapter lists the objects.
Segments are numbered as PostgreSQL does with its default 16 MiB segment size, which
is the only size this project creates clusters with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pgbackups.core.repository import TimelineBranch, TimelineRecord, lsn_value

SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENTS_PER_XLOGID = 0x1_0000_0000 // SEGMENT_SIZE  # 256

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


@dataclass(frozen=True)
class ArchivedSegment:
    """One WAL segment object in the repository's archive."""

    timeline: int
    segno: int
    size: int  # bytes of the stored (compressed) object
    key: str  # repository path, for messages

    @property
    def name(self) -> str:
        return segment_name(self.timeline, self.segno)


@dataclass(frozen=True)
class ArchiveListing:
    """One listing of a stanza's ``archive/<stanza>/``: its restores' timelines (from the
    ``.history`` files) and its WAL segment objects, sorted."""

    timelines: tuple[TimelineRecord, ...]
    segments: tuple[ArchivedSegment, ...]


@dataclass(frozen=True)
class ChainProblem:
    """A segment a restore needs that the archive cannot give."""

    segment: str  # the WAL file name PostgreSQL would ask for
    kind: str  # "missing" | "empty"

    def describe(self) -> str:
        if self.kind == "empty":
            return f"WAL segment {self.segment} is empty in the repository"
        return f"WAL segment {self.segment} is missing from the repository"


@dataclass(frozen=True)
class Chain:
    """The result of following the archive from a start segment."""

    start: str  # first segment needed
    end: str | None  # last segment present before the first problem (None: not even start)
    last_archived: str | None  # the highest segment of the lineage in the archive
    problems: tuple[ChainProblem, ...]

    @property
    def complete(self) -> bool:
        return not self.problems


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``000000020000000100000003`` → (timeline 2, segment number 0x103); None otherwise."""
    match = _SEGMENT_RE.match(name)
    if match is None:
        return None
    timeline, log, seg = (int(part, 16) for part in match.groups())
    if seg >= SEGMENTS_PER_XLOGID or timeline == 0:
        return None
    return timeline, log * SEGMENTS_PER_XLOGID + seg


def segment_name(timeline: int, segno: int) -> str:
    log, seg = divmod(segno, SEGMENTS_PER_XLOGID)
    return f"{timeline:08X}{log:08X}{seg:08X}"


def segno_of_lsn(lsn: str) -> int:
    """The number of the segment holding ``lsn`` (X/Y)."""
    return lsn_value(lsn) // SEGMENT_SIZE


@dataclass(frozen=True)
class Lineage:
    """The timelines a recovery onto ``target`` reads, each with the segments it is valid
    for: from the segment where it branched off its parent to the one where it was left
    (``None``: the target timeline itself, valid to the end)."""

    target: int
    ranges: tuple[tuple[int, int, int | None], ...]  # (timeline, first, last), newest first

    @classmethod
    def of(cls, target: int, branches: Sequence[TimelineBranch] = ()) -> Lineage:
        """``branches``: the target timeline's ``.history`` lines (its ancestors, oldest
        first), as :func:`pgbackups.core.repository.parse_history_file` gives them."""
        ranges: list[tuple[int, int, int | None]] = []
        first = 0
        for branch in branches:
            last = segno_of_lsn(branch.switch_lsn)
            ranges.append((branch.parent, first, last))
            first = last
        ranges.append((target, first, None))
        return cls(target, tuple(reversed(ranges)))

    def timelines_for(self, segno: int) -> list[int]:
        """The timelines whose copy of ``segno`` recovery may read, preferred first."""
        return [
            tl
            for tl, first, last in self.ranges
            if first <= segno and (last is None or segno <= last)
        ]


def follow(
    segments: Iterable[ArchivedSegment],
    start_segno: int,
    lineage: Lineage,
    *,
    end_segno: int | None = None,
) -> Chain:
    """Walk the archive from ``start_segno`` to ``end_segno`` (default: the highest
    segment of the lineage) as recovery would, preferring the newest valid timeline, and
    report every segment it could not read. A segment whose preferred copy is empty is a
    problem even when an older timeline has one: recovery would not look further."""
    by_key: dict[tuple[int, int], ArchivedSegment] = {}
    for segment in segments:
        by_key[(segment.timeline, segment.segno)] = segment
    lineage_segnos = [segno for (tl, segno) in by_key if tl in lineage.timelines_for(segno)]
    highest = max(lineage_segnos, default=None)
    last = end_segno if end_segno is not None else highest
    start_name = segment_name(lineage.timelines_for(start_segno)[-1], start_segno)
    last_archived = (
        None if highest is None else segment_name(lineage.timelines_for(highest)[0], highest)
    )
    if last is None or last < start_segno:
        problem = ChainProblem(start_name, "missing")
        return Chain(start_name, None, last_archived, (problem,))
    problems: list[ChainProblem] = []
    reached: str | None = None
    for segno in range(start_segno, last + 1):
        candidates = lineage.timelines_for(segno)
        found = next((by_key[(tl, segno)] for tl in candidates if (tl, segno) in by_key), None)
        if found is None:
            problems.append(ChainProblem(segment_name(candidates[-1], segno), "missing"))
        elif found.size <= 0:
            problems.append(ChainProblem(found.name, "empty"))
        elif not problems:
            reached = found.name
    return Chain(start_name, reached, last_archived, tuple(problems))


def needed_by(wal_start: str, wal_stop: str) -> list[str]:
    """The segment names from ``wal_start`` to ``wal_stop`` (a backup's own WAL, on its
    timeline); [] when either is not a segment name."""
    first, last = parse_segment_name(wal_start), parse_segment_name(wal_stop)
    if first is None or last is None:
        return []
    return [segment_name(first[0], segno) for segno in range(first[1], last[1] + 1)]


def gaps(segments: Iterable[ArchivedSegment]) -> list[ChainProblem]:
    """Every hole and empty object between the lowest and highest segment of each
    timeline, for ``list-backups``/``status`` (no lineage: each timeline on its own)."""
    per_timeline: dict[int, dict[int, ArchivedSegment]] = {}
    for segment in segments:
        per_timeline.setdefault(segment.timeline, {})[segment.segno] = segment
    found: list[ChainProblem] = []
    for timeline in sorted(per_timeline):
        present = per_timeline[timeline]
        for segno in range(min(present), max(present) + 1):
            stored = present.get(segno)
            if stored is None:
                found.append(ChainProblem(segment_name(timeline, segno), "missing"))
            elif stored.size <= 0:
                found.append(ChainProblem(stored.name, "empty"))
    return found
