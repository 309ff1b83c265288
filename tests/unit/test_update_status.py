"""update-status: S3 self-healing (docs/behaviour/update-status.md#3-retry-s3-initialisation) and
the "Always" step of a killed backup. Its detection of a restore's end is the restore chart's:
test_restore.py, test_restore_pitr.py."""

from __future__ import annotations

import pytest
from fakes import MARKER_KEY, REPOSITORY_ID, STANZA, FakeHost

from pgbackups.core import messages as msg
from pgbackups.core.handlers import s3_credentials
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.host import UnitStatus
from pgbackups.core.outcomes import Deferred, Done


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_credentials, "SLEEP", lambda _seconds: None)


S3_BLOCKS = [
    msg.FAILED_TO_ACCESS_CREATE_BUCKET + ": Could not connect to the endpoint URL",
    msg.ANOTHER_CLUSTER_REPOSITORY,
    msg.FAILED_TO_INITIALIZE_STANZA,
    msg.FAILED_TO_INITIALIZE_STANZA + ": ERROR: [039]: HTTP request failed",
]


@pytest.mark.parametrize("block", S3_BLOCKS)
def test_update_status_heals_an_s3_block_once_s3_is_fixed(block: str) -> None:
    host = FakeHost(status=UnitStatus.blocked(block), app={"s3-block-message": block})
    assert on_update_status(host) == Done()
    assert host.status == UnitStatus.active()
    assert host.app_dict == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "repository": REPOSITORY_ID,
    }
    assert "backup_tool.stanza_create" in host.calls
    assert f"object_store.put({MARKER_KEY})" in host.calls


def test_update_status_retries_and_stays_blocked_while_s3_is_broken() -> None:
    block = msg.FAILED_TO_ACCESS_CREATE_BUCKET + ": Could not connect to the endpoint URL"
    host = FakeHost(status=UnitStatus.blocked(block), app={"s3-block-message": block})
    host.store.ensure_error = "Could not connect to the endpoint URL"
    on_update_status(host)
    assert host.status == UnitStatus.blocked(block)
    assert host.effects == [
        "workload.apply_config(stanza=-)",
        "set_status(maintenance: initialising stanza)",
        "object_store.ensure_bucket",
        f"app_data[s3-block-message]={block!r}",
        f"set_status(blocked: {block})",
    ]


def test_new_leader_shows_and_retries_the_recorded_s3_block() -> None:
    host = FakeHost(app={"s3-block-message": msg.ANOTHER_CLUSTER_REPOSITORY})
    host.store.objects[MARKER_KEY] = b"{}"
    on_update_status(host)
    assert host.status == UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY)


NOTHING_TO_DO = [
    ("active", {}, UnitStatus.active("Primary"), True),
    ("blocked-not-by-s3", {}, UnitStatus.blocked("Patroni failed to start"), True),
    ("non-leader-s3-blocked", {}, UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY), False),
    (
        "moved-data-recorded-but-restore-finished",
        {"restore-moved-data": "/old"},
        UnitStatus.active(),
        True,
    ),
]


@pytest.mark.parametrize(
    ("app", "status", "leader"),
    [n[1:] for n in NOTHING_TO_DO],
    ids=[n[0] for n in NOTHING_TO_DO],
)
def test_update_status_does_nothing(app: dict[str, str], status: UnitStatus, leader: bool) -> None:
    host = FakeHost(app=app, status=status, leader=leader)
    assert on_update_status(host) == Done()
    assert host.effects == []  # it asks the workload (is the database there?), no more
    assert host.status == status


@pytest.mark.parametrize(
    ("unit", "status", "after"),
    [
        (
            {"creating-backup": "2026-11-28T15:00:00Z", "connectivity": "off"},
            UnitStatus.maintenance(msg.CREATING_BACKUP),
            UnitStatus.active(),
        ),
        ({"connectivity": "off"}, UnitStatus.active("Primary"), UnitStatus.active("Primary")),
        ({"creating-backup": "x"}, UnitStatus.blocked("other"), UnitStatus.blocked("other")),
    ],
)
def test_update_status_brings_back_a_unit_a_killed_backup_left_hidden(
    unit: dict[str, str], status: UnitStatus, after: UnitStatus
) -> None:
    """The "Always" step for a backup whose process was killed
    (docs/behaviour/create-backup.md#step-18-always)."""
    host = FakeHost(unit=unit, status=status)
    host.fake_workload.primary = False
    assert on_update_status(host) == Done()
    assert host.unit_dict == {}
    assert host.status == after
    assert host.effects == [
        "unit_data[connectivity]=''",
        "unit_data[creating-backup]=''",
        "workload.apply_config(stanza=-)",
        f"set_status({after})",
    ]
    config = host.fake_workload.configs[-1]
    assert config.connectivity and not config.creating_backup


def test_update_status_retry_defers_like_the_hook_when_the_cluster_is_gone() -> None:
    host = FakeHost(status=UnitStatus.blocked(msg.FAILED_TO_INITIALIZE_STANZA))
    host.app_data["cluster_initialised"] = ""
    assert isinstance(on_update_status(host), Deferred)
