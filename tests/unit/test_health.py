"""update-status's look at the database (core/handlers/health.py): a stopped Patroni, a
crash-looping PostgreSQL and a full disk are Blocked with what they are; the status goes
back to Active once the database runs; more specific statuses are left alone."""

from __future__ import annotations

import pytest
from fakes import FakeHost

from pgbackups.core import messages as msg
from pgbackups.core.handlers.health import disk_full_reason, health_status, human_size
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import DiskSpace, UnitStatus
from pgbackups.core.outcomes import Done

MiB = 1024 * 1024
FULL = DiskSpace("/var/lib/pgbackups/main", 40 * 1024, 200 * MiB)
ROOMY = DiskSpace("/var/lib/pgbackups/main", 100 * MiB, 200 * MiB)
FULL_REASON = "disk full: 40 KiB free of 200 MiB at /var/lib/pgbackups/main"
STOPPED = UnitStatus.blocked(msg.DATABASE_STOPPED)
CRASHED = UnitStatus.blocked(f"{msg.DATABASE_CRASHING}: Patroni member state crashed")

CASES: list[tuple[str, bool | None, str | None, DiskSpace | None, UnitStatus]] = [
    ("runs", True, "running", ROOMY, UnitStatus.active()),
    ("runs-4x", True, "streaming", ROOMY, UnitStatus.active()),
    ("patroni-stopped", False, None, ROOMY, STOPPED),
    (
        "patroni-stopped-disk-full",
        False,
        None,
        FULL,
        UnitStatus.blocked(f"{msg.DATABASE_STOPPED}; {FULL_REASON}"),
    ),
    ("crashed", True, "crashed", ROOMY, CRASHED),
    (
        "start-failed",
        True,
        "start failed",
        ROOMY,
        UnitStatus.blocked(f"{msg.DATABASE_CRASHING}: Patroni member state start failed"),
    ),
    # Between two attempts of a crash loop Patroni says "starting": with the disk full
    # that is the loop, not a start.
    (
        "starting-on-a-full-disk",
        True,
        "starting",
        FULL,
        UnitStatus.blocked(
            f"{msg.DATABASE_CRASHING}: Patroni member state starting; {FULL_REASON}"
        ),
    ),
    ("starting", True, "starting", ROOMY, UnitStatus.active()),
    ("host-cannot-tell", None, "crashed", FULL, UnitStatus.active()),
    ("disk-unreadable", False, None, None, STOPPED),
]


@pytest.mark.parametrize(
    ("running", "state", "disk", "after"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_an_active_unit_shows_what_its_database_is(
    running: bool | None, state: str | None, disk: DiskSpace | None, after: UnitStatus
) -> None:
    host = FakeHost(status=UnitStatus.active())
    host.fake_workload.service_running = running
    host.fake_workload.state = state
    host.fake_workload.disk = disk
    assert on_update_status(host) == Done()
    assert host.status == after
    expected = [] if after == UnitStatus.active() else [f"set_status({after})"]
    assert host.effects == expected


@pytest.mark.parametrize("before", [STOPPED, CRASHED], ids=["was-stopped", "was-crashing"])
def test_a_database_that_runs_again_is_active_again(before: UnitStatus) -> None:
    host = FakeHost(status=before)
    assert on_update_status(host) == Done()
    assert host.status == UnitStatus.active()
    assert host.effects == ["set_status(active)"]


def test_the_same_problem_is_not_written_again() -> None:
    host = FakeHost(status=STOPPED)
    host.fake_workload.service_running = False
    on_update_status(host)
    assert host.effects == []
    assert host.status == STOPPED


def test_a_stopped_unit_that_crash_loops_now_says_so() -> None:
    host = FakeHost(status=STOPPED)
    host.fake_workload.state = "crashed"
    on_update_status(host)
    assert host.status == CRASHED


LEFT_ALONE = [
    UnitStatus.maintenance(msg.CREATING_BACKUP),
    UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP + ": old data kept at /x"),
    UnitStatus.blocked("Patroni failed to start"),
    UnitStatus.waiting("waiting for the primary"),
]


@pytest.mark.parametrize("status", LEFT_ALONE, ids=lambda s: s.kind.value)
def test_more_specific_statuses_are_left_alone(status: UnitStatus) -> None:
    host = FakeHost(status=status, leader=False)
    host.fake_workload.service_running = False
    on_update_status(host)
    assert host.status == status
    assert host.effects == []


def test_the_pure_rule_and_the_message_shapes() -> None:
    assert health_status(running=True, member_state="running", disk=FULL) is None
    assert disk_full_reason(ROOMY) == ""
    assert disk_full_reason(FULL) == FULL_REASON
    # A big disk is full under one WAL segment, not under 5% of it.
    big = 1 << 40
    assert disk_full_reason(DiskSpace("/d", 20 * MiB, big)) == ""
    assert disk_full_reason(DiskSpace("/d", 15 * MiB, big)).startswith("disk full: 15 MiB")
    assert [human_size(n) for n in (0, 1023, 1024, 10 * 1024, 3 * MiB // 2)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "10 KiB",
        "1.5 MiB",
    ]
    assert msg.is_database_health_message(f"{msg.DATABASE_STOPPED}; {FULL_REASON}")
    assert msg.is_database_health_message(CRASHED.message)
    assert not msg.is_database_health_message(msg.FAILED_TO_RESTORE_BACKUP)
