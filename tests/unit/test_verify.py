"""verify (docs/behaviour/verify.md): its refusals change nothing, a clean repository
records "valid" per backup, an invalid backup fails the action by name and is recorded,
backup-id narrows what is reported, and a record that cannot be written is logged only."""

from __future__ import annotations

import json

from fakes import STANZA, FakeHost, backup, stanza_info

from pgbackups.core import messages as msg
from pgbackups.core.handlers.verify import on_verify
from pgbackups.core.outcomes import ActionFailed, ActionResults
from pgbackups.core.repository import VerifiedBackup, VerifyReport

FULL, DIFF = "20261128-143926F", "20261128-143926F_20261128-144435D"
KEY = "pg/pgbackups-verify.json"


def good(label: str) -> VerifiedBackup:
    return VerifiedBackup(label, "valid", 964, 964, 0, 0, 0, 0)


def host_with(*found: VerifiedBackup, wal: tuple[int, int] = (4, 4)) -> FakeHost:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info(backups=[backup(FULL), backup(DIFF)])]
    host.fake_tool.verify_report = VerifyReport(STANZA, True, found, *wal)
    return host


def recorded(host: FakeHost) -> dict[str, dict[str, dict[str, str]]]:
    body: dict[str, dict[str, dict[str, str]]] = json.loads(host.store.objects[KEY])
    return body


def test_a_clean_repository_is_recorded_valid_per_backup() -> None:
    host = host_with(good(FULL), good(DIFF))
    outcome = on_verify(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["verify-status"] == "ok"
    rows = json.loads(outcome.results["backups"])
    assert [r["backup-id"] for r in rows] == ["2026-11-28T14:39:26Z", "2026-11-28T14:44:35Z"]
    assert outcome.results["wal"] == "4 of 4 archived WAL segments valid"
    now = host.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert recorded(host) == {
        STANZA: {FULL: {"at": now, "result": "valid"}, DIFF: {"at": now, "result": "valid"}}
    }
    assert host.calls == [
        f"backup_tool.info({STANZA})",
        "backup_tool.verify",
        f"object_store.get({KEY})",
        f"object_store.put({KEY})",
    ]


def test_a_corrupted_backup_fails_the_action_by_name_and_is_recorded() -> None:
    bad = VerifiedBackup(FULL, "invalid", 964, 963, 0, 1, 0, 0)
    host = host_with(bad, good(DIFF))
    outcome = on_verify(host, {})
    assert outcome == ActionFailed(
        "Verification failed: backup 2026-11-28T14:39:26Z: 1 file with an invalid checksum"
    )
    assert recorded(host)[STANZA] == {
        FULL: {"at": "2026-11-28T15:00:00Z", "result": "invalid: 1 file with an invalid checksum"},
        DIFF: {"at": "2026-11-28T15:00:00Z", "result": "valid"},
    }


def test_backup_id_narrows_the_report_not_what_is_recorded() -> None:
    bad = VerifiedBackup(FULL, "invalid", 964, 963, 0, 1, 0, 0)
    host = host_with(bad, good(DIFF))
    outcome = on_verify(host, {"backup-id": "2026-11-28T14:44:35Z"})
    assert isinstance(outcome, ActionResults)
    assert [r["backup-id"] for r in json.loads(outcome.results["backups"])] == [
        "2026-11-28T14:44:35Z"
    ]
    assert set(recorded(host)[STANZA]) == {FULL, DIFF}


def test_invalid_wal_fails_a_whole_repository_verify() -> None:
    host = host_with(good(FULL), good(DIFF), wal=(4, 3))
    outcome = on_verify(host, {})
    assert outcome == ActionFailed("Verification failed: 3 of 4 archived WAL segments valid")


def test_an_unknown_backup_is_refused_before_verify_runs() -> None:
    host = host_with(good(FULL))
    assert on_verify(host, {"backup-id": "2026-11-28T09:00:00Z"}) == ActionFailed(
        "Invalid backup-id: 2026-11-28T09:00:00Z"
    )
    assert host.calls == [f"backup_tool.info({STANZA})"]


def test_without_s3_nothing_runs() -> None:
    host = FakeHost(s3=None)
    assert on_verify(host, {}) == ActionFailed(msg.S3_RELATION_MISSING_VERIFY)
    assert host.calls == []


def test_a_failing_verify_is_the_actions_failure() -> None:
    host = host_with()
    host.fake_tool.verify_report = None
    assert on_verify(host, {}) == ActionFailed(
        "Failed to verify the repository: ERROR: [039]: HTTP request failed"
    )
    assert KEY not in host.store.objects


def test_an_unwritable_record_is_logged_not_failed() -> None:
    host = host_with(good(FULL), good(DIFF))
    host.store.put_errors = {"pgbackups-verify.json": "AccessDenied"}
    assert isinstance(on_verify(host, {}), ActionResults)


def test_an_expired_backup_leaves_the_record() -> None:
    host = host_with(good(FULL))
    old = {STANZA: {"20261001-000000F": {"at": "2026-10-01T00:00:00Z", "result": "valid"}}}
    host.store.objects[KEY] = json.dumps(old).encode()
    on_verify(host, {})
    assert set(recorded(host)[STANZA]) == {FULL}
