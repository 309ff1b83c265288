"""restore with restore-to-time (docs/restore.md): each target shape becomes the exact
app-bag keys, RestoreTarget and Patroni bootstrap command; refusals change nothing; an
unreachable target ends in the PITR block, from which a new restore works."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes import LOG_HINT, MARKER_KEY, MOVED_DATA, STANZA, FakeHost, backup, stanza_info
from fakes import timeline as timeline_record

from pgbackups.adapters.patroni import PatroniMember, PatroniPasswords, restore_command
from pgbackups.core import messages as msg
from pgbackups.core.handlers.restore import on_restore
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import Recovery, RestoreTarget, UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults
from pgbackups.core.repository import TimelineBranch

B1 = "20261128-100000F"  # timeline 1, 10:00-10:05
B2 = "20261128-120000F"  # timeline 2, 12:00-12:05
TL2_ID = "2026-11-28T11:30:00Z"
PITR_BLOCK = UnitStatus.blocked(f"cannot restore PITR, {LOG_HINT} for details")
MEMBER = PatroniMember(
    scope="main",
    name="main-0",
    data_dir="/d",
    host="127.0.0.1",
    pg_port=1,
    rest_port=2,
    socket_dir="/s",
    etcd_hosts=("e",),
    passwords=PatroniPasswords("a", "b", "c", "d"),
    pgpass="/p",
    pgbackrest_config="/c.conf",
)
BASE = f"pgbackrest --config=/c.conf --stanza={STANZA} --pg1-path=/d"


def pitr_host(**kwargs: object) -> FakeHost:
    kwargs.setdefault("app", {"stanza": STANZA})
    kwargs.setdefault("status", UnitStatus.active("Primary"))
    host = FakeHost(**kwargs)  # type: ignore[arg-type]
    host.fake_tool.stanzas = [
        stanza_info(backups=[backup(B1), backup(B2, timeline=2)]),
    ]
    host.fake_tool.timeline_records = {
        STANZA: [
            timeline_record(2, datetime(2026, 11, 28, 11, 30, tzinfo=UTC)),
            timeline_record(3, datetime(2026, 11, 28, 13, 0, tzinfo=UTC)),
        ]
    }
    return host


# (params, restoring-backup, restore-type, restore-to-time, restore-timeline, command tail)
SHAPES = [
    (
        {"backup-id": "2026-11-28T10:00:00Z"},
        B1,
        "immediate",
        "",
        "",
        f"--set={B1} --type=immediate --target-action=promote restore",
    ),
    (
        {"backup-id": B1, "restore-to-time": "2026-11-28 10:30:00"},
        B1,
        "time",
        "2026-11-28 10:30:00.000000+00",
        "1",
        f"--set={B1} --type=time '--target=2026-11-28 10:30:00.000000+00' "
        "--target-action=promote --target-timeline=1 restore",
    ),
    (
        {"backup-id": B2, "restore-to-time": "latest"},
        B2,
        "default",
        "latest",
        "2",
        f"--set={B2} --type=default --target-timeline=2 restore",
    ),
    (
        {"restore-to-time": "2026-11-28T12:30:00+02:00"},  # 10:30 UTC: b1 on timeline 1
        B1,
        "time",
        "2026-11-28 10:30:00.000000+00",
        "1",
        f"--set={B1} --type=time '--target=2026-11-28 10:30:00.000000+00' "
        "--target-action=promote --target-timeline=1 restore",
    ),
    (
        {"restore-to-time": "2026-11-28 11:45:00.5"},  # timeline 2 began 11:30, from b1
        B1,
        "time",
        "2026-11-28 11:45:00.500000+00",
        "2",
        f"--set={B1} --type=time '--target=2026-11-28 11:45:00.500000+00' "
        "--target-action=promote --target-timeline=2 restore",
    ),
    (
        {"backup-id": TL2_ID, "restore-to-time": "latest"},
        B1,
        "default",
        "latest",
        "2",
        f"--set={B1} --type=default --target-timeline=2 restore",
    ),
    (
        {"backup-id": TL2_ID, "restore-to-time": "2026-11-28 11:40:00+00"},
        B1,
        "time",
        "2026-11-28 11:40:00.000000+00",
        "2",
        f"--set={B1} --type=time '--target=2026-11-28 11:40:00.000000+00' "
        "--target-action=promote --target-timeline=2 restore",
    ),
]
SHAPE_IDS = [
    "backup",
    "backup+time",
    "backup+latest",
    "time-on-backup",
    "time-on-timeline",
    "timeline+latest",
    "timeline+time",
]


@pytest.mark.parametrize(
    ("params", "label", "kind", "to_time", "tl", "tail"), SHAPES, ids=SHAPE_IDS
)
def test_each_target_shape(  # noqa: PLR0917 - one parametrised row
    params: dict[str, str], label: str, kind: str, to_time: str, tl: str, tail: str
) -> None:
    host = pitr_host()
    assert on_restore(host, params) == ActionResults({"restore-status": "restore started"})
    # A restore to the end of a backup's own timeline records the last archived segment,
    # which recovery must reach (docs/reliability.md); the others are PostgreSQL's to check.
    app = dict(host.app_dict)
    wal_end = app.pop("restore-wal-end", None)
    own_timeline_latest = kind == "default" and params.get("backup-id") == B2
    assert wal_end == ("000000020000000000000002" if own_timeline_latest else None)
    assert app == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "restoring-backup": label,
        "restore-stanza": STANZA,
        "restore-type": kind,
        **({"restore-to-time": to_time} if to_time else {}),
        **({"restore-timeline": tl} if tl else {}),
        "restore-moved-data": MOVED_DATA,
        "restore-epoch": "20261128T150000.000000Z",
        "restore-stage": "restoring",
    }
    restore = host.fake_workload.configs[-1].restore
    assert restore == RestoreTarget(
        stanza=STANZA,
        label=label,
        type=kind,
        target=to_time if kind == "time" else None,
        target_timeline=int(tl) if tl else None,
        target_action=None if kind == "default" else "promote",
    )
    assert restore_command(MEMBER, restore) == f"{BASE} {tail}"


def test_the_base_of_a_timeline_follows_its_history_file_and_falls_back_to_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """11:45 is on timeline 2 (began 11:30): its base comes from B1, on its path."""
    params = {"restore-to-time": "2026-11-28 11:45:00"}
    host = pitr_host()
    host.fake_tool.histories = {2: (TimelineBranch(1, "0/3000000"),)}
    assert isinstance(on_restore(host, params), ActionResults)
    assert "backup_tool.history(2)" in host.calls
    assert host.app_dict["restoring-backup"] == B1
    # B1 stopped after the branch point: not on timeline 2's path, no base at all.
    host = pitr_host()
    host.fake_tool.histories = {2: (TimelineBranch(1, "0/1000000"),)}
    outcome = on_restore(host, params)
    assert outcome == ActionFailed("There is no backup to restore the timeline from: timeline 2")
    assert not any(c.startswith(("set_status", "workload.stop")) for c in host.calls)
    # The file cannot be read: timestamps decide, and the log says so.
    host = pitr_host()
    assert isinstance(on_restore(host, params), ActionResults)
    assert host.app_dict["restoring-backup"] == B1
    assert "choosing its base backup by time" in caplog.text


def test_a_restore_with_a_time_lists_the_timelines() -> None:
    host = pitr_host()
    on_restore(host, {"backup-id": B1, "restore-to-time": "latest"})
    assert host.calls[:3] == [
        "workload.is_cluster_initialised",
        "backup_tool.info()",
        f"backup_tool.timelines({STANZA})",
    ]


# ---------------------------------------------------------------------------
# Refusals: nothing changes

REFUSALS = [
    ({}, msg.MISSING_RESTORE_TARGET, []),
    ({"restore-to-time": "  "}, msg.MISSING_RESTORE_TARGET, []),
    (
        {"backup-id": B1, "restore-to-time": "tomorrow"},
        "Bad restore-to-time format: 'tomorrow'",
        [],
    ),
    (
        {"restore-to-time": "2026-11-28 15:00:01+00"},
        "restore-to-time is in the future: 2026-11-28T15:00:01Z (now 2026-11-28T15:00:00Z)",
        [],
    ),
    (
        {"restore-to-time": "2026-11-28 10:04:59"},
        "restore-to-time is before the first backup ended",
        "listed+window",  # the recoverable window is read for the message
    ),
    (
        {"restore-to-time": "latest"},
        "There is no base backup created from the latest timeline: timeline 3",
        "listed",
    ),
    (
        {"backup-id": TL2_ID},
        "Cannot restore to the timeline without restore-to-time parameter",
        "listed",
    ),
    ({"backup-id": "2026-11-28T09:00:00Z"}, "Invalid backup-id: 2026-11-28T09:00:00Z", "listed"),
    (
        {"backup-id": "2026-11-28T09:00:00Z", "restore-to-time": "latest"},
        "Invalid backup-id: 2026-11-28T09:00:00Z",
        "listed",
    ),
]


@pytest.mark.parametrize(("params", "message", "calls"), REFUSALS)
def test_refusals_change_nothing(params: dict[str, str], message: str, calls: object) -> None:
    host = pitr_host()
    status, app = host.status, host.app_dict
    outcome = on_restore(host, params)
    assert isinstance(outcome, ActionFailed)
    assert outcome.message.startswith(message)
    if calls == "listed+window":
        assert "; recoverable window: timeline 1: " in outcome.message
        assert all(c.startswith("backup_tool.") for c in host.calls[1:]), host.calls
    elif calls == "listed":
        assert host.calls == [
            "workload.is_cluster_initialised",
            "backup_tool.info()",
            f"backup_tool.timelines({STANZA})",
        ]
    else:
        assert host.calls == calls
    assert host.status == status
    assert host.app_dict == app


def test_a_bad_format_is_refused_before_the_workload_is_asked() -> None:
    host = pitr_host()
    host.fake_workload.unavailable = True
    outcome = on_restore(host, {"restore-to-time": "noon"})
    assert isinstance(outcome, ActionFailed)
    assert "YYYY-MM-DD HH:MM:SS" in outcome.message
    assert host.calls == []


# ---------------------------------------------------------------------------
# An unreachable target: Blocked PITR once, data kept, a new restore works

PITR_RESTORING = {
    "stanza": STANZA,
    "restoring-backup": B1,
    "restore-stanza": STANZA,
    "restore-type": "time",
    "restore-to-time": "2026-11-28 14:00:00.000000+00",
    "restore-timeline": "1",
    "restore-moved-data": MOVED_DATA,
}


def test_unreachable_target_blocks_with_the_hosts_log_hint() -> None:
    host = pitr_host(app=PITR_RESTORING, status=UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.failed_bootstrap = True
    host.fake_workload.state = None
    on_update_status(host)
    assert host.status == PITR_BLOCK
    assert host.effects == [f"set_status({PITR_BLOCK})"]
    assert host.app_dict == {"cluster_initialised": "True", **PITR_RESTORING}
    host.calls.clear()
    on_update_status(host)
    assert host.effects == [], "reported once"


def test_unreachable_target_seen_first_as_start_failed_gives_the_same_block() -> None:
    """The race CI met: PostgreSQL ends recovery short of the target, Patroni reports
    ``start failed`` for a few seconds before it exits; the first look must already say
    PITR, and the later look (Patroni gone) must not change the message."""
    host = pitr_host(app=PITR_RESTORING, status=UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.state = "start failed"
    on_update_status(host)
    assert host.status == PITR_BLOCK
    host.fake_workload.state = None
    host.fake_workload.failed_bootstrap = True
    host.calls.clear()
    on_update_status(host)
    assert host.effects == [], "reported once"
    assert host.status == PITR_BLOCK


def test_a_failed_restore_command_is_not_a_pitr_block_even_with_a_time() -> None:
    """``custom bootstrap failed``: pgbackrest restore itself exited non-zero, the target
    was never tried; the message stays the one seen first once Patroni exits."""
    host = pitr_host(app=PITR_RESTORING, status=UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.state = "custom bootstrap failed"
    on_update_status(host)
    failed = UnitStatus.blocked(f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at {MOVED_DATA}")
    assert host.status == failed
    host.fake_workload.state = None
    host.fake_workload.failed_bootstrap = True
    on_update_status(host)
    assert host.status == failed


def test_the_charm_message_is_the_references() -> None:
    assert msg.cannot_restore_pitr("juju debug-log") == msg.CANNOT_RESTORE_PITR
    assert msg.is_cannot_restore_pitr(msg.CANNOT_RESTORE_PITR)
    assert msg.is_cannot_restore_pitr(PITR_BLOCK.message)
    assert not msg.is_cannot_restore_pitr("cannot restore PITRX")


def test_a_plain_restore_whose_bootstrap_fails_is_not_a_pitr_block() -> None:
    app = {k: v for k, v in PITR_RESTORING.items() if k not in ("restore-to-time",)}
    host = pitr_host(app={**app, "restore-type": "immediate", "restore-timeline": ""})
    host.fake_workload.failed_bootstrap = True
    on_update_status(host)
    assert host.status == UnitStatus.blocked(
        f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at {MOVED_DATA}"
    )


def test_a_new_restore_after_a_failed_pitr_keeps_the_original_data() -> None:
    host = pitr_host(app=PITR_RESTORING, status=PITR_BLOCK)
    # The failed attempt's data is in the data directory: it goes aside too, to another
    # name, and the copy from before the first attempt stays the one recorded.
    host.fake_workload.moved_path = MOVED_DATA + "-failed-attempt"
    outcome = on_restore(host, {"restore-to-time": "2026-11-28 10:30:00"})
    assert isinstance(outcome, ActionResults)
    assert host.app_dict["restore-moved-data"] == MOVED_DATA
    assert host.app_dict["restore-to-time"] == "2026-11-28 10:30:00.000000+00"
    assert not any("moved_data" in c for c in host.calls)  # no removal, begun or done
    # ... and it is removed only once that restore is seen healthy.
    host.store.objects[MARKER_KEY] = b""
    host.fake_workload.timeline = 4
    on_update_status(host)
    assert f"workload.remove_moved_data_later({MOVED_DATA})" in host.calls


def test_completion_waits_until_patroni_holds_the_leader_key() -> None:
    host = pitr_host(app=PITR_RESTORING, status=UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.primary = False  # PostgreSQL up, Patroni restarting it after recovery
    on_update_status(host)
    assert host.effects == []
    assert "workload.current_timeline" not in host.calls


def test_a_restored_database_that_stops_short_of_the_time_is_a_failed_pitr() -> None:
    """PostgreSQL exits with "recovery ended before configured recovery target was
    reached": the PITR message, the data from before kept for a rollback."""
    host = pitr_host(app=PITR_RESTORING, status=UnitStatus.maintenance(msg.RESTORING_BACKUP))
    host.fake_workload.service_running = False
    host.fake_workload.recovered = Recovery(
        Recovery.ENDED, "recovery ended before configured recovery target was reached"
    )
    on_update_status(host)
    assert host.status == PITR_BLOCK
    assert host.app_dict["restoring-backup"] == B1
