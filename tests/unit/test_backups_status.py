"""update-status (S3 self-healing, SPEC §9) and desired_config (the one place where the
peer bags become the unit's configuration)."""

from __future__ import annotations

import pytest
from fakes import MARKER_KEY, STANZA, TLS, VALID_S3, FakeHost

from pgbackups.core import backups
from pgbackups.core import messages as msg
from pgbackups.core.host import Deferred, Done, RestoreTarget, UnitStatus


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backups, "SLEEP", lambda _seconds: None)


S3_BLOCKS = [
    msg.FAILED_TO_ACCESS_CREATE_BUCKET + ": Could not connect to the endpoint URL",
    msg.ANOTHER_CLUSTER_REPOSITORY,
    msg.FAILED_TO_INITIALIZE_STANZA,
    msg.FAILED_TO_INITIALIZE_STANZA + ": ERROR: [039]: HTTP request failed",
]


@pytest.mark.parametrize("block", S3_BLOCKS)
def test_update_status_heals_an_s3_block_once_s3_is_fixed(block: str) -> None:
    host = FakeHost(status=UnitStatus.blocked(block), app={"s3-block-message": block})
    assert backups.on_update_status(host) == Done()
    assert host.status == UnitStatus.active()
    assert host.app_dict == {"cluster_initialised": "True", "stanza": STANZA}
    assert "backup_tool.stanza_create" in host.calls
    assert f"object_store.put({MARKER_KEY})" in host.calls


def test_update_status_retries_and_stays_blocked_while_s3_is_broken() -> None:
    block = msg.FAILED_TO_ACCESS_CREATE_BUCKET + ": Could not connect to the endpoint URL"
    host = FakeHost(status=UnitStatus.blocked(block), app={"s3-block-message": block})
    host.store.ensure_error = "Could not connect to the endpoint URL"
    backups.on_update_status(host)
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
    backups.on_update_status(host)
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
    assert backups.on_update_status(host) == Done()
    assert host.calls == []
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
    """The "Always" step for a backup whose process was killed (SPEC §9)."""
    host = FakeHost(unit=unit, status=status)
    host.fake_workload.primary = False
    assert backups.on_update_status(host) == Done()
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
    assert isinstance(backups.on_update_status(host), Deferred)


# ---------------------------------------------------------------------------
# desired_config


def test_desired_config_defaults() -> None:
    config = backups.desired_config(FakeHost())
    assert config.s3 is not None and config.s3.bucket == "backups"
    assert config.stanza is None
    assert (config.tls_server, config.connectivity, config.creating_backup) == (False, True, False)
    assert config.restore is None


def test_archiving_is_on_exactly_while_stanza_is_set() -> None:
    host = FakeHost(app={"stanza": STANZA})
    assert backups.desired_config(host).stanza == STANZA
    host.app_data["stanza"] = ""
    assert backups.desired_config(host).stanza is None


@pytest.mark.parametrize(
    ("raw", "has_s3"),
    [
        (VALID_S3, True),
        (None, False),
        ({"bucket": "bkt"}, False),
        ({**VALID_S3, "path": "x"}, True),
    ],
)
def test_desired_config_s3(raw: dict[str, str] | None, has_s3: bool) -> None:
    assert (backups.desired_config(FakeHost(s3=raw)).s3 is not None) is has_s3


def test_invalid_settings_render_no_repository() -> None:
    host = FakeHost(s3={**VALID_S3, "s3-uri-style": "virtual"})
    assert backups.desired_config(host).s3 is None


@pytest.mark.parametrize(
    ("tls", "planned", "expected"),
    [(None, 1, False), (None, 3, False), (TLS, 1, False), (TLS, 2, True)],
)
def test_desired_config_tls_server(tls: object, planned: int, expected: bool) -> None:
    host = FakeHost(tls=tls, planned_units=planned)  # type: ignore[arg-type]
    assert backups.desired_config(host).tls_server is expected


def test_desired_config_unit_bag() -> None:
    host = FakeHost(unit={"connectivity": "off", "creating-backup": "2026-11-28T15:00:00Z"})
    config = backups.desired_config(host)
    assert (config.connectivity, config.creating_backup) == (False, True)
    host.unit_data["connectivity"] = "on"
    assert backups.desired_config(host).connectivity is True


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            {"restoring-backup": "20261128-143926F", "restore-stanza": "old.main"},
            RestoreTarget(stanza="old.main", label="20261128-143926F"),
        ),
        (
            {"restoring-backup": "20261128-143926F"},
            RestoreTarget(stanza=STANZA, label="20261128-143926F"),
        ),
        (
            {
                "restoring-backup": "20261128-143926F",
                "restore-to-time": "latest",
                "restore-type": "default",
                "restore-timeline": "11",
            },
            RestoreTarget(
                stanza=STANZA,
                label="20261128-143926F",
                type="default",
                target=None,
                target_timeline=11,
                target_action=None,
            ),
        ),
        (
            {
                "restore-to-time": "2026-11-28 15:00:00+00",
                "restore-type": "time",
                "restore-timeline": "2",
            },
            RestoreTarget(
                stanza=STANZA,
                label=None,
                type="time",
                target="2026-11-28 15:00:00+00",
                target_timeline=2,
            ),
        ),
        ({"restore-stanza": STANZA, "restore-moved-data": "/old"}, None),
    ],
    ids=["backup-of-other-stanza", "own-stanza", "latest", "time-only", "no-restore"],
)
def test_desired_config_restore(app: dict[str, str], expected: RestoreTarget | None) -> None:
    assert backups.desired_config(FakeHost(app=app)).restore == expected
