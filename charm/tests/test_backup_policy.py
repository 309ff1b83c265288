"""The backup policy through the charm (issue 15): WAL archiving's health in the primary's
status from update-status, the config options into pgbackrest.conf's retention, the
expire action, and a scheduled backup started from update-status."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from charm_fakes import World, backup_record, stanza_info
from charm_states import STANZA, app_bag, ctx, peers, s3, state, unit_bag
from ops import testing

from pgbackups.core.archive_health import ArchiverStats
from pgbackups.core.ids import format_id, label_to_id
from pgbackups.core.policy import Retention

NOW = datetime.now(UTC)
HEALTHY = ArchiverStats(
    archived_count=5,
    last_archived_wal="000000010000000000000005",
    last_archived_time=NOW - timedelta(seconds=30),
    failed_count=0,
    last_failed_wal=None,
    last_failed_time=None,
    ready_count=0,
    oldest_ready_wal=None,
    oldest_ready_time=None,
)
FAILING = replace(
    HEALTHY,
    failed_count=2,
    last_failed_wal="000000010000000000000006",
    last_failed_time=NOW - timedelta(seconds=10),
    ready_count=3,
    oldest_ready_wal="000000010000000000000006",
    oldest_ready_time=NOW - timedelta(minutes=3),
)
LAGGING = replace(HEALTHY, ready_count=9, oldest_ready_wal="000000010000000000000006",
                  oldest_ready_time=NOW - timedelta(minutes=20))  # fmt: skip


def with_config(st: testing.State, config: dict[str, str | int]) -> testing.State:
    return replace(st, config=config)


def test_failing_archiving_blocks_the_primary_and_clears(world: World) -> None:
    world.workload.archiver = FAILING
    c = ctx()
    out = c.run(c.on.update_status(), state(peers({"stanza": STANZA}), s3()))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("WAL archiving failing since ")
    assert "3 WAL segments waiting" in out.unit_status.message
    world.workload.archiver = HEALTHY
    out = c.run(c.on.update_status(), out)
    assert out.unit_status == testing.ActiveStatus("Primary")


def test_lagging_archiving_stays_in_the_active_message(world: World) -> None:
    world.workload.archiver = LAGGING
    c = ctx()
    out = c.run(
        c.on.update_status(),
        with_config(state(peers({"stanza": STANZA}), s3()), {"archive-lag-threshold": 600}),
    )
    assert isinstance(out.unit_status, testing.ActiveStatus)
    assert out.unit_status.message.startswith("WAL archiving lagging since ")
    assert out.unit_status.message.endswith("(threshold 600s)")


def test_retention_options_reach_pgbackrest_conf(world: World) -> None:
    c = ctx()
    st = with_config(
        state(peers({"stanza": STANZA}), s3()),
        {"retention-full": 14, "retention-full-type": "time", "retention-diff": 3},
    )
    c.run(c.on.config_changed(), st)
    assert world.workload.configs[-1].retention == Retention(14, "time", 3)
    # A refused value retains everything (the S3 settings' days), never a guess.
    c.run(c.on.config_changed(), with_config(st, {"retention-full-type": "weekly"}))
    assert world.workload.configs[-1].retention is None


def test_a_refused_option_blocks_the_unit_until_it_is_fixed(world: World) -> None:
    c = ctx()
    st = with_config(state(peers({"stanza": STANZA}), s3()), {"full-schedule": "61 * * * *"})
    out = c.run(c.on.config_changed(), st)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith("Invalid backup options: ")
    assert "full-schedule" in out.unit_status.message
    # Still blocked on the next update-status, and gone once `juju config` fixes it.
    out = c.run(c.on.update_status(), out)
    assert isinstance(out.unit_status, testing.BlockedStatus)
    out = c.run(c.on.config_changed(), with_config(out, {"full-schedule": "0 1 * * *"}))
    assert not isinstance(out.unit_status, testing.BlockedStatus)
    assert not out.unit_status.message.startswith("Invalid backup options")


def test_expire_action_reports_what_went(world: World) -> None:
    old, new = "20261126-100000F", "20261128-100000F"
    world.tool.stanzas = [
        stanza_info(STANZA, backup_record(STANZA, old), backup_record(STANZA, new))
    ]
    c = ctx()
    c.run(c.on.action("expire"), state(peers({"stanza": STANZA}), s3()))
    assert "expire" in world.calls
    assert c.action_results is not None
    assert c.action_results["expire-status"] == "nothing to expire"
    assert c.action_results["kept-backups"] == "2"


def test_a_due_schedule_starts_a_backup_from_update_status(world: World) -> None:
    label = "20261128-100000F"
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, label))]
    world.workload.archiver = HEALTHY
    # The leader handled the every-minute schedule ten minutes ago: one run is due now.
    ten_ago = format_id(NOW.replace(second=0, microsecond=0) - timedelta(minutes=10))
    st = with_config(
        state(peers({"stanza": STANZA, "schedule-full": f"* * * * *|{ten_ago}"}), s3()),
        {"full-schedule": "* * * * *"},
    )
    c = ctx()
    out = c.run(c.on.update_status(), st)
    assert "backup full on_primary=True" in world.calls
    # The backup the run took (the fake names it from the clock), not the older one.
    assert world.tool.taken, "no backup was taken"
    assert f"annotate {world.tool.taken[-1]} trigger=scheduled" in world.calls
    assert f"annotate {label} trigger=scheduled" not in world.calls
    request = app_bag(out)["scheduled-backup"]
    assert request.startswith("full|") and request.endswith(
        f"|{out.unit_status and 'pgbackups-postgresql/0'}"
    )
    assert unit_bag(out)["scheduled-backup-done"].startswith(request + "|")
    # Active again, with the recoverable window the new backup opened (the leader says it).
    assert isinstance(out.unit_status, testing.ActiveStatus)
    assert out.unit_status.message.startswith("Primary, recoverable window ")


def _clear_of_daily(*, hour: int, minute: int, margin: float = 30.0) -> datetime:
    """The clock's time, read at least `margin` seconds before the next HH:MM, waiting
    past that minute first when it is nearer (a test crossing it would read two days)."""
    now = datetime.now(UTC)
    mark = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if mark <= now:
        mark += timedelta(days=1)
    if (mark - now).total_seconds() < margin:
        time.sleep((mark - now).total_seconds() + 1.0)
        now = datetime.now(UTC)
    return now


def test_a_missed_schedule_runs_once_and_lists_as_scheduled(world: World) -> None:
    """The machine was down over three daily runs: one backup, not three; list-backups
    says a schedule started it (the trigger column), and the older one was asked for."""
    manual = "20261120-100000F"
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, manual))]
    world.workload.archiver = HEALTHY
    # The charm reads the real clock: a run that crosses 03:17 would make today's run
    # the handled one, so the test starts clear of that minute (CI once ran through it).
    now = _clear_of_daily(hour=3, minute=17)
    today = now.replace(hour=3, minute=17, second=0, microsecond=0)
    if today > now:
        today -= timedelta(days=1)
    handled = format_id(today - timedelta(days=3))  # three runs missed since
    st = with_config(
        state(peers({"stanza": STANZA, "schedule-full": f"17 3 * * *|{handled}"}), s3()),
        {"full-schedule": "17 3 * * *"},
    )
    c = ctx()
    out = c.run(c.on.update_status(), st)
    for _ in range(2):  # the request is cleared, nothing more is due
        out = c.run(c.on.update_status(), out)
    assert [call for call in world.calls if call.startswith("backup ")] == [
        "backup full on_primary=True"
    ]
    assert app_bag(out)["schedule-full"] == f"17 3 * * *|{format_id(today)}"
    assert "scheduled-backup" not in app_bag(out)
    c.run(c.on.action("list-backups", params={"format": "json"}), out)
    assert c.action_results is not None
    rows = {row["backup-id"]: row for row in json.loads(c.action_results["backups"])}
    (scheduled,) = world.tool.taken
    assert rows[label_to_id(scheduled)]["trigger"] == "scheduled"
    assert rows[label_to_id(manual)]["trigger"] == "manual"


def test_the_leader_says_the_recoverable_window(world: World) -> None:
    """In `juju status`, on the leader: the newest window, to the second, on the safe
    side of both ends; read once per WINDOW_REFRESH_SECONDS, not at every update-status."""
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, "20261128-100000F"))]
    world.workload.archiver = HEALTHY
    c = ctx()
    out = c.run(c.on.update_status(), state(peers({"stanza": STANZA}), s3()))
    # The fake's last archived commit is 15:00:00: a target up to a microsecond before
    # it is reached, so 14:59:59 is the last whole second.
    assert out.unit_status == testing.ActiveStatus(
        "Primary, recoverable window 2026-11-28T10:00:00Z to 2026-11-28T14:59:59Z on timeline 1"
    )
    reads = world.calls.count("info")
    out = c.run(c.on.update_status(), out)
    assert world.calls.count("info") == reads  # not read again so soon
    assert out.unit_status.message.endswith("to 2026-11-28T14:59:59Z on timeline 1")
    # Another unit says nothing of it (one place to look, no S3 reads on every unit).
    world.calls.clear()
    other = c.run(c.on.update_status(), state(peers({"stanza": STANZA}), s3(), leader=False))
    assert other.unit_status == testing.ActiveStatus("Primary")
    assert "info" not in world.calls
