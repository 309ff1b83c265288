"""Restore targets (targets.py): time formats, and the choice of backup set, type, target
and timeline for every shape of request."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fakes import STANZA, backup, timeline

from pgbackups.core import targets
from pgbackups.core.repository import TimelineBranch, TimelineRecord
from pgbackups.core.targets import Chosen, Request, choose_target, parse_request, parse_time

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=UTC)
B1 = "20261128-100000F"  # 10:00-10:05, timeline 1
B1_ID = "2026-11-28T10:00:00Z"


def at(hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> datetime:
    return datetime(2026, 11, 28, hh, mm, ss, us, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Formats

ACCEPTED = [
    ("2026-11-28 14:00:00", at(14)),
    ("2026-11-28 14:00:00+00", at(14)),
    ("2026-11-28 14:00:00-00", at(14)),
    ("2026-11-28 16:00:00+02", at(14)),
    ("2026-11-28 16:30:00+0230", at(14)),
    ("2026-11-28 16:30:00+02:30", at(14)),
    ("2026-11-28 09:00:00-05", at(14)),
    ("2026-11-28 14:00:00.5", at(14, us=500000)),
    ("2026-11-28 14:00:00.123456+00", at(14, us=123456)),
    ("2026-11-28 14:00:00.001+00", at(14, us=1000)),
    ("2026-11-28T14:00:00Z", at(14)),
    ("2026-11-28T14:00:00z", at(14)),
    ("2026-11-28T14:00:00", at(14)),
    ("2026-11-28T16:00:00+02:00", at(14)),
    ("2026-11-28T16:00:00.25+02:00", at(14, us=250000)),
    ("2026-11-28T14:00:00.123456Z", at(14, us=123456)),
    ("  2026-11-28 14:00:00  ", at(14)),
    ("2026-11-29 00:30:00+10:30", at(14)),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_time_formats(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


REJECTED = [
    "",
    "yesterday",
    "2026-11-28",
    "2026-11-28 14:00",
    "14:00:00",
    "28/11/2026 14:00:00",
    "2026-11-28  14:00:00",
    "2026-11-28 14:00:00 +00",
    "2026-11-28 14:00:00.1234567",
    "2026-11-28 14:00:00+2",
    "2026-11-28 14:00:00+123",
    "2026-11-28 14:00:00 UTC",
    "2026-13-28 14:00:00",
    "2026-02-30 14:00:00",
    "2026-11-28 24:00:00",
    "2026-11-28 14:60:00",
    "2026-11-28 14:00:00+16",
    "2026-11-28 14:00:00+02:60",
    "2026-11-28T14:00:00ZZ",
    "20261128-140000F",
    "latest",
]


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_time_formats(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_time(text)
    message = str(info.value)
    assert message.startswith(f"Bad restore-to-time format: {text.strip()!r}")
    assert "YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM]]" in message
    assert "2026-11-28T14:00:00Z" in message
    assert "without a zone is UTC" in message


def test_pgbackrest_time_form() -> None:
    assert targets.pgbackrest_time(at(14)) == "2026-11-28 14:00:00.000000+00"
    moment = parse_time("2026-11-28T16:00:00.25+02:00")
    assert targets.pgbackrest_time(moment) == "2026-11-28 14:00:00.250000+00"


def test_request_forms() -> None:
    assert parse_request(" x ", "", NOW) == Request("x", latest=False, time=None)
    assert parse_request("", "LATEST", NOW) == Request("", latest=True, time=None)
    assert parse_request("", "2026-11-28 14:00:00", NOW) == Request("", False, at(14))
    assert parse_request("", "2026-11-28 15:00:00", NOW) == Request("", False, NOW)


def test_a_time_in_the_future_is_refused() -> None:
    message = parse_request("", "2026-11-28 15:00:01", NOW)
    assert message == (
        "restore-to-time is in the future: 2026-11-28T15:00:01Z (now 2026-11-28T15:00:00Z)"
    )
    assert isinstance(parse_request(B1_ID, "2027-11-28 14:00:00", NOW), str)


def test_a_bad_format_is_refused() -> None:
    message = parse_request(B1_ID, "soon", NOW)
    assert isinstance(message, str)
    assert message.startswith("Bad restore-to-time format: 'soon'")


# ---------------------------------------------------------------------------
# The choice


def request(backup_id: str = "", to_time: str = "") -> Request:
    parsed = parse_request(backup_id, to_time, NOW)
    assert isinstance(parsed, Request), parsed
    return parsed


def choose(backups: list, timelines: list, backup_id: str = "", to_time: str = "") -> Chosen | str:  # type: ignore[type-arg]
    return choose_target(backups, timelines, request(backup_id, to_time), own_stanza=STANZA)


BACKUPS = [
    backup(B1),  # ends 10:05, timeline 1
    backup("20261128-110000F", error=True),  # failed: never chosen
    backup("20261128-120000F", timeline=2),  # ends 12:05, timeline 2
]
TIMELINES = [timeline(2, at(11, 30)), timeline(3, at(13))]


def test_backup_alone_is_the_end_of_that_backup() -> None:
    assert choose(BACKUPS, TIMELINES, B1_ID) == Chosen(
        STANZA, B1, "immediate", description=f"the end of backup {B1_ID}"
    )


def test_backup_and_time_replays_that_backups_timeline() -> None:
    chosen = choose(BACKUPS, TIMELINES, B1_ID, "2026-11-28 10:30:00")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.type, chosen.target, chosen.timeline) == (
        B1,
        "time",
        "2026-11-28 10:30:00.000000+00",
        1,
    )
    assert chosen.restore_to_time == "2026-11-28 10:30:00.000000+00"


def test_backup_and_latest_is_all_of_its_timeline() -> None:
    chosen = choose(BACKUPS, TIMELINES, "20261128-120000F", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.type, chosen.target, chosen.timeline) == (
        "20261128-120000F",
        "default",
        None,
        2,
    )
    assert chosen.restore_to_time == "latest"


def test_backup_and_a_time_before_its_end_is_refused() -> None:
    assert choose(BACKUPS, TIMELINES, B1_ID, "2026-11-28 10:04:59") == (
        "restore-to-time is before the end of the backup: 2026-11-28T10:04:59Z is before "
        "backup 2026-11-28T10:00:00Z ended (2026-11-28T10:05:00Z)"
    )


@pytest.mark.parametrize(
    ("to_time", "label", "tl"),
    [
        ("2026-11-28 10:05:00", B1, 1),  # exactly the end of b1
        ("2026-11-28 11:29:59", B1, 1),  # before timeline 2 began
        ("2026-11-28 11:30:00", B1, 2),  # the start of timeline 2: from b1 onto timeline 2
        ("2026-11-28 12:04:59", B1, 2),  # the backup on timeline 2 has not ended yet
        ("2026-11-28 12:05:00", "20261128-120000F", 2),
        ("2026-11-28 12:59:59", "20261128-120000F", 2),
        ("2026-11-28 13:00:00", "20261128-120000F", 3),  # timeline 3 from the newest base
        ("2026-11-28 15:00:00", "20261128-120000F", 3),
    ],
)
def test_time_alone_takes_the_nearest_point(to_time: str, label: str, tl: int) -> None:
    chosen = choose(BACKUPS, TIMELINES, "", to_time)
    assert isinstance(chosen, Chosen)
    assert (chosen.stanza, chosen.label, chosen.type, chosen.timeline) == (
        STANZA,
        label,
        "time",
        tl,
    )
    assert chosen.target == parse_time(to_time).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def test_time_before_the_first_backup_ended_is_refused() -> None:
    assert choose(BACKUPS, TIMELINES, "", "2026-11-28 10:04:00") == (
        "restore-to-time is before the first backup ended: 2026-11-28T10:04:00Z is before "
        "backup 2026-11-28T10:00:00Z ended (2026-11-28T10:05:00Z)"
    )


def test_no_finished_backup() -> None:
    assert choose([backup(B1, error=True)], [], "", "latest") == targets.NO_BACKUPS
    assert choose([], [], "", "2026-11-28 14:00:00") == targets.NO_BACKUPS


def test_latest_alone_needs_a_backup_on_the_newest_timeline() -> None:
    assert choose(BACKUPS, TIMELINES, "", "latest") == (
        "There is no base backup created from the latest timeline: timeline 3; take a backup first"
    )
    with_base = [*BACKUPS, backup("20261128-140000F", timeline=3)]
    chosen = choose(with_base, TIMELINES, "", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.type, chosen.target, chosen.timeline) == (
        "20261128-140000F",
        "default",
        None,
        3,
    )


def test_timeline_row_needs_a_time() -> None:
    assert choose(BACKUPS, TIMELINES, "2026-11-28T11:30:00Z") == (
        "Cannot restore to the timeline without restore-to-time parameter"
    )


def test_timeline_row_with_latest_and_with_a_time() -> None:
    chosen = choose(BACKUPS, TIMELINES, "2026-11-28T11:30:00Z", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.type, chosen.timeline) == (B1, "default", 2)
    chosen = choose(BACKUPS, TIMELINES, "2026-11-28T13:00:00Z", "2026-11-28 14:00:00+00")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.type, chosen.timeline) == ("20261128-120000F", "time", 3)


def test_timeline_row_with_a_time_before_it_began() -> None:
    assert choose(BACKUPS, TIMELINES, "2026-11-28T13:00:00Z", "2026-11-28 12:59:00") == (
        "restore-to-time is before the timeline began: 2026-11-28T12:59:00Z is before "
        "timeline 3 began (2026-11-28T13:00:00Z)"
    )


def test_timeline_row_without_a_base_backup() -> None:
    rows = [timeline(2, at(9))]
    assert choose(BACKUPS, rows, "2026-11-28T09:00:00Z", "latest") == (
        "There is no backup to restore the timeline from: timeline 2"
    )


def test_unknown_and_failed_ids() -> None:
    assert choose(BACKUPS, TIMELINES, "2026-11-28T09:00:00Z") == (
        "Invalid backup-id: 2026-11-28T09:00:00Z"
    )
    assert choose(BACKUPS, TIMELINES, "20261128-110000F") == "Invalid backup-id: 20261128-110000F"
    assert choose(BACKUPS, TIMELINES, "soon") == "Invalid backup-id: soon"


def test_a_backup_wins_over_a_timeline_of_the_same_second() -> None:
    rows = [timeline(2, at(10))]
    chosen = choose(BACKUPS, rows, B1_ID)
    assert isinstance(chosen, Chosen)
    assert chosen.type == "immediate"


# ---------------------------------------------------------------------------
# Ten and more timelines: numbers, never strings


def many() -> tuple[list, list]:  # type: ignore[type-arg]
    """Timeline n (2..12) begins at 10:00 + 10n minutes; backups on 1, 9 and 10."""
    rows = [timeline(n, at(10) + timedelta(minutes=10 * n)) for n in range(2, 13)]
    found = [
        backup("20261128-095000F", timeline=1),  # ends 09:55
        backup("20261128-113100F", timeline=9),  # ends 11:36
        backup("20261128-114100F", timeline=10),  # ends 11:46
    ]
    return found, rows


def test_latest_with_twelve_timelines_is_timeline_12() -> None:
    found, rows = many()
    assert choose(found, rows, "", "latest") == (
        "There is no base backup created from the latest timeline: timeline 12; take a backup first"
    )
    found.append(backup("20261128-120100F", timeline=12))
    chosen = choose(found, rows, "", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.timeline) == ("20261128-120100F", 12)


def test_latest_picks_timeline_10_over_9() -> None:
    found, rows = many()
    rows = [r for r in rows if r.timeline <= 10]
    chosen = choose(found, rows, "", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.timeline) == ("20261128-114100F", 10)


def test_same_moment_prefers_the_higher_timeline_number() -> None:
    rows = [timeline(9, at(10, 30)), timeline(10, at(10, 30))]
    chosen = choose([backup(B1)], rows, "", "2026-11-28 10:40:00")
    assert isinstance(chosen, Chosen)
    assert chosen.timeline == 10


@pytest.mark.parametrize(
    ("to_time", "label", "tl"),
    [
        ("2026-11-28 11:29:59", "20261128-095000F", 8),
        ("2026-11-28 11:35:00", "20261128-095000F", 9),
        ("2026-11-28 11:36:00", "20261128-113100F", 9),
        ("2026-11-28 11:40:00", "20261128-113100F", 10),
        ("2026-11-28 11:46:00", "20261128-114100F", 10),
        ("2026-11-28 11:50:00", "20261128-114100F", 11),
        ("2026-11-28 12:30:00", "20261128-114100F", 12),
    ],
)
def test_nearest_with_many_timelines(to_time: str, label: str, tl: int) -> None:
    found, rows = many()
    chosen = choose(found, rows, "", to_time)
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.timeline) == (label, tl)


# ---------------------------------------------------------------------------
# Stanzas


def test_time_alone_uses_the_only_stanza_with_backups() -> None:
    found = [backup(B1, stanza="old.main")]
    chosen = choose(found, [], "", "latest")
    assert isinstance(chosen, Chosen)
    assert (chosen.stanza, chosen.label, chosen.timeline) == ("old.main", B1, 1)
    chosen = choose(found, [], "", "2026-11-28 11:00:00")
    assert isinstance(chosen, Chosen)
    assert chosen.stanza == "old.main"


def test_time_alone_with_several_foreign_stanzas_needs_an_id() -> None:
    found = [backup(B1, stanza="a.one"), backup(B1, stanza="b.two")]
    assert choose(found, [], "", "2026-11-28 11:00:00") == (
        "The repository holds backups of several clusters; give a backup-id (stanzas: a.one, b.two)"
    )


def test_own_stanza_is_preferred_for_time_alone() -> None:
    found = [backup(B1, stanza="old.main"), backup("20261128-090000F")]
    chosen = choose(found, [timeline(2, at(11), stanza="old.main")], "", "2026-11-28 12:00:00")
    assert isinstance(chosen, Chosen)
    assert (chosen.stanza, chosen.label, chosen.timeline) == (STANZA, "20261128-090000F", 1)


# ---------------------------------------------------------------------------
# The base backup of a timeline follows its .history file (parents and switch LSNs)

# Timeline 1: b1 (10:00-10:05, stops at 0/3000100), then b2 (11:00-11:05, 0/7000100).
# At 11:30 a restore of b1 to 10:30 (WAL position 0/5000000) made timeline 2: b2, although
# older than timeline 2, is not on its path, and PostgreSQL refuses to start from it.
B2_AFTER_BRANCH = "20261128-110000F"
BRANCHED = [
    replace(backup(B1), lsn_stop="0/3000100"),
    replace(backup(B2_AFTER_BRANCH), lsn_stop="0/7000100"),
]
TL2_AT_1130 = [timeline(2, at(11, 30))]
TL2_HISTORY = (TimelineBranch(1, "0/5000000"),)


def choose_with(
    histories: dict[int, tuple[TimelineBranch, ...] | None], backup_id: str, to_time: str
) -> Chosen | str:
    asked: list[int] = []

    def ancestry(row: TimelineRecord) -> tuple[TimelineBranch, ...] | None:
        asked.append(row.timeline)
        return histories.get(row.timeline)

    request = parse_request(backup_id, to_time, NOW)
    assert isinstance(request, Request)
    chosen = choose_target(BRANCHED, TL2_AT_1130, request, own_stanza=STANZA, ancestry=ancestry)
    assert asked == [2], "only the timeline whose base is needed is read"
    return chosen


@pytest.mark.parametrize(
    ("backup_id", "to_time"),
    [("2026-11-28T11:30:00Z", "latest"), ("", "2026-11-28 12:00:00")],
    ids=["timeline-row", "nearest-point"],
)
def test_a_backup_after_the_branch_point_is_not_a_base(backup_id: str, to_time: str) -> None:
    chosen = choose_with({2: TL2_HISTORY}, backup_id, to_time)
    assert isinstance(chosen, Chosen)
    assert (chosen.label, chosen.timeline) == (B1, 2)


def test_without_the_history_file_timestamps_decide() -> None:
    chosen = choose_with({2: None}, "2026-11-28T11:30:00Z", "latest")
    assert isinstance(chosen, Chosen)
    assert chosen.label == B2_AFTER_BRANCH, "the documented fallback (docs/restore.md)"


def test_a_timeline_that_is_not_a_parent_gives_no_base() -> None:
    # Timeline 2 branched from a timeline 7 that holds none of these backups.
    chosen = choose_with({2: (TimelineBranch(7, "0/9000000"),)}, "2026-11-28T11:30:00Z", "latest")
    assert chosen == "There is no backup to restore the timeline from: timeline 2"


def test_a_deeper_history_checks_each_parent_at_its_own_switch_point() -> None:
    # 1 left at 0/5000000 for 2, 2 left at 0/8000000 for 3: a timeline-2 backup that
    # stopped at 0/7000000 is on timeline 3's path, the timeline-1 b2 (0/7000100) is not.
    tl2_backup = replace(backup("20261128-120000F", timeline=2), lsn_stop="0/7000000")
    branches = (TimelineBranch(1, "0/5000000"), TimelineBranch(2, "0/8000000"))
    on_path = [targets._on_path(b, 3, branches) for b in (*BRANCHED, tl2_backup)]
    assert on_path == [True, False, True]
    assert not targets._on_path(replace(BRANCHED[0], lsn_stop=""), 3, branches), "no guessing"
