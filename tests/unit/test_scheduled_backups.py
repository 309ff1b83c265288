"""Scheduled backups (core/handlers/schedule.py), through update-status: the leader asks
a ready unit for the backup a schedule says is due, once however many minutes were
missed; the named unit runs create-backup, annotates the backup ``trigger=scheduled``
and reports; a new schedule starts from now."""

from __future__ import annotations

from datetime import timedelta

from fakes import NOW, PRIMARY_ADDRESS, STANZA, TLS, FakeHost, backup, failed, stanza_info

from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import UnitStatus
from pgbackups.core.outcomes import Done

EVERY_MINUTE = {"full-schedule": "* * * * *"}


def scheduled_host(options: dict[str, str], **kw: object) -> FakeHost:
    host = FakeHost(app={"stanza": STANZA}, options=options, **kw)  # type: ignore[arg-type]
    host.fake_tool.stanzas = [stanza_info()]
    return host


def tick(host: FakeHost, minutes: float = 1) -> None:
    host.clock += timedelta(minutes=minutes)
    host.calls.clear()
    assert on_update_status(host) == Done()


def test_without_schedules_nothing_is_written() -> None:
    host = scheduled_host({})
    on_update_status(host)
    assert host.effects == []


def test_a_new_schedule_starts_from_now_then_runs_each_due_minute() -> None:
    host = scheduled_host(EVERY_MINUTE)
    on_update_status(host)
    assert host.app_dict["schedule-full"] == "* * * * *|2026-11-28T15:00:00Z"
    assert host.unit_dict == {"backup-ready": "yes"}
    assert "scheduled-backup" not in host.app_dict
    assert not any("backup_tool.backup" in c for c in host.calls)

    made = backup("20261128-150100F")
    host.fake_tool.new_backup = made
    tick(host)
    request = "full|2026-11-28T15:01:00Z|main/0"
    assert host.app_dict["schedule-full"] == "* * * * *|2026-11-28T15:01:00Z"
    assert host.app_dict["scheduled-backup"] == request
    assert "backup_tool.backup(full, on_primary=True)" in host.effects
    assert f"backup_tool.annotate({made.label}, {{'trigger': 'scheduled'}})" in host.effects
    assert host.unit_dict["scheduled-backup-done"] == f"{request}|2026-11-28T15:01:00Z"
    assert host.status == UnitStatus.active()
    [stanza] = host.fake_tool.stanzas
    assert stanza.backups[-1].annotations == (("trigger", "scheduled"),)

    # The same minute again: the leader clears the request, nothing runs twice.
    host.calls.clear()
    on_update_status(host)
    assert "scheduled-backup" not in host.app_dict
    assert not any("backup_tool.backup" in c for c in host.calls)


def test_a_missed_window_runs_once() -> None:
    host = scheduled_host({"full-schedule": "0 * * * *"})
    on_update_status(host)
    assert host.app_dict["schedule-full"] == "0 * * * *|2026-11-28T15:00:00Z"
    host.fake_tool.new_backup = backup("20261128-183000F")
    tick(host, minutes=3 * 60 + 30)  # the machine was down for three hourly runs
    backups = [c for c in host.calls if c.startswith("backup_tool.backup(")]
    assert backups == ["backup_tool.backup(full, on_primary=True)"]
    assert host.app_dict["schedule-full"] == "0 * * * *|2026-11-28T18:00:00Z"
    tick(host, minutes=10)  # clears the request
    tick(host, minutes=10)
    assert not any(c.startswith("backup_tool.backup(") for c in host.calls)


def test_the_biggest_due_backup_runs_and_the_others_are_skipped() -> None:
    host = scheduled_host({"full-schedule": "0 * * * *", "incremental-schedule": "*/5 * * * *"})
    on_update_status(host)
    host.fake_tool.new_backup = backup("20261128-160000F")
    tick(host, minutes=60)
    assert host.app_dict["scheduled-backup"].startswith("full|2026-11-28T16:00:00Z|")
    assert host.app_dict["schedule-incremental"] == "*/5 * * * *|2026-11-28T16:00:00Z"
    assert [c for c in host.calls if c.startswith("backup_tool.backup(")] == [
        "backup_tool.backup(full, on_primary=True)"
    ]


def test_a_changed_schedule_starts_from_now() -> None:
    host = scheduled_host(EVERY_MINUTE)
    on_update_status(host)
    host.options["full-schedule"] = "*/2 * * * *"
    tick(host, minutes=2)
    assert host.app_dict["schedule-full"] == "*/2 * * * *|2026-11-28T15:02:00Z"
    assert "scheduled-backup" not in host.app_dict


def test_the_leader_names_a_ready_replica_and_only_it_runs() -> None:
    # The leader is the primary of a TLS multi-unit cluster: it cannot take the backup.
    host = scheduled_host(
        EVERY_MINUTE,
        planned_units=2,
        tls=TLS,
        peers={"main/1": {"backup-ready": "yes"}},
    )
    on_update_status(host)
    assert host.unit_dict == {}  # not ready: it is the primary
    tick(host)
    assert host.app_dict["scheduled-backup"] == "full|2026-11-28T15:01:00Z|main/1"
    assert not any(c.startswith("backup_tool.backup(") for c in host.calls)

    # The named unit is not ready any more and another one is: the request moves.
    host.peer_bags = {"main/1": {}, "main/2": {"backup-ready": "yes"}}
    tick(host, minutes=0)
    assert host.app_dict["scheduled-backup"] == "full|2026-11-28T15:01:00Z|main/2"

    # main/2 reports the run: the leader clears it.
    host.peer_bags["main/2"]["scheduled-backup-done"] = (
        "full|2026-11-28T15:01:00Z|main/2|2026-11-28T15:01:03Z"
    )
    tick(host, minutes=0)
    assert "scheduled-backup" not in host.app_dict


def test_a_named_replica_runs_its_request() -> None:
    app = {"stanza": STANZA, "scheduled-backup": "full|2026-11-28T15:01:00Z|main/1"}
    host = FakeHost(app=app, options=EVERY_MINUTE, leader=False, planned_units=2, tls=TLS)
    host.fake_tool.stanzas = [stanza_info()]
    host.fake_workload.primary = False
    host.unit = "main/1"
    host.fake_tool.new_backup = backup("20261128-150100F")
    host.clock = NOW + timedelta(minutes=1)
    on_update_status(host)
    assert f"backup_tool.backup(full, on_primary=False, primary={PRIMARY_ADDRESS})" in host.calls
    assert host.unit_dict["scheduled-backup-done"].startswith("full|2026-11-28T15:01:00Z|main/1|")
    assert host.unit_dict["backup-ready"] == "yes"


def test_no_ready_unit_means_the_due_run_waits_and_then_runs_once() -> None:
    host = scheduled_host(EVERY_MINUTE)
    on_update_status(host)
    host.status = UnitStatus.blocked("something else")
    tick(host, minutes=5)
    assert "scheduled-backup" not in host.app_dict
    assert host.unit_dict.get("backup-ready") is None
    assert host.app_dict["schedule-full"] == "* * * * *|2026-11-28T15:00:00Z"  # still due
    host.status = UnitStatus.active()
    host.fake_tool.new_backup = backup("20261128-150600F")
    tick(host)  # ready again: one run for the six minutes it waited
    assert [c for c in host.calls if c.startswith("backup_tool.backup(")] == [
        "backup_tool.backup(full, on_primary=True)"
    ]
    assert host.app_dict["schedule-full"] == "* * * * *|2026-11-28T15:06:00Z"


def test_a_failed_scheduled_backup_is_reported() -> None:
    host = scheduled_host(EVERY_MINUTE)
    on_update_status(host)
    host.fake_tool.backup_result = failed("ERROR: [082]: WAL segment was not archived")
    tick(host)
    assert host.unit_dict["scheduled-backup-done"] == "full|2026-11-28T15:01:00Z|main/0|failed"
    assert host.status == UnitStatus.active()


def test_a_named_unit_that_is_no_longer_ready_leaves_it_to_another() -> None:
    app = {"stanza": STANZA, "scheduled-backup": "full|2026-11-28T15:01:00Z|main/1"}
    host = FakeHost(app=app, options=EVERY_MINUTE, leader=False, planned_units=2, tls=TLS)
    host.unit = "main/1"  # it became the primary of a TLS cluster: create-backup refuses
    on_update_status(host)
    assert not any(c.startswith("backup_tool.backup(") for c in host.calls)
    assert "scheduled-backup-done" not in host.unit_dict
