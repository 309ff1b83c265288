"""Is the database there? update-status's look at the unit itself (ours: the reference
operator's update-status never looks, so a unit whose Patroni was stopped, or whose
PostgreSQL crash-looped on a full disk, kept showing "active").

Only an Active status (or one this module set) is replaced: a backup's maintenance, a
restore's or the S3 block are more specific and are left to their own charts. A unit
that runs again goes back to Active at the next update-status.
"""

from __future__ import annotations

import logging

from pgbackups.core import messages as msg
from pgbackups.core.host import DiskSpace, Host, StatusKind, UnitStatus, Workload

log = logging.getLogger(__name__)

# Patroni's member states of a PostgreSQL that died and is not running again (Patroni
# shows "crashed" when it finds it gone, "start failed" when its start did not work).
CRASH_STATES = frozenset({"crashed", "start failed", "restart failed"})
# Patroni's member states of a PostgreSQL that runs (3.0.2 says running, 4.x streaming).
RUNNING_STATES = frozenset({"running", "streaming"})
# A disk is full when less than a WAL segment is left (PostgreSQL cannot switch to a new
# one), or less than 5% of a disk smaller than 320 MiB (a test's tmpfs).
WAL_SEGMENT_BYTES = 16 * 1024 * 1024


def check_database(host: Host) -> None:
    """Set, keep or clear the database's Blocked status (see the module's docstring)."""
    status = host.get_status()
    ours = status.is_blocked and msg.is_database_health_message(status.message)
    if status.kind is not StatusKind.ACTIVE and not ours:
        return
    problem = database_problem(host.workload)
    if problem is None:
        if ours:
            log.info("The database runs again: %s is over", status.message)
            host.set_status(UnitStatus.active())
        return
    if problem != status:
        log.error("The database does not run: %s", problem.message)
        host.set_status(problem)


def database_problem(workload: Workload) -> UnitStatus | None:
    """The Blocked status the unit should show, or None when the database runs."""
    running = workload.is_database_service_running()
    if running is None:
        return None  # the host cannot tell: say nothing rather than something wrong
    state = workload.member_state() if running else None
    return health_status(running=running, member_state=state, disk=workload.data_disk())


def health_status(
    *, running: bool, member_state: str | None, disk: DiskSpace | None
) -> UnitStatus | None:
    """Pure: Patroni not running is "stopped"; a crash state (or a full disk under a
    database that is not running) is "crash-looping"; a full disk is said as the reason."""
    full = disk_full_reason(disk)
    if not running:
        return UnitStatus.blocked(_with(msg.DATABASE_STOPPED, full))
    if member_state in CRASH_STATES or (
        full and member_state is not None and member_state not in RUNNING_STATES
    ):
        crashing = f"{msg.DATABASE_CRASHING}: Patroni member state {member_state}"
        return UnitStatus.blocked(_with(crashing, full))
    return None


def _with(message: str, reason: str) -> str:
    # "; " and not ": ": the message already carries its own reason after a colon.
    return f"{message}; {reason}" if reason else message


def is_disk_full(disk: DiskSpace | None) -> bool:
    if disk is None or disk.total <= 0:
        return False
    return disk.free < min(WAL_SEGMENT_BYTES, disk.total // 20)


def disk_full_reason(disk: DiskSpace | None) -> str:
    """``disk full: 12 KiB free of 64 MiB at /path`` when the disk is full, else ""."""
    if disk is None or not is_disk_full(disk):
        return ""
    return msg.with_reason(
        msg.DISK_FULL, f"{human_size(disk.free)} free of {human_size(disk.total)} at {disk.path}"
    )


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # not reached
