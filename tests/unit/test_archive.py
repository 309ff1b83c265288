"""The archived WAL chain: names, lineage, holes and empty objects (core/archive.py)."""

from __future__ import annotations

import pytest

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
from pgbackups.core.repository import TimelineBranch


def seg(timeline: int, segno: int, size: int = 1000) -> ArchivedSegment:
    return ArchivedSegment(timeline, segno, size, f"archive/s/15-1/{segment_name(timeline, segno)}")


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("000000010000000000000003", (1, 3)),
        ("0000000A00000001000000FF", (10, 0x1FF)),
        ("000000010000000000000100", None),  # segment part past 0xFF
        ("000000000000000000000001", None),  # timeline 0 does not exist
        ("00000001000000000000000", None),
        ("000000010000000000000003.partial", None),
        ("00000002.history", None),
    ],
)
def test_segment_names(name: str, parsed: tuple[int, int] | None) -> None:
    assert parse_segment_name(name) == parsed
    if parsed is not None:
        assert segment_name(*parsed) == name


def test_segment_of_an_lsn() -> None:
    assert segno_of_lsn("0/3000028") == 3
    assert segno_of_lsn("1/FF000000") == 0x1FF


def test_a_whole_chain_reaches_the_last_segment() -> None:
    chain = follow([seg(1, n) for n in range(2, 7)], 2, Lineage.of(1))
    assert chain.complete
    assert (chain.start, chain.end, chain.last_archived) == (
        segment_name(1, 2),
        segment_name(1, 6),
        segment_name(1, 6),
    )


def test_a_hole_is_named_and_the_chain_ends_before_it() -> None:
    segments = [seg(1, n) for n in (2, 3, 5, 6)]
    chain = follow(segments, 2, Lineage.of(1))
    assert chain.problems == (ChainProblem(segment_name(1, 4), "missing"),)
    assert chain.end == segment_name(1, 3)
    assert chain.last_archived == segment_name(1, 6)
    assert "000000010000000000000004 is missing" in chain.problems[0].describe()


def test_an_empty_object_is_a_problem_even_at_the_end() -> None:
    segments = [seg(1, 2), seg(1, 3), seg(1, 4, size=0)]
    chain = follow(segments, 2, Lineage.of(1))
    assert chain.problems == (ChainProblem(segment_name(1, 4), "empty"),)
    assert chain.end == segment_name(1, 3)


def test_no_segment_at_all_from_the_start() -> None:
    chain = follow([seg(1, 9)], 10, Lineage.of(1))
    assert not chain.complete
    assert chain.end is None
    assert chain.problems[0].segment == segment_name(1, 10)


def test_an_explicit_end_beyond_the_archive_is_missing() -> None:
    chain = follow([seg(1, 2), seg(1, 3)], 2, Lineage.of(1), end_segno=4)
    assert chain.problems == (ChainProblem(segment_name(1, 4), "missing"),)


def test_lineage_follows_the_parent_up_to_its_switch_segment() -> None:
    # Timeline 2 branched from 1 at 0/5000100: segments 2..5 on 1, 5.. on 2.
    lineage = Lineage.of(2, (TimelineBranch(1, "0/5000100"),))
    assert lineage.timelines_for(4) == [1]
    assert lineage.timelines_for(5) == [2, 1]
    assert lineage.timelines_for(6) == [2]
    # Timeline 1 went on to segment 8 after the branch: not part of timeline 2's chain.
    segments = [seg(1, n) for n in range(2, 9)] + [seg(2, n) for n in range(5, 8)]
    chain = follow(segments, 2, lineage)
    assert chain.complete
    assert chain.end == segment_name(2, 7)
    assert chain.last_archived == segment_name(2, 7)


def test_the_newest_timeline_copy_is_preferred_even_when_empty() -> None:
    lineage = Lineage.of(2, (TimelineBranch(1, "0/5000100"),))
    segments = [seg(1, n) for n in range(2, 6)] + [seg(2, 5, size=0), seg(2, 6)]
    chain = follow(segments, 2, lineage)
    assert chain.problems == (ChainProblem(segment_name(2, 5), "empty"),)


def test_gaps_per_timeline() -> None:
    segments = [seg(1, 1), seg(1, 2, size=0), seg(1, 4), seg(2, 4), seg(2, 5)]
    assert gaps(segments) == [
        ChainProblem(segment_name(1, 2), "empty"),
        ChainProblem(segment_name(1, 3), "missing"),
    ]
    assert gaps([]) == []
