"""update-status's look at WAL archiving on the primary (core/handlers/archiving.py and
core/archive_health.py): failing and dropped WAL are Blocked, lagging is said in an Active
status, each with since when and why; all clear by themselves."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from fakes import NOW, STANZA, FakeHost, backup, healthy_archiver, stanza_info

from pgbackups.core import archive_health
from pgbackups.core import messages as msg
from pgbackups.core.archive import ArchivedSegment, parse_segment_name
from pgbackups.core.archive_health import ArchiverStats, Hole
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import UnitStatus
from pgbackups.core.outcomes import Done

SEG = "0000000100000000000000{:02X}".format
FAILING = replace(
    healthy_archiver(),
    failed_count=3,
    last_failed_wal=SEG(0x0A),
    last_failed_time=NOW - timedelta(seconds=20),
    ready_count=4,
    oldest_ready_wal=SEG(0x0A),
    oldest_ready_time=NOW - timedelta(minutes=2),
)
FAILING_MESSAGE = (
    "WAL archiving failing since 2026-11-28T14:58:00Z, check your S3 settings: "
    "4 WAL segments waiting, 00000001000000000000000A failed at 2026-11-28T14:59:40Z"
)
LAGGING = replace(
    healthy_archiver(),
    ready_count=40,
    oldest_ready_wal=SEG(0x0A),
    oldest_ready_time=NOW - timedelta(minutes=6),
)
LAGGING_MESSAGE = (
    "WAL archiving lagging since 2026-11-28T14:54:00Z: 40 WAL segments waiting, "
    "oldest 00000001000000000000000A (threshold 300s)"
)


def primary(stats: ArchiverStats | None, **kw: object) -> FakeHost:
    host = FakeHost(app={"stanza": STANZA}, **kw)  # type: ignore[arg-type]
    host.fake_workload.archiver = stats
    return host


@pytest.mark.parametrize(
    ("stats", "before", "after"),
    [
        pytest.param(healthy_archiver(), UnitStatus.active(), UnitStatus.active(), id="healthy"),
        pytest.param(FAILING, UnitStatus.active(), UnitStatus.blocked(FAILING_MESSAGE), id="fails"),
        pytest.param(LAGGING, UnitStatus.active(), UnitStatus.active(LAGGING_MESSAGE), id="lags"),
        pytest.param(
            healthy_archiver(), UnitStatus.blocked(FAILING_MESSAGE), UnitStatus.active(), id="heals"
        ),
        pytest.param(
            healthy_archiver(),
            UnitStatus.active(LAGGING_MESSAGE),
            UnitStatus.active(),
            id="caught-up",
        ),
        pytest.param(
            LAGGING,
            UnitStatus.blocked(FAILING_MESSAGE),
            UnitStatus.active(LAGGING_MESSAGE),
            id="failing-to-lagging",
        ),
        # A backup's Maintenance, an S3 block, a stopped database say more: left alone.
        pytest.param(
            FAILING,
            UnitStatus.maintenance(msg.CREATING_BACKUP),
            UnitStatus.maintenance(msg.CREATING_BACKUP),
            id="backup-running",
        ),
        # PostgreSQL does not answer: nothing is said either way.
        pytest.param(
            None,
            UnitStatus.blocked(FAILING_MESSAGE),
            UnitStatus.blocked(FAILING_MESSAGE),
            id="cannot-tell",
        ),
        # One segment waiting a little after a failure long ago that a success followed.
        pytest.param(
            replace(
                healthy_archiver(),
                ready_count=1,
                oldest_ready_wal=SEG(0x0A),
                oldest_ready_time=NOW - timedelta(seconds=20),
                failed_count=1,
                last_failed_time=NOW - timedelta(days=1),
            ),
            UnitStatus.active(),
            UnitStatus.active(),
            id="old-failure",
        ),
    ],
)
def test_primary_archiving_status(
    stats: ArchiverStats | None, before: UnitStatus, after: UnitStatus
) -> None:
    host = primary(stats, status=before)
    assert on_update_status(host) == Done()
    assert host.status == after
    changed = [f"set_status({after})"] if after != before else []
    assert host.effects == changed


def test_lag_threshold_is_an_option() -> None:
    host = primary(LAGGING, options={"archive-lag-threshold": "600"})
    on_update_status(host)
    assert host.status == UnitStatus.active()
    host = primary(LAGGING, options={"archive-lag-threshold": "120"})
    on_update_status(host)
    assert host.status == UnitStatus.active(LAGGING_MESSAGE.replace("300s", "120s"))


def test_a_replica_clears_what_it_said_as_primary_and_asks_nothing() -> None:
    host = primary(FAILING, status=UnitStatus.blocked(FAILING_MESSAGE))
    host.fake_workload.primary = False
    on_update_status(host)
    assert host.status == UnitStatus.active()
    assert "workload.archiver_stats" not in host.calls


def test_without_a_stanza_archiving_is_not_looked_at() -> None:
    host = FakeHost()
    host.fake_workload.archiver = FAILING
    on_update_status(host)
    assert host.status == UnitStatus.active()
    assert "workload.archiver_stats" not in host.calls


def _segments(numbers: range, *, missing: set[int]) -> list[ArchivedSegment]:
    return [ArchivedSegment(1, n, 100, SEG(n)) for n in numbers if n not in missing]


def test_dropped_wal_is_the_exact_hole_until_a_newer_backup() -> None:
    # pgBackRest's spool still announces two of the four segments it dropped; the
    # repository shows all four missing (0x0B-0x0E), and an older hole (0x04) that the
    # backup at 0x06 already covers.
    stats = replace(healthy_archiver(), dropped=(SEG(0x0D), SEG(0x0E)))
    host = primary(stats)
    host.fake_tool.segments[STANZA] = _segments(range(2, 0x12), missing={4, 0xB, 0xC, 0xD, 0xE})
    old = replace(backup("20261128-140000F"), wal_start=SEG(6), wal_stop=SEG(6))
    host.fake_tool.stanzas = [stanza_info(backups=[old])]
    on_update_status(host)
    message = (
        f"{msg.WAL_DROPPED}, take a full backup: no restore across "
        "00000001000000000000000B..00000001000000000000000E"
    )
    assert host.status == UnitStatus.blocked(message)
    assert host.unit_dict == {"archive-dropped": f"{SEG(0x0B)}..{SEG(0x0E)}"}
    assert host.effects == [
        f"backup_tool.archive_segments({STANZA})",
        f"backup_tool.info({STANZA})",
        f"unit_data[archive-dropped]='{SEG(0x0B)}..{SEG(0x0E)}'",
        f"set_status(blocked: {message})",
    ]

    # The notices are gone (pgBackRest's next run removed them): the bag remembers.
    host.fake_workload.archiver = healthy_archiver()
    host.calls.clear()
    on_update_status(host)
    assert host.status == UnitStatus.blocked(message)
    assert host.effects == [f"backup_tool.info({STANZA})"]

    # A full backup taken after the hole: restores no longer cross it.
    new = replace(backup("20261128-150000F"), wal_start=SEG(0x10), wal_stop=SEG(0x10))
    host.fake_tool.stanzas = [stanza_info(backups=[old, new])]
    host.calls.clear()
    on_update_status(host)
    assert host.status == UnitStatus.active()
    assert host.unit_dict == {}


def test_dropped_as_announced_when_the_archive_cannot_be_listed() -> None:
    stats = replace(healthy_archiver(), dropped=(SEG(0x0D), SEG(0x0E), SEG(0x10)))
    host = primary(stats)
    host.fake_tool.info_error = "ERROR: [039]: HTTP request failed"
    host.fake_tool.segments_error = "ERROR: [039]: HTTP request failed"
    on_update_status(host)
    assert host.unit_dict == {"archive-dropped": f"{SEG(0x0D)}..{SEG(0x0E)},{SEG(0x10)}"}
    assert host.status.is_blocked


def test_drop_notices_are_read_from_spool_ok_files() -> None:
    files = [
        (
            f"{SEG(3)}.ok",
            "0\ndropped WAL file '" + SEG(3) + "' because archive queue exceeded 16MB",
        ),
        (f"{SEG(4)}.ok", ""),  # an ordinary acknowledgement
        (f"{SEG(5)}.ok", "0\ndropped WAL file '" + SEG(5) + "' because archive queue exceeded 1GB"),
    ]
    assert archive_health.dropped_segments(files) == (SEG(3), SEG(5))


def test_holes_round_trip_and_merge() -> None:
    holes = archive_health.holes_of([SEG(5), SEG(3), SEG(4), SEG(9), "nonsense"])
    assert holes == (Hole(1, 3, 5), Hole(1, 9, 9))
    text = archive_health.format_holes(holes)
    assert text == f"{SEG(3)}..{SEG(5)},{SEG(9)}"
    assert archive_health.parse_holes(text) == holes
    assert archive_health.parse_holes("garbage,..,") == ()
    assert archive_health.merge(holes, (Hole(1, 6, 8),)) == (Hole(1, 3, 9),)
    assert archive_health.covered_by(holes, [SEG(9)]) is False
    assert archive_health.covered_by(holes, [SEG(0x0A)]) is True
    later_timeline = "000000020000000000000004"
    assert parse_segment_name(later_timeline) == (2, 4)
    assert archive_health.covered_by(holes, [later_timeline]) is True
    many = tuple(Hole(1, n * 10, n * 10) for n in range(1, 6))
    assert archive_health.dropped_message(many).endswith(" and 2 more")


def test_archive_messages_are_recognised() -> None:
    assert msg.is_archive_health_message(FAILING_MESSAGE)
    assert msg.is_archive_health_message(LAGGING_MESSAGE)
    assert msg.is_archive_health_message(archive_health.dropped_message((Hole(1, 3, 3),)))
    assert not msg.is_archive_health_message(msg.DATABASE_STOPPED)
    assert not msg.is_archive_health_message("")


def test_a_drop_notice_is_recorded_while_another_status_shows() -> None:
    # A backup's Maintenance is kept, but the hole is remembered: the notice is gone
    # after pgBackRest's next run.
    stats = replace(healthy_archiver(), dropped=(SEG(0x0D),))
    host = primary(stats, status=UnitStatus.maintenance(msg.CREATING_BACKUP))
    host.fake_tool.segments[STANZA] = _segments(range(2, 0x12), missing={0xD})
    on_update_status(host)
    assert host.status == UnitStatus.maintenance(msg.CREATING_BACKUP)
    assert host.unit_dict == {"archive-dropped": SEG(0x0D)}
