"""The recoverable window (core/window.py, docs/behaviour/recoverable-window.md): its ends,
a gap that ends it and the next backup that starts another, a timeline followed through
its history, and a restore to a time outside it refused before anything changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from fakes import STANZA, FakeHost, backup, stanza_info

from pgbackups.core.archive import ArchivedSegment, Lineage, parse_segment_name
from pgbackups.core.handlers.restore import on_restore
from pgbackups.core.host import BackupToolError, UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults
from pgbackups.core.repository import BackupRecord, TimelineBranch
from pgbackups.core.window import NO_COMMIT, Window, status_summary, windows

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def seg(name: str, size: int = 100) -> ArchivedSegment:
    timeline, segno = parse_segment_name(name) or (0, 0)
    return ArchivedSegment(timeline, segno, size, f"archive/{STANZA}/15-1/{name}-x.zst")


def on(label: str, first: str, last: str, timeline: int = 1) -> BackupRecord:
    return replace(backup(label, timeline=timeline), wal_start=first, wal_stop=last)


def commits(
    table: dict[str, datetime | None], before: dict[str, datetime | None] | None = None
) -> object:
    """Reads the last commit of a segment from ``table``; before a backup's end LSN from
    ``before`` (none by default)."""

    def read(segment: ArchivedSegment, before_lsn: str | None) -> datetime | None:
        if before_lsn is not None:
            return (before or {}).get(segment.name)
        if segment.name not in table:
            raise BackupToolError(f"pg_waldump {segment.name}: no such file")
        return table[segment.name]

    return read


def test_one_backup_to_the_last_commit_of_the_archive() -> None:
    b = on("20261128-100000F", "000000010000000000000002", "000000010000000000000003")
    segments = [seg(f"00000001000000000000000{n}") for n in (2, 3, 4, 5)]
    # The last segment holds no commit (a switch on an idle cluster): the one before does.
    last = T0 + timedelta(minutes=20, microseconds=250)
    read = commits({"000000010000000000000005": None, "000000010000000000000004": last})
    (window,) = windows(STANZA, [b], segments, {}, read)  # type: ignore[arg-type]
    assert window.earliest == b.stop  # no commit in the backup's WAL after its end second
    assert window.last_commit == last
    assert window.latest == last - timedelta(microseconds=1)
    assert window.latest_segment == "000000010000000000000005"
    assert window.gap is None
    assert window.contains(b.stop - timedelta(microseconds=1)) is False
    assert window.contains(window.earliest) is True
    # PostgreSQL stops before the first commit later than the target: the last commit's
    # own time is never reached by a time target
    assert window.contains(last - timedelta(microseconds=1)) is True
    assert window.contains(last) is False


def test_a_gap_ends_the_window_and_the_next_backup_starts_another() -> None:
    first = on("20261128-100000F", "000000010000000000000002", "000000010000000000000002")
    second = on("20261128-120000F", "000000010000000000000007", "000000010000000000000007")
    segments = [seg(f"0000000100000000000000{n:02X}") for n in (2, 3, 4, 6, 7, 8)]
    read = commits(
        {
            "000000010000000000000004": T0 + timedelta(minutes=30),
            "000000010000000000000008": T0 + timedelta(hours=3),
        }
    )
    one, two = windows(STANZA, [first, second], segments, {}, read)  # type: ignore[arg-type]
    assert one.last_commit == T0 + timedelta(minutes=30)
    assert one.gap is not None and one.gap.segment == "000000010000000000000005"
    assert "then WAL segment 000000010000000000000005 is missing" in one.describe()
    assert two.earliest_backup == second.backup_id and two.last_commit == T0 + timedelta(hours=3)
    assert two.gap is None


def test_a_backup_whose_own_wal_is_missing_starts_no_window() -> None:
    b = on("20261128-100000F", "000000010000000000000002", "000000010000000000000003")
    read = commits({})
    assert windows(STANZA, [b], [seg("000000010000000000000002")], {}, read) == []  # type: ignore[arg-type]


def test_no_commit_after_the_backup_reaches_no_time() -> None:
    b = on("20261128-100000F", "000000010000000000000002", "000000010000000000000002")
    read = commits({"000000010000000000000002": None})
    (window,) = windows(STANZA, [b], [seg("000000010000000000000002")], {}, read)  # type: ignore[arg-type]
    assert window.last_commit is None and window.latest_note == NO_COMMIT
    assert window.contains(b.stop + timedelta(minutes=1)) is False


def test_an_unreadable_segment_leaves_the_end_unknown_not_refused() -> None:
    b = on("20261128-100000F", "000000010000000000000002", "000000010000000000000002")
    (window,) = windows(STANZA, [b], [seg("000000010000000000000002")], {}, commits({}))  # type: ignore[arg-type]
    assert window.latest is None
    assert window.contains(b.stop + timedelta(minutes=1)) is None


def test_a_restored_timeline_starts_from_its_parents_backup() -> None:
    b = on("20261128-100000F", "000000010000000000000002", "000000010000000000000002")
    # Timeline 2 branched off timeline 1 in segment 3.
    lineage = Lineage.of(2, (TimelineBranch(1, "0/3000100"),))
    segments = [seg(n) for n in ("000000010000000000000002", "000000010000000000000003")]
    segments += [seg("000000020000000000000003"), seg("000000020000000000000004")]
    read = commits(
        {
            "000000010000000000000003": T0 + timedelta(minutes=10),
            "000000020000000000000004": T0 + timedelta(minutes=40),
        }
    )
    one, two = windows(STANZA, [b], segments, {2: lineage}, read)  # type: ignore[arg-type]
    assert (one.timeline, one.last_commit) == (1, T0 + timedelta(minutes=10))
    assert (two.timeline, two.last_commit) == (2, T0 + timedelta(minutes=40))
    assert two.earliest_backup == b.backup_id


def window_host() -> FakeHost:
    host = FakeHost(app={"stanza": STANZA}, status=UnitStatus.active("Primary"))
    host.fake_tool.stanzas = [stanza_info(backups=[backup("20261128-100000F")])]
    host.fake_tool.commit_times = {"000000010000000000000002": T0 + timedelta(minutes=30)}
    return host


def test_a_restore_to_the_last_commit_is_refused_with_the_window() -> None:
    host = window_host()
    status, app = host.status, host.app_dict
    outcome = on_restore(host, {"restore-to-time": "2026-11-28 10:30:00+00"})
    assert outcome == ActionFailed(
        "Failed to restore backup: 2026-11-28T10:30:00Z is outside the recoverable window "
        "(timeline 1: 2026-11-28T10:05:00Z (backup 2026-11-28T10:00:00Z) -> "
        "2026-11-28T10:29:59.999999Z (before the last archived commit, in WAL "
        "000000010000000000000002)) (nothing was changed)"
    )
    assert host.status == status and host.app_dict == app
    assert not [c for c in host.calls if c.startswith("workload.") and "is_cluster" not in c]


def test_a_restore_before_the_last_commit_of_the_backup_is_refused() -> None:
    host = window_host()
    # A commit in the backup's last second, before its end LSN: recovery cannot stop
    # before it (the database would not be consistent yet).
    host.fake_tool.commits_before = {
        "000000010000000000000002": datetime(2026, 11, 28, 10, 5, 0, 700000, tzinfo=UTC)
    }
    outcome = on_restore(host, {"restore-to-time": "2026-11-28 10:05:00.5+00"})
    assert isinstance(outcome, ActionFailed)
    assert "outside the recoverable window (timeline 1: 2026-11-28T10:05:00.700000Z" in (
        outcome.message
    )


def test_a_restore_before_the_first_backup_shows_the_window_too() -> None:
    host = window_host()
    outcome = on_restore(host, {"restore-to-time": "2026-11-28 10:04:59+00"})
    assert isinstance(outcome, ActionFailed)
    assert outcome.message.startswith("restore-to-time is before the first backup ended")
    assert outcome.message.endswith(
        "; recoverable window: timeline 1: 2026-11-28T10:05:00Z (backup 2026-11-28T10:00:00Z)"
        " -> 2026-11-28T10:29:59.999999Z (before the last archived commit, in WAL "
        "000000010000000000000002)"
    )


def test_a_restore_inside_the_window_starts() -> None:
    host = window_host()
    outcome = on_restore(host, {"restore-to-time": "2026-11-28 10:29:59.999999+00"})
    assert outcome == ActionResults({"restore-status": "restore started"})
    assert "backup_tool.last_commit_time(000000010000000000000002)" in host.calls


def _window(timeline: int, earliest: datetime, last_commit: datetime | None) -> Window:
    return Window(
        stanza=STANZA,
        timeline=timeline,
        earliest=earliest,
        earliest_backup="2026-11-28T10:00:00Z",
        last_commit=last_commit,
        latest_segment="000000010000000000000005",
    )


def test_status_summary_is_the_newest_window_on_the_safe_side_of_each_second() -> None:
    older = _window(1, T0, T0 + timedelta(hours=1))
    # Earliest at .25 s: the second after it is reached; last commit at .0 s: a target a
    # microsecond before it is, so the second before it is the last whole one.
    newest = _window(2, T0 + timedelta(hours=2, microseconds=250_000), T0 + timedelta(hours=3))
    assert status_summary([newest, older]) == (
        "recoverable window 2026-11-28T12:00:01Z to 2026-11-28T12:59:59Z on timeline 2"
    )
    assert status_summary([]) == ""
    unknown = _window(1, T0, None)
    assert status_summary([unknown]) == "recoverable window 2026-11-28T10:00:00Z to ? on timeline 1"
    idle = _window(1, T0 + timedelta(seconds=5), T0)  # nothing committed after the backup
    assert status_summary([idle]) == (
        "recoverable window 2026-11-28T10:00:05Z (no commit archived since) on timeline 1"
    )
