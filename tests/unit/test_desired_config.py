"""desired_config: the one place where the peer bags become the unit's configuration."""

from __future__ import annotations

import pytest
from fakes import REPOSITORY_ID, STANZA, TLS, VALID_S3, FakeHost, describe_config

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


def test_a_primary_backing_up_is_not_tagged_out_of_elections() -> None:
    """``creating-backup`` alone (a primary's backup) is the one-backup-per-cluster flag;
    the Patroni tags (nofailover, noloadbalance) come only with a hidden replica."""
    host = FakeHost(unit={"creating-backup": "2026-11-28T15:00:00Z"})
    config = desired_config(host)
    assert (config.connectivity, config.creating_backup) == (True, False)


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


# ---------------------------------------------------------------------------
# WAL is pushed, held or discarded (docs/reliability.md, "WAL while S3 is blocked")


def _config_for(app: dict[str, str], s3: dict[str, str] | None = VALID_S3) -> str:
    host = FakeHost(app=app, s3=s3)
    return describe_config(desired_config(host))


def test_wal_is_pushed_to_the_verified_repository() -> None:
    app = {"stanza": STANZA, "repository": REPOSITORY_ID}
    assert _config_for(app) == f"workload.apply_config(stanza={STANZA})"


def test_a_bag_from_before_the_repository_key_keeps_pushing() -> None:
    assert _config_for({"stanza": STANZA}) == f"workload.apply_config(stanza={STANZA})"


def test_settings_naming_another_repository_hold_wal_until_verified() -> None:
    # Another path: the leader has not checked who owns it; nothing is pushed there yet.
    app = {"stanza": STANZA, "repository": REPOSITORY_ID}
    other = {**VALID_S3, "path": "/elsewhere"}
    assert _config_for(app, other) == "workload.apply_config(stanza=-, hold-wal)"
    # New keys or a new CA name the same repository: pushing goes on.
    rotated = {**VALID_S3, "access-key": "AKIA-NEW", "secret-key": "another-secret"}
    assert _config_for(app, rotated) == f"workload.apply_config(stanza={STANZA})"


def test_unusable_settings_hold_wal() -> None:
    app = {"stanza": STANZA, "repository": REPOSITORY_ID}
    bad = {**VALID_S3, "tls-ca-chain": "not a pem"}
    assert _config_for(app, bad) == "workload.apply_config(stanza=-, hold-wal, s3=-)"


def test_held_wal_stays_held_and_no_repository_discards() -> None:
    assert _config_for({"archive-held": STANZA}) == "workload.apply_config(stanza=-, hold-wal)"
    assert _config_for({}) == "workload.apply_config(stanza=-)"
    assert _config_for({}, None) == "workload.apply_config(stanza=-, s3=-)"
