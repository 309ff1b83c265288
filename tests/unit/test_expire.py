"""The expire action (core/handlers/expire.py): refused without a stanza, S3 settings or
while a backup runs; otherwise ``info``, ``expire``, ``info``, and the results say which
backups and which WAL went, read from the repository."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import STANZA, FakeHost, backup, failed, stanza_info

from pgbackups.core import messages as msg
from pgbackups.core.handlers.expire import on_expire
from pgbackups.core.outcomes import ActionFailed, ActionResults

OLD, MIDDLE, NEW = "20261126-100000F", "20261127-100000F", "20261128-100000F"


def host_with_three_fulls(**kw: object) -> FakeHost:
    host = FakeHost(app={"stanza": STANZA}, **kw)  # type: ignore[arg-type]
    info = stanza_info(backups=[backup(OLD), backup(MIDDLE), backup(NEW)])
    host.fake_tool.stanzas = [replace(info, archive_min="000000010000000000000002")]
    return host


def test_expire_says_what_it_removed() -> None:
    host = host_with_three_fulls(options={"retention-full": "2"})
    host.fake_tool.expire_removes = (OLD,)
    host.fake_tool.expire_archive_min = "000000010000000000000005"
    outcome = on_expire(host, {})
    assert outcome == ActionResults(
        {
            "expire-status": "backups expired",
            "expired-backups": "2026-11-26T10:00:00Z",
            "expired-wal": "000000010000000000000002 up to 000000010000000000000005",
            "kept-backups": "2",
            "retention": "full: 2 backups (count)",
        }
    )
    assert host.effects == [
        f"backup_tool.info({STANZA})",
        "backup_tool.expire",
        f"backup_tool.info({STANZA})",
    ]


def test_nothing_to_expire() -> None:
    host = host_with_three_fulls()
    outcome = on_expire(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["expire-status"] == msg.NOTHING_EXPIRED
    assert outcome.results["expired-backups"] == "none"
    assert outcome.results["expired-wal"] == "none"
    assert outcome.results["retention"] == "full: 9999999 days (time, S3 settings)"


@pytest.mark.parametrize(
    ("setup", "message", "expired"),
    [
        (lambda h: h.app_data.pop("stanza"), msg.STANZA_NOT_INITIALISED, False),
        (lambda h: setattr(h, "s3", None), msg.S3_RELATION_MISSING, False),
        (lambda h: h.s3.pop("bucket"), "Missing S3 parameters: ['bucket']", False),
        (
            lambda h: h.peer_bags.update({"main/1": {"creating-backup": "2026-11-28T14:59:00Z"}}),
            f"{msg.EXPIRE_BACKUP_RUNNING}: main/1 started one at 2026-11-28T14:59:00Z",
            False,
        ),
        (
            lambda h: setattr(h.fake_tool, "info_error", "ERROR: [039]: HTTP request failed"),
            f"{msg.FAILED_TO_EXPIRE}: ERROR: [039]: HTTP request failed",
            False,
        ),
        (
            lambda h: setattr(
                h.fake_tool, "expire_result", failed("ERROR: [050]: unable to acquire lock")
            ),
            f"{msg.FAILED_TO_EXPIRE}: ERROR: [050]: unable to acquire lock",
            True,
        ),
    ],
)
def test_refusals(setup: object, message: str, expired: bool) -> None:
    host = host_with_three_fulls()
    setup(host)  # type: ignore[operator]
    assert on_expire(host, {}) == ActionFailed(message)
    assert ("backup_tool.expire" in host.calls) is expired
