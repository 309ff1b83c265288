"""parse_info, parse_history_listing and error-line extraction, from literal output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pgbackups.adapters.pgbackrest import (
    UNKNOWN_ERROR,
    explain_cipher_problem,
    extract_error_line,
    parse_history_listing,
    parse_info,
    parse_last_commit,
    read_config_secrets,
    scrub,
)
from pgbackups.core.host import CommandResult
from pgbackups.core.repository import TimelineBranch, lsn_value, parse_history_file


def _backup(
    label: str,
    btype: str,
    start: int,
    wal: str,
    *,
    prior: str | None = None,
    reference: list[str] | None = None,
    error: bool = False,
) -> dict[str, Any]:
    return {
        "archive": {"start": wal, "stop": wal},
        "backrest": {"format": 5, "version": "2.45"},
        "database": {"id": 1, "repo-key": 1},
        "error": error,
        "info": {
            "delta": 1499402,
            "repository": {"delta": 286334, "size": 16479748},
            "size": 133052183,
        },
        "label": label,
        "lsn": {"start": "0/A000028", "stop": "0/A0017C0"},
        "prior": prior,
        "reference": reference,
        "timestamp": {"start": start, "stop": start + 9},
        "type": btype,
    }


def _stanza(name: str, backups: list[dict[str, Any]], code: int = 0) -> dict[str, Any]:
    return {
        "archive": [
            {
                "database": {"id": 1, "repo-key": 1},
                "id": "15-1",
                "max": "00000001000000000000000C",
                "min": "000000010000000000000001",
            }
        ],
        "backup": backups,
        "cipher": "none",
        "db": [{"id": 1, "repo-key": 1, "system-id": 7713227888885071459, "version": "15"}],
        "name": name,
        "repo": [{"cipher": "none", "key": 1, "status": {"code": code, "message": "ok"}}],
        "status": {"code": code, "lock": {"backup": {"held": False}}, "message": "ok"},
    }


FULL = "20261128-142532F"
DIFF = f"{FULL}_20261128-142542D"
INCR = f"{FULL}_20261128-142545I"

HEALTHY = json.dumps(
    [
        _stanza(
            "local.demo",
            [
                _backup(FULL, "full", 1795875932, "000000010000000000000008"),
                _backup(
                    DIFF,
                    "diff",
                    1795875942,
                    "00000001000000000000000A",
                    prior=FULL,
                    reference=[FULL],
                ),
                _backup(
                    INCR,
                    "incr",
                    1795875945,
                    "00000001000000000000000C",
                    prior=DIFF,
                    reference=[FULL, DIFF],
                ),
            ],
        )
    ]
)

MISSING = (
    '[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"nonexistent",'
    '"repo":[{"cipher":"none","key":1,"status":{"code":1,"message":"missing stanza path"}}],'
    '"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]'
)

UNREADABLE = (
    '[{"archive":[],"backup":[],"cipher":"none","db":[],"name":"[invalid]",'
    '"repo":[{"cipher":"none","key":1,"status":{"code":99,"message":"[HostConnectError] '
    "unable to get address for 'b.localhost': [-2] Name or service not known\"}}],"
    '"status":{"code":99,"lock":{"backup":{"held":false}},"message":"other"}}]'
)


def test_healthy_stanza_with_full_diff_incr() -> None:
    [stanza] = parse_info(HEALTHY)
    assert stanza.name == "local.demo"
    assert stanza.status_code == 0 and stanza.exists
    assert stanza.system_ids == (7713227888885071459,)
    assert stanza.backup_lock_held is False
    assert stanza.archive_min == "000000010000000000000001"
    assert stanza.archive_max == "00000001000000000000000C"
    full, diff, incr = stanza.backups
    assert [b.type for b in stanza.backups] == ["full", "diff", "incr"]
    assert full.label == FULL and full.backup_id == "2026-11-28T14:25:32Z"
    assert full.reference == () and full.prior is None
    assert diff.reference == (FULL,) and diff.prior == FULL
    assert diff.backup_id == "2026-11-28T14:25:42Z"
    assert incr.reference == (FULL, DIFF) and incr.prior == DIFF
    assert incr.start == datetime.fromtimestamp(1795875945, UTC)
    assert incr.start.tzinfo is not None and incr.stop.tzinfo is not None
    assert (incr.stop - incr.start).total_seconds() == 9
    assert incr.lsn_start == "0/A000028" and incr.lsn_stop == "0/A0017C0"
    assert incr.wal_start == "00000001000000000000000C"
    assert incr.timeline == 1
    assert (incr.size, incr.delta, incr.repo_size, incr.repo_delta) == (
        133052183,
        1499402,
        16479748,
        286334,
    )
    assert incr.stanza == "local.demo"
    assert all(b.finished and b.error_message == "" for b in stanza.backups)


def test_backups_come_out_oldest_first() -> None:
    data = json.loads(HEALTHY)
    data[0]["backup"].reverse()
    [stanza] = parse_info(json.dumps(data))
    assert [b.label for b in stanza.backups] == [FULL, DIFF, INCR]


def test_missing_stanza() -> None:
    [stanza] = parse_info(MISSING)
    assert stanza.name == "nonexistent"
    assert stanza.status_code == 1 and not stanza.exists
    assert stanza.status_message == "missing stanza path"
    assert stanza.backups == () and stanza.system_ids == ()
    assert stanza.archive_min is None and stanza.archive_max is None


def test_unreadable_repository_carries_the_repo_message() -> None:
    [stanza] = parse_info(UNREADABLE)
    assert stanza.status_code == 99
    assert stanza.status_message.startswith("other: [HostConnectError]")


def test_empty_repository_is_an_empty_list() -> None:
    assert parse_info("[]") == []


def test_failed_backup() -> None:
    bad = _backup(FULL, "full", 1795875932, "000000010000000000000008", error=True)
    bad_files = _backup(
        "20261128-150000F", "full", 1795878000, "000000010000000000000010", error=True
    )
    bad_files["error-list"] = ["base/1/1", "base/1/2", "base/1/3", "base/1/4"]
    [stanza] = parse_info(json.dumps([_stanza("s", [bad, bad_files])]))
    first, second = stanza.backups
    assert first.error and not first.finished
    assert FULL in first.error_message
    assert second.error_message == "page checksum errors in base/1/1, base/1/2, base/1/3 and 1 more"


def test_timeline_is_a_number_from_hex() -> None:
    data = [
        _stanza(
            "s",
            [
                _backup(FULL, "full", 1795875932, "00000009000000000000000E"),
                _backup(
                    INCR,
                    "incr",
                    1795875945,
                    "0000000A0000000000000011",
                    prior=FULL,
                    reference=[FULL],
                ),
            ],
        )
    ]
    [stanza] = parse_info(json.dumps(data))
    assert [b.timeline for b in stanza.backups] == [9, 10]
    assert stanza.backups[1].timeline > stanza.backups[0].timeline


def test_lock_held_and_several_stanzas() -> None:
    busy = _stanza("a", [])
    busy["status"]["lock"]["backup"]["held"] = True
    busy["status"]["code"] = 2
    busy["status"]["message"] = "no valid backups"
    other = _stanza("b", [])
    stanzas = parse_info(json.dumps([busy, other]))
    assert [s.name for s in stanzas] == ["a", "b"]
    assert stanzas[0].backup_lock_held and stanzas[0].status_code == 2 and stanzas[0].exists


@pytest.mark.parametrize("text", ["", "not json", "{}", "[1, 2]", '[{"backup": [{"x": 1}]}]'])
def test_bad_output_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_info(text)


# --- repo-ls of .history files ----------------------------------------------------------


def test_history_listing() -> None:
    listing = {
        "15-1/00000002.history": {"type": "file", "size": 42, "time": 1795876000},
        "15-1/0000000A.history": {"type": "file", "size": 84, "time": 1795877000},
        "15-1/000000010000000000000002.00000028.backup.history": {
            "type": "file",
            "size": 1,
            "time": 1,
        },
        "15-1": {"type": "path"},
    }
    records = parse_history_listing("local.demo", json.dumps(listing), "archive/local.demo")
    assert [r.timeline for r in records] == [2, 10]
    assert records[1].key == "archive/local.demo/15-1/0000000A.history"
    assert records[1].created == datetime.fromtimestamp(1795877000, UTC)
    assert all(r.stanza == "local.demo" for r in records)


def test_history_listing_empty() -> None:
    assert parse_history_listing("s", "{}", "archive/s") == []
    assert parse_history_listing("s", "", "archive/s") == []
    with pytest.raises(ValueError):
        parse_history_listing("s", "[]", "archive/s")


# --- error lines --------------------------------------------------------------------------


def _result(stdout: str = "", stderr: str = "", rc: int = 1) -> CommandResult:
    return CommandResult(("pgbackrest", "check"), rc, stdout, stderr)


def test_error_in_stderr() -> None:
    result = _result(
        stdout="2026-11-28 15:20:42.797 P00   INFO: stanza-create command end: aborted with "
        "exception [056]\n",
        stderr="WARN: unable to check pg1: [DbConnectError] unable to connect\n"
        "ERROR: [056]: unable to find primary cluster - cannot proceed\n"
        "       HINT: are all available clusters in recovery?\n",
    )
    assert extract_error_line(result) == (
        "ERROR: [056]: unable to find primary cluster - cannot proceed"
    )


def test_error_in_stdout_with_log_prefix() -> None:
    result = _result(
        stdout="2026-11-28 15:20:42.796 P00   INFO: check command begin 2.45: --stanza=s\n"
        "2026-11-28 15:20:43.100 P00  ERROR: [029]: expected protocol 'https' in URL\n"
        "2026-11-28 15:20:43.101 P00   INFO: check command end: aborted with exception [029]\n"
    )
    assert extract_error_line(result) == "ERROR: [029]: expected protocol 'https' in URL"


def test_multiple_errors_are_joined_and_deduplicated() -> None:
    result = _result(
        stdout="2026-11-28 15:20:43.100 P00  ERROR: [082]: WAL segment was not archived\n",
        stderr="ERROR: [082]: WAL segment was not archived\nERROR: [055]: unable to load info\n",
    )
    assert extract_error_line(result) == (
        "ERROR: [082]: WAL segment was not archived; ERROR: [055]: unable to load info"
    )


def test_no_error_line_falls_back_to_the_last_line() -> None:
    result = _result(stdout="2026-11-28 15:20:43.101 P00   INFO: something odd\n\n")
    assert extract_error_line(result) == "INFO: something odd"
    timed_out = CommandResult(("pgbackrest",), -1, "", "\ntimed out after 60s", True)
    assert extract_error_line(timed_out) == "timed out after 60s"


def test_no_output_at_all() -> None:
    assert extract_error_line(_result()) == UNKNOWN_ERROR


def test_secrets_are_scrubbed() -> None:
    result = _result(
        stderr="ERROR: [039]: HTTP request failed: key AKIAEXAMPLE secret s3cr3t/Value\n"
        "ERROR: [031]: bad option --repo1-s3-key-secret=anothersecret\n"
    )
    line = extract_error_line(result, ["AKIAEXAMPLE", "s3cr3t/Value"])
    assert "AKIAEXAMPLE" not in line and "s3cr3t/Value" not in line
    assert "anothersecret" not in line
    assert line.startswith("ERROR: [039]: HTTP request failed")
    assert "<redacted>" in line


@pytest.mark.parametrize(
    "option",
    [
        "repo1-s3-key",
        "REPO12-S3-KEY-SECRET",
        "s3-token",
        "repo1-cipher-pass",
        "Cipher-Pass",
        "repo3-azure-key",
        "repo1-gcs-key",
        "key-secret",
        "Secret-Key",
        "access-key",
    ],
)
def test_scrub_finds_every_secret_option_past_its_shortcut(option: str) -> None:
    # scrub skips the option pattern for text holding no option name (a large listing):
    # every spelling the pattern knows must still get there, in any case.
    assert scrub(f"x {option}=v4lue y") == f"x {option}=<redacted> y"
    assert scrub(f"{option}: v4lue") == f"{option}: <redacted>"


def test_scrub_of_non_ascii_text_still_runs_the_pattern() -> None:
    # IGNORECASE lets the long s match "s": no ASCII shortcut may skip it.
    assert scrub("repo1-\u017f3-key=v4lue é") == "repo1-\u017f3-key=<redacted> é"


def test_scrub_keeps_pgbackrests_own_redaction() -> None:
    text = "--repo1-s3-key=<redacted> --repo1-s3-key-secret=<redacted> --stanza=s"
    assert scrub(text) == text


def test_read_config_secrets(tmp_path: Any) -> None:
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text("[global]\nrepo1-s3-key=AK1\nrepo1-s3-key-secret=SK/1+x\nrepo1-path=/p\n")
    assert set(read_config_secrets(conf)) == {"AK1", "SK/1+x"}
    assert read_config_secrets(tmp_path / "absent.conf") == ()


S3_403 = """\
ERROR: [039]: HTTP request failed with 403 (Forbidden):
       *** Path/Query ***:
       GET /pgbr/?delimiter=%2F&list-type=2&prefix=it%2Fbackup%2F
       *** Request Headers ***:
       authorization: <redacted>
       host: localhost
       x-amz-date: <redacted>
       *** Response Headers ***:
       content-length: 220
       *** Response Content ***:
       <?xml version="1.0" encoding="UTF-8"?>
       <Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we \
calculated does not match.</Message></Error>
"""


def test_http_failure_carries_the_s3_code() -> None:
    result = _result(
        stdout="2026-11-28 15:27:59.001 P00   INFO: stanza-create command begin 2.45\n"
        "2026-11-28 15:27:59.101 P00  ERROR: [039]: HTTP request failed with 403 (Forbidden):\n"
        + "".join(f"       {ln}\n" for ln in S3_403.splitlines()[1:])
        + "2026-11-28 15:27:59.102 P00   INFO: stanza-create command end: aborted\n",
        stderr=S3_403,
    )
    assert extract_error_line(result) == (
        "ERROR: [039]: HTTP request failed with 403 (Forbidden): SignatureDoesNotMatch"
    )


def test_unreadable_repository_message_is_condensed() -> None:
    data = json.loads(UNREADABLE)
    data[0]["repo"][0]["status"]["message"] = "[ProtocolError] " + S3_403.split(": ", 2)[2]
    [stanza] = parse_info(json.dumps(data))
    assert stanza.status_message == (
        "other: [ProtocolError] HTTP request failed with 403 (Forbidden): SignatureDoesNotMatch"
    )


def test_history_file_lines_become_branches_oldest_first() -> None:
    # What PostgreSQL 15 writes on promotion (tabs), with a comment and a blank line.
    text = (
        "1\t0/5000000\tno recovery target specified\n"
        "\n"
        "# a comment\n"
        "2\t1/A0000028\tbefore 2026-11-28 10:30:00+00\n"
    )
    assert parse_history_file(text) == (
        TimelineBranch(1, "0/5000000"),
        TimelineBranch(2, "1/A0000028"),
    )
    assert parse_history_file("") == ()


@pytest.mark.parametrize("text", ["1\n", "x\t0/1\n", "1\tnot-an-lsn\n", "1\t0/XYZ\n"])
def test_a_malformed_history_file_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="history file line 1"):
        parse_history_file(text)


def test_lsns_compare_as_numbers() -> None:
    assert lsn_value("0/5000000") == 0x5000000
    assert lsn_value("1/0") == 1 << 32
    assert lsn_value("0/FFFFFFFF") < lsn_value("1/0")
    assert lsn_value("9/0") < lsn_value("10/0")
    with pytest.raises(ValueError):
        lsn_value("5000000")


def test_last_commit_is_the_last_commit_or_abort_line_of_pg_waldump() -> None:
    output = (
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/03000060, "
        "prev 0/03000028, desc: COMMIT 2026-12-02 10:26:03.466335 UTC\n"
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/030000A0, "
        "prev 0/03000060, desc: ABORT 2026-12-02 10:26:04 UTC\n"
        "rmgr: Transaction len (rec/tot):     66/    66, tx:          0, lsn: 0/030000E0, "
        "prev 0/030000A0, desc: PREPARE gid 'x': 2026-12-02 10:27:00.1 UTC\n"
        "pg_waldump: error: error in WAL record at 0/3000120: invalid record length\n"
    )
    assert parse_last_commit(output) == datetime(2026, 12, 2, 10, 26, 4, tzinfo=UTC)
    assert parse_last_commit("rmgr: XLOG desc: SWITCH\n") is None


# pgBackRest 2.45's words for an encryption mismatch, as measured (info --output=json's
# status message; the decrypted garbage of a wrong passphrase cut short here).
_WRONG = (
    "[FormatError] unable to load info file '/r/backup/s/backup.info' or "
    "'/r/backup/s/backup.info.copy':\nFormatError: key/value found outside of section at "
    "line 1: \x8f\x1c\x02y\nHINT: backup.info cannot be opened"
)
_PLAIN_ON_ENCRYPTED = _WRONG.replace("\x8f\x1c\x02y", "Salted__\x8f\x1c")
_ENCRYPTED_ON_PLAIN = (
    "[CryptoError] unable to load info file '/r/backup/s/backup.info' or "
    "'/r/backup/s/backup.info.copy':\nCryptoError: cipher header invalid\n"
    "HINT: is or was the repo encrypted?"
)


@pytest.mark.parametrize(
    ("output", "start"),
    [
        (_WRONG, "the repository cannot be decrypted: its encryption passphrase is not"),
        (_PLAIN_ON_ENCRYPTED, "the repository is encrypted and no encryption passphrase is set"),
        (_ENCRYPTED_ON_PLAIN, "the repository is not encrypted but an encryption passphrase"),
    ],
    ids=["wrong", "none-set", "not-encrypted"],
)
def test_an_encryption_mismatch_is_explained_without_the_garbage(output: str, start: str) -> None:
    explained = explain_cipher_problem(output)
    assert explained is not None and explained.startswith(start)
    assert explained.endswith("(/r/backup/s/backup.info)")
    assert "\x8f" not in explained


def test_other_errors_are_no_encryption_mismatch() -> None:
    assert explain_cipher_problem("ERROR: [039]: HTTP request failed") is None


def test_info_with_raw_bytes_in_a_status_message_still_parses() -> None:
    text = (
        json.dumps(
            [{"name": "s", "status": {"code": 99, "message": "other"}, "repo": [], "db": []}]
        )
        .replace('"other"', '"other \\u0001"')
        .replace("\\u0001", "\x01")
    )
    (stanza,) = parse_info(text)
    assert stanza.status_code == 99
