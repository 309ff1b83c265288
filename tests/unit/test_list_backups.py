"""list-backups (docs/behaviour/list-backups.md): every branch, the exact table, JSON, an empty
repository, and timelines sorted as numbers
(docs/behaviour/list-backups.md#order-oldest-first-timelines-as-numbers)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fakes import STANZA, FakeHost, backup, stanza_info, timeline

from pgbackups.core import messages as msg
from pgbackups.core.archive import ArchivedSegment
from pgbackups.core.handlers.list_backups import on_list_backups
from pgbackups.core.listing import COLUMNS
from pgbackups.core.outcomes import ActionFailed, ActionResults

HEADER = (
    "backup-id            | action              | status   | reference-backup-id  | "
    "LSN start/stop          | start-time           | finish-time          | timeline | "
    f"{'backup-path':<46} | {'trigger':<9} | last-verified"
)
TOP = [
    "Storage bucket name: backups",
    "Backups base path: /pg/backup/",
    "",
    HEADER,
    "-" * len(HEADER),
]
ROWS = [
    "2026-11-28T14:39:26Z | full backup         | finished | None                 | "
    "0/2000028 / 0/2000100   | 2026-11-28T14:39:26Z | 2026-11-28T14:44:26Z | 1        | "
    f"{'/local.main/20261128-143926F':<46} | scheduled | 2026-11-28T16:00:00Z valid",
    "2026-11-28T14:44:35Z | differential backup | finished | 2026-11-28T14:39:26Z | "
    "0/2000028 / 0/2000100   | 2026-11-28T14:44:35Z | 2026-11-28T14:49:35Z | 1        | "
    f"{'/local.main/20261128-143926F_20261128-144435D':<46} | manual    | "
    "2026-11-28T16:00:00Z invalid: 1 file with an invalid checksum",
    "2026-11-28T14:50:00Z | restore             | finished | None                 | "
    "n/a                     | 2026-11-28T14:50:00Z | n/a                  | 2        | "
    f"{'n/a':<46} | n/a       | n/a",
    "2026-11-28T15:00:00Z | incremental backup  | failed: ERROR: [056]: x | "
    "2026-11-28T14:39:26Z | 0/2000028 / 0/2000100   | 2026-11-28T15:00:00Z | "
    "2026-11-28T15:05:00Z | 2        | "
    f"{'/local.main/20261128-143926F_20261128-150000I':<46} | manual    | -",
]


def listing_host() -> FakeHost:
    host = FakeHost()
    host.fake_tool.stanzas = [
        stanza_info(
            backups=[
                replace(backup("20261128-143926F"), annotations=(("trigger", "scheduled"),)),
                backup("20261128-143926F_20261128-144435D"),
                backup(
                    "20261128-143926F_20261128-150000I",
                    error=True,
                    error_message="ERROR: [056]: x",
                    timeline=2,
                ),
            ]
        )
    ]
    host.fake_tool.timeline_records = {
        STANZA: [timeline(2, datetime(2026, 11, 28, 14, 50, tzinfo=UTC))]
    }
    host.fake_tool.commit_times = {"000000010000000000000002": LAST_COMMIT}
    # The verify action's record (core/verification.py): two backups read once.
    host.store.objects["pg/pgbackups-verify.json"] = json.dumps(
        {
            STANZA: {
                "20261128-143926F": {"at": "2026-11-28T16:00:00Z", "result": "valid"},
                "20261128-143926F_20261128-144435D": {
                    "at": "2026-11-28T16:00:00Z",
                    "result": "invalid: 1 file with an invalid checksum",
                },
            }
        }
    ).encode()
    return host


LAST_COMMIT = datetime(2026, 11, 28, 14, 55, 0, 500000, tzinfo=UTC)
WINDOW = [
    "",
    "Recoverable window (restore-to-time reaches, per timeline):",
    # the full backup's end (no commit in its last second) -> 1 µs before the last
    # commit; the differential lies inside it; timeline 2 has no finished backup
    "  timeline 1: 2026-11-28T14:44:26Z (backup 2026-11-28T14:39:26Z) -> "
    "2026-11-28T14:55:00.499999Z (before the last archived commit, in WAL "
    "000000010000000000000002)",
]


def test_table_full_call_sequence_and_exact_text() -> None:
    host = listing_host()
    outcome = on_list_backups(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["backups"] == "\n".join([*TOP, *ROWS, *WINDOW])
    assert json.loads(outcome.results["recoverable-window"]) == [
        {
            "stanza": STANZA,
            "timeline": 1,
            "earliest": "2026-11-28T14:44:26Z",
            "earliest-backup": "2026-11-28T14:39:26Z",
            "latest": "2026-11-28T14:55:00.499999Z",
            "last-commit": "2026-11-28T14:55:00.500000Z",
            "latest-segment": "000000010000000000000002",
            "latest-note": None,
            "gap": None,
        }
    ]
    assert host.calls == [
        "backup_tool.info()",
        # One listing of the archive: the timelines, and the WAL whose gaps are shown.
        f"backup_tool.archive({STANZA})",
        "object_store.get(pg/pgbackups-verify.json)",  # when each backup was verified
        "backup_tool.history(2)",  # the window follows a restored timeline's lineage
        "backup_tool.last_commit_time(000000010000000000000002)",
        "backup_tool.last_commit_time(000000010000000000000002, 0/2000100)",  # its end
    ]


def test_table_is_the_default_format() -> None:
    assert on_list_backups(listing_host(), {"format": "table"}) == (
        on_list_backups(listing_host(), {})
    )


def test_empty_repository_lists_a_header_and_no_rows() -> None:
    host = FakeHost()
    assert on_list_backups(host, {}) == ActionResults({"backups": "\n".join(TOP)})
    assert host.calls == ["backup_tool.info()", "object_store.get(pg/pgbackups-verify.json)"]


def test_stanza_never_created_lists_no_rows_and_no_timelines() -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info(status_code=1, system_ids=())]
    assert on_list_backups(host, {}) == ActionResults({"backups": "\n".join(TOP)})
    assert host.calls == ["backup_tool.info()", "object_store.get(pg/pgbackups-verify.json)"]


def test_json_has_the_same_rows() -> None:
    outcome = on_list_backups(listing_host(), {"format": "json"})
    assert isinstance(outcome, ActionResults)
    rows = json.loads(outcome.results["backups"])
    assert [list(r) for r in rows] == [[*COLUMNS, "last-verified"]] * 4
    assert rows[0]["last-verified"] == "2026-11-28T16:00:00Z valid"
    assert rows[3]["last-verified"] is None  # never verified
    assert [r["action"] for r in rows] == [
        "full backup",
        "differential backup",
        "restore",
        "incremental backup",
    ]
    assert rows[3]["status"] == "failed: ERROR: [056]: x"
    assert rows[3]["timeline"] == 2
    assert rows[1]["reference-backup-id"] == "2026-11-28T14:39:26Z"
    assert rows[0]["reference-backup-id"] is None
    assert rows[2]["LSN start/stop"] is None and rows[2]["finish-time"] is None


def test_json_of_an_empty_repository_is_an_empty_list() -> None:
    outcome = on_list_backups(FakeHost(), {"format": "json"})
    assert outcome == ActionResults({"backups": "[]"})


def test_root_path_base() -> None:
    host = FakeHost(s3={"bucket": "bkt", "access-key": "a", "secret-key": "s"})
    outcome = on_list_backups(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["backups"].splitlines()[:2] == [
        "Storage bucket name: bkt",
        "Backups base path: /backup/",
    ]


def test_foreign_stanza_is_listed_too() -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [
        stanza_info("old.main", backups=[backup("20261001-000000F", stanza="old.main")]),
        stanza_info(backups=[backup("20261128-143926F")]),
    ]
    outcome = on_list_backups(host, {"format": "json"})
    assert isinstance(outcome, ActionResults)
    paths = [r["backup-path"] for r in json.loads(outcome.results["backups"])]
    assert paths == ["/old.main/20261001-000000F", f"/{STANZA}/20261128-143926F"]
    assert host.calls == [
        "backup_tool.info()",
        f"backup_tool.archive({STANZA})",  # listed while info runs
        "backup_tool.timelines(old.main)",
        "object_store.get(pg/pgbackups-verify.json)",
        # only this cluster's window: a foreign stanza's WAL is not read
        "backup_tool.last_commit_time(000000010000000000000002)",
        "backup_tool.last_commit_time(000000010000000000000002, 0/2000100)",  # its end
    ]


def test_twelve_timelines_sort_as_numbers() -> None:
    host = FakeHost()
    at = datetime(2026, 11, 28, 12, tzinfo=UTC)
    # All created within the same second, listed out of order: only the number can order them.
    host.fake_tool.timeline_records = {
        STANZA: [timeline(n, at) for n in (10, 2, 12, 9, 11, 3, 4, 5, 6, 7, 8, 1)]
    }
    host.fake_tool.stanzas = [stanza_info()]
    outcome = on_list_backups(host, {"format": "json"})
    assert isinstance(outcome, ActionResults)
    numbers = [r["timeline"] for r in json.loads(outcome.results["backups"])]
    assert numbers == list(range(1, 13))


def test_rows_sort_by_time_not_by_text() -> None:
    host = FakeHost()
    base = datetime(2026, 11, 28, 9, tzinfo=UTC)
    records = [timeline(n, base + timedelta(hours=n)) for n in range(2, 14)]
    host.fake_tool.timeline_records = {STANZA: list(reversed(records))}
    host.fake_tool.stanzas = [
        stanza_info(backups=[backup("20261128-100000F"), backup("20261128-090000F")])
    ]
    outcome = on_list_backups(host, {"format": "json"})
    assert isinstance(outcome, ActionResults)
    rows = json.loads(outcome.results["backups"])
    assert [r["backup-id"] for r in rows] == sorted(r["backup-id"] for r in rows)
    assert [r["timeline"] for r in rows if r["action"] == "restore"] == list(range(2, 14))
    assert rows[0]["action"] == "full backup"


FAILURES = [
    ("no-relation", {"s3": None}, {}, msg.S3_RELATION_MISSING_LIST, []),
    (
        "missing-parameters",
        {"s3": {"bucket": "bkt", "secret-key": "s"}},
        {},
        "Missing S3 parameters: ['access-key']",
        [],
    ),
    (
        "info-fails",
        {"info_error": "ERROR: [039]: HTTP request failed"},
        {},
        f"{msg.FAILED_TO_LIST_BACKUPS}: ERROR: [039]: HTTP request failed",
        ["backup_tool.info()"],
    ),
    (
        "timelines-fail",
        {"timelines_error": "ERROR: [039]: repo-ls failed"},
        {},
        f"{msg.FAILED_TO_LIST_BACKUPS}: ERROR: [039]: repo-ls failed",
        ["backup_tool.info()", f"backup_tool.archive({STANZA})"],
    ),
    (
        "bad-format",
        {"s3": None},
        {"format": "xml"},
        "Invalid format: xml. Possible values: table, json.",
        [],
    ),
]


@pytest.mark.parametrize(
    ("setup", "params", "message", "calls"),
    [f[1:] for f in FAILURES],
    ids=[f[0] for f in FAILURES],
)
def test_list_backups_failures(
    setup: dict[str, object], params: dict[str, str], message: str, calls: list[str]
) -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info()]
    if "s3" in setup:
        host.s3 = setup["s3"]  # type: ignore[assignment]
    host.fake_tool.info_error = setup.get("info_error")  # type: ignore[assignment]
    host.fake_tool.timelines_error = setup.get("timelines_error")  # type: ignore[assignment]
    assert on_list_backups(host, params) == ActionFailed(message)
    assert host.calls == calls


def test_gaps_in_the_archive_are_shown_beside_the_rows() -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info(backups=[backup("20261128-143926F")])]
    host.fake_tool.segments[STANZA] = [
        ArchivedSegment(1, 2, 100, "k2"),
        ArchivedSegment(1, 3, 0, "k3"),
        ArchivedSegment(1, 5, 100, "k5"),
    ]
    outcome = on_list_backups(host, {})
    assert isinstance(outcome, ActionResults)
    table = outcome.results["backups"]
    assert "WAL archive gaps" in table
    assert "WAL segment 000000010000000000000003 is empty in the repository" in table
    assert "WAL segment 000000010000000000000004 is missing from the repository" in table
    assert json.loads(outcome.results["archive-gaps"]) == [
        {"segment": "000000010000000000000003", "problem": "empty"},
        {"segment": "000000010000000000000004", "problem": "missing"},
    ]
    # The JSON listing keeps its shape: the rows, as before.
    as_json = on_list_backups(host, {"format": "json"})
    assert isinstance(as_json, ActionResults)
    assert isinstance(json.loads(as_json.results["backups"]), list)


def test_a_whole_archive_adds_nothing() -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info(backups=[backup("20261128-143926F")])]
    outcome = on_list_backups(host, {})
    assert isinstance(outcome, ActionResults)
    assert "archive-gaps" not in outcome.results
    assert "WAL archive gaps" not in outcome.results["backups"]
