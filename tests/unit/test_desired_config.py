"""desired_config: the one place where the peer bags become the unit's configuration."""

from __future__ import annotations

import pytest
from fakes import STANZA, TLS, VALID_S3, FakeHost

from pgbackups.core.handlers import desired_config
from pgbackups.core.host import RestoreTarget


def test_desired_config_defaults() -> None:
    config = desired_config(FakeHost())
    assert config.s3 is not None and config.s3.bucket == "backups"
    assert config.stanza is None
    assert (config.tls_server, config.connectivity, config.creating_backup) == (False, True, False)
    assert config.restore is None


def test_archiving_is_on_exactly_while_stanza_is_set() -> None:
    host = FakeHost(app={"stanza": STANZA})
    assert desired_config(host).stanza == STANZA
    host.app_data["stanza"] = ""
    assert desired_config(host).stanza is None


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
    assert (desired_config(FakeHost(s3=raw)).s3 is not None) is has_s3


def test_invalid_settings_render_no_repository() -> None:
    host = FakeHost(s3={**VALID_S3, "s3-uri-style": "virtual"})
    assert desired_config(host).s3 is None


@pytest.mark.parametrize(
    ("tls", "planned", "expected"),
    [(None, 1, False), (None, 3, False), (TLS, 1, False), (TLS, 2, True)],
)
def test_desired_config_tls_server(tls: object, planned: int, expected: bool) -> None:
    host = FakeHost(tls=tls, planned_units=planned)  # type: ignore[arg-type]
    assert desired_config(host).tls_server is expected


def test_desired_config_unit_bag() -> None:
    host = FakeHost(unit={"connectivity": "off", "creating-backup": "2026-11-28T15:00:00Z"})
    config = desired_config(host)
    assert (config.connectivity, config.creating_backup) == (False, True)
    host.unit_data["connectivity"] = "on"
    assert desired_config(host).connectivity is True


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
    assert desired_config(FakeHost(app=app)).restore == expected
