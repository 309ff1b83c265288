"""create-backup (docs/behaviour/create-backup.md): every branch of the chart, the "Always" step,
one backup per cluster, and the log object keys."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from fakes import (
    NOW,
    PRIMARY_ADDRESS,
    STANZA,
    TLS,
    VALID_S3,
    FakeHost,
    backup,
    failed,
    ok,
    stanza_info,
)

from pgbackups.core import messages as msg
from pgbackups.core.backup_claim import Claim
from pgbackups.core.handlers.create_backup import (
    bring_back_after_interrupted_backup,
    on_create_backup,
)
from pgbackups.core.host import CommandResult, UnitStatus
from pgbackups.core.outcomes import ActionFailed, ActionResults

NEW_LABEL = "20261128-150000F"
NEW_ID = "2026-11-28T15:00:00Z"
LATEST = f"object_store.put(pg/backup/{STANZA}/latest)"
MAINTENANCE = "set_status(maintenance: creating backup)"
CONFIG = f"workload.apply_config(stanza={STANZA})"
CONFIG_TLS = f"workload.apply_config(stanza={STANZA}, tls-server)"
HIDDEN = f"workload.apply_config(stanza={STANZA}, tls-server, connectivity=off, creating-backup)"
ALWAYS = ["unit_data[connectivity]=''", "unit_data[creating-backup]=''"]
CLAIMS = f"pg/backup/{STANZA}/backup-claims/"
CLAIM = f"{CLAIMS}main%2F0.20261128T150000000000Z"
# The claim in the repository (core/backup_claim.py): look, write, look again, running.
TAKE = [
    f"object_store.list_keys({CLAIMS})",
    f"object_store.put({CLAIM}.starting)",
    f"object_store.list_keys({CLAIMS})",
    f"object_store.put({CLAIM}.running)",
    f"object_store.list_keys({CLAIMS})",
    f"object_store.delete({CLAIM}.starting)",
]
RELEASE = f"object_store.delete({CLAIM}.running)"
FLAG = f"unit_data[creating-backup]={NEW_ID!r}"


def log_put(backup_id: str) -> str:
    return f"object_store.put(pg/backup/{STANZA}/{backup_id}/backup.log)"


def backup_host(*, replica: bool = False, **kwargs: object) -> FakeHost:
    """A unit ready to back up: stanza initialised; a replica gets TLS and a peer."""
    if replica:
        kwargs.setdefault("tls", TLS)
        kwargs.setdefault("planned_units", 2)
        kwargs.setdefault("peers", {"main/1": {}})
    kwargs.setdefault("app", {"stanza": STANZA})
    host = FakeHost(**kwargs)  # type: ignore[arg-type]
    host.fake_workload.primary = not replica
    host.fake_tool.stanzas = [stanza_info(backups=[backup("20261127-150000F")])]
    host.fake_tool.new_backup = backup(NEW_LABEL)
    return host


# ---------------------------------------------------------------------------
# Happy paths, every call


def test_primary_happy_path_full_call_sequence() -> None:
    host = backup_host(status=UnitStatus.active("Primary"))
    outcome = on_create_backup(host, {"type": "full"})
    assert outcome == ActionResults(
        {
            "backup-status": "backup created",
            "backup-id": NEW_ID,
            "type": "full",
            "requested-type": "full",
        }
    )
    assert host.calls == [
        "workload.is_primary",
        "workload.is_member_running",
        *TAKE,
        LATEST,
        FLAG,
        MAINTENANCE,
        "backup_tool.backup(full, on_primary=True)",
        f"backup_tool.info({STANZA})",
        log_put(NEW_ID),
        f"unit_data[backup-taken]={NEW_LABEL!r}",
        *ALWAYS,
        CONFIG,
        "set_status(active: Primary)",
        RELEASE,
    ]
    # The primary says it backs up, but is never hidden nor tagged out of elections.
    assert host.fake_workload.configs[-1].connectivity
    assert not host.fake_workload.configs[-1].creating_backup
    assert host.unit_dict == {"backup-taken": NEW_LABEL}  # for restore_state.ReplicaSet
    assert not [k for k in host.store.objects if k.startswith(CLAIMS)]
    assert host.status == UnitStatus.active("Primary")


def test_replica_happy_path_full_call_sequence() -> None:
    host = backup_host(replica=True)
    host.fake_tool.new_backup = backup(f"20261127-150000F_{NEW_LABEL[:-1]}I")
    outcome = on_create_backup(host, {"type": "incremental"})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["type"] == "incremental"
    assert "message" not in outcome.results
    assert host.calls == [
        "workload.is_primary",
        "workload.is_member_running",
        *TAKE,
        LATEST,
        FLAG,
        "unit_data[connectivity]='off'",
        HIDDEN,
        MAINTENANCE,
        "workload.primary_address",
        f"backup_tool.backup(incr, on_primary=False, primary={PRIMARY_ADDRESS})",
        f"backup_tool.info({STANZA})",
        log_put(NEW_ID),
        f"unit_data[backup-taken]='20261127-150000F_{NEW_LABEL[:-1]}I'",
        *ALWAYS,
        CONFIG_TLS,
        "set_status(active)",
        RELEASE,
    ]
    hidden = host.fake_workload.configs[0]
    assert not hidden.connectivity and hidden.creating_backup
    assert host.fake_workload.configs[-1].connectivity
    assert not host.fake_workload.configs[-1].creating_backup
    assert host.unit_dict == {"backup-taken": f"20261127-150000F_{NEW_LABEL[:-1]}I"}


def test_metadata_object_says_who_asked() -> None:
    host = backup_host()
    on_create_backup(host, {})
    body = host.store.objects[f"pg/backup/{STANZA}/latest"].decode()
    assert f"Date Backup Requested: {NEW_ID}" in body
    assert "Unit Name: main/0" in body
    assert "Backup Type: full" in body
    assert "pgbackups Version: 0.1.0" in body
    assert "very-secret" not in body


def test_logs_hold_stdout_and_stderr() -> None:
    host = backup_host()
    host.fake_tool.backup_result = ok(stdout="new backup label = 20261128-150000F", stderr="warn")
    on_create_backup(host, {})
    body = host.store.objects[f"pg/backup/{STANZA}/{NEW_ID}/backup.log"].decode()
    assert body == "Stdout:\nnew backup label = 20261128-150000F\n\nStderr:\nwarn\n"


# ---------------------------------------------------------------------------
# Every refusal, in chart order; none of them touches anything

Setup = Callable[[FakeHost], None]


def _blocked(host: FakeHost) -> None:
    host.status = UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY)


def _blocked_and_no_stanza(host: FakeHost) -> None:
    _blocked(host)
    host.app_data["stanza"] = ""
    host.calls.clear()


def _primary_of_tls_cluster(host: FakeHost) -> None:
    host.tls_material = TLS
    host.planned = 3


def _replica_without_tls(host: FakeHost) -> None:
    host.fake_workload.primary = False


def _role_unknown(host: FakeHost) -> None:
    host.fake_workload.unavailable = True


def _not_running(host: FakeHost) -> None:
    host.fake_workload.member_running = False
    host.fake_workload.state = "starting"


def _silent_after_not_running(host: FakeHost) -> None:
    """Patroni answered "not running", then stopped answering before its state was read."""
    host.fake_workload.member_running = False
    host.fake_workload.state = None


def _no_stanza(host: FakeHost) -> None:
    host.app_data["stanza"] = ""
    host.calls.clear()


def _no_relation(host: FakeHost) -> None:
    host.s3 = None


def _missing_keys(host: FakeHost) -> None:
    host.s3 = {"bucket": "backups"}


def _invalid_settings(host: FakeHost) -> None:
    host.s3 = {**VALID_S3, "endpoint": "s3.example.com"}


def _peer_backing_up(host: FakeHost) -> None:
    host.peer_bags = {"main/1": {"creating-backup": "2026-11-28T14:00:00Z"}}


def _own_flag_set(host: FakeHost) -> None:
    host.unit_data["creating-backup"] = "2026-11-28T14:00:00Z"
    host.calls.clear()


def _tls_primary_not_running(host: FakeHost) -> None:
    _primary_of_tls_cluster(host)
    _not_running(host)


def _replica_without_tls_not_running(host: FakeHost) -> None:
    _replica_without_tls(host)
    _not_running(host)


def _not_running_no_stanza(host: FakeHost) -> None:
    _not_running(host)
    _no_stanza(host)


def _no_stanza_no_relation(host: FakeHost) -> None:
    _no_stanza(host)
    _no_relation(host)


def _no_relation_and_peer_backing_up(host: FakeHost) -> None:
    _no_relation(host)
    _peer_backing_up(host)


def _peer_backing_up_and_metadata_fails(host: FakeHost) -> None:
    _peer_backing_up(host)
    _metadata_fails(host)


def _metadata_fails(host: FakeHost) -> None:
    host.store.put_errors = {"/latest": "AccessDenied"}


PATRONI_SILENT = "Patroni does not answer"
STARTING = "Patroni reports the member starting"

REFUSALS: list[tuple[str, Setup, str, list[str]]] = [
    ("blocked", _blocked, msg.BACKUP_UNIT_BLOCKED, []),
    ("blocked-wins-over-no-stanza", _blocked_and_no_stanza, msg.BACKUP_UNIT_BLOCKED, []),
    ("primary-of-tls-multi-unit", _primary_of_tls_cluster, msg.BACKUP_ON_PRIMARY, []),
    ("replica-without-tls", _replica_without_tls, msg.BACKUP_TLS_DISABLED, []),
    ("role-unknown", _role_unknown, f"{msg.BACKUP_NOT_RUNNING}: {PATRONI_SILENT}", []),
    ("member-not-running", _not_running, f"{msg.BACKUP_NOT_RUNNING}: {STARTING}", []),
    (
        "member-not-running-then-silent",
        _silent_after_not_running,
        f"{msg.BACKUP_NOT_RUNNING}: {PATRONI_SILENT}",
        [],
    ),
    ("stanza-not-initialised", _no_stanza, msg.STANZA_NOT_INITIALISED, []),
    ("no-s3-relation", _no_relation, msg.S3_RELATION_MISSING, []),
    ("missing-s3-keys", _missing_keys, "Missing S3 parameters: ['access-key', 'secret-key']", []),
    (
        "invalid-s3-settings",
        _invalid_settings,
        "Invalid S3 parameters: endpoint 's3.example.com' is not a URL; expected e.g. "
        "https://s3.example.com:9000",
        [],
    ),
    (
        "backup-running-on-a-peer",
        _peer_backing_up,
        f"{msg.BACKUP_ALREADY_RUNNING}: main/1 started one at 2026-11-28T14:00:00Z",
        [],
    ),
    (
        "backup-running-on-this-unit",
        _own_flag_set,
        f"{msg.BACKUP_ALREADY_RUNNING}: main/0 started one at 2026-11-28T14:00:00Z",
        [],
    ),
    (
        "metadata-upload-fails",
        _metadata_fails,
        msg.FAILED_TO_UPLOAD_METADATA,
        [*TAKE, LATEST, RELEASE],
    ),
    # Pairs of failing checks: the earlier box of the chart wins.
    ("primary-check-before-running", _tls_primary_not_running, msg.BACKUP_ON_PRIMARY, []),
    ("tls-check-before-running", _replica_without_tls_not_running, msg.BACKUP_TLS_DISABLED, []),
    ("running-before-stanza", _not_running_no_stanza, f"{msg.BACKUP_NOT_RUNNING}: {STARTING}", []),
    ("stanza-before-relation", _no_stanza_no_relation, msg.STANZA_NOT_INITIALISED, []),
    (
        "relation-before-running-backup",
        _no_relation_and_peer_backing_up,
        msg.S3_RELATION_MISSING,
        [],
    ),
    (
        "running-backup-before-metadata",
        _peer_backing_up_and_metadata_fails,
        f"{msg.BACKUP_ALREADY_RUNNING}: main/1 started one at 2026-11-28T14:00:00Z",
        [],
    ),
]


@pytest.mark.parametrize(
    ("setup", "message", "effects"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_create_backup_refusals(setup: Setup, message: str, effects: list[str]) -> None:
    host = backup_host()
    status = host.status = UnitStatus.active("Primary")
    setup(host)
    status = host.status
    unit_before = host.unit_dict
    assert on_create_backup(host, {"type": "full"}) == ActionFailed(message)
    assert host.effects == effects
    assert host.status == status
    assert host.unit_dict == unit_before
    assert "backup_tool.backup" not in " ".join(host.calls)


@pytest.mark.parametrize("bad", ["weekly", "FULL", "diff", "incr"])
def test_backup_type_is_validated_first(bad: str) -> None:
    host = backup_host(status=UnitStatus.blocked("anything"))
    assert on_create_backup(host, {"type": bad}) == ActionFailed(
        f"Invalid backup type: {bad}. Possible values: full, differential, incremental."
    )
    assert host.calls == []


@pytest.mark.parametrize(
    ("given", "tool_type", "result_type"),
    [
        ({}, "full", "full"),
        ({"type": ""}, "full", "full"),
        ({"type": "full"}, "full", "full"),
        ({"type": " differential "}, "diff", "differential"),
        ({"type": "incremental"}, "incr", "incremental"),
    ],
)
def test_backup_types_map_to_pgbackrest(
    given: dict[str, str], tool_type: str, result_type: str
) -> None:
    host = backup_host()
    letter = {"full": "F", "diff": "D", "incr": "I"}[tool_type]
    prefix = "" if tool_type == "full" else "20261127-150000F_"
    host.fake_tool.new_backup = backup(f"{prefix}{NEW_LABEL[:-1]}{letter}")
    outcome = on_create_backup(host, given)
    assert isinstance(outcome, ActionResults)
    assert outcome.results["type"] == result_type
    assert outcome.results["requested-type"] == result_type
    assert "message" not in outcome.results
    assert f"backup_tool.backup({tool_type}, on_primary=True)" in host.calls


def test_primary_of_multi_unit_cluster_without_tls_backs_up() -> None:
    host = backup_host(planned_units=3)
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert "backup_tool.backup(full, on_primary=True)" in host.calls


# ---------------------------------------------------------------------------
# The backup fails, or its logs cannot be uploaded


@dataclass
class FailureCase:
    result: CommandResult
    message: str
    log_id: str
    info_error: str | None = None
    put_errors: dict[str, str] = field(default_factory=dict)
    reads_info: bool = False


FAILURES = {
    "backup-fails-label-announced": FailureCase(
        CommandResult(
            ("pgbackrest",),
            56,
            "P00   INFO: new backup label = 20261128-150002F\n",
            "ERROR: [056]: unable to find primary cluster - cannot proceed\n",
        ),
        f"{msg.FAILED_TO_BACKUP}: ERROR: [056]: unable to find primary cluster - cannot proceed",
        "2026-11-28T15:00:02Z",
    ),
    "backup-fails-diff-label-announced": FailureCase(
        CommandResult(
            ("pgbackrest",),
            56,
            "new backup label = 20261127-150000F_20261128-150003D\n",
            "ERROR: [056]: x\n",
        ),
        f"{msg.FAILED_TO_BACKUP}: ERROR: [056]: x",
        "2026-11-28T15:00:03Z",
    ),
    "backup-fails-no-label": FailureCase(
        failed("ERROR: [050]: unable to acquire lock on file"),
        f"{msg.FAILED_TO_BACKUP}: ERROR: [050]: unable to acquire lock on file",
        NEW_ID,
    ),
    "backup-fails-and-log-upload-fails": FailureCase(
        failed("ERROR: [050]: lock"),
        f"{msg.FAILED_TO_BACKUP}: ERROR: [050]: lock",
        NEW_ID,
        put_errors={"backup.log": "AccessDenied"},
    ),
    "log-upload-fails": FailureCase(
        ok(),
        f"{msg.FAILED_TO_UPLOAD_LOGS}: backup {NEW_ID}",
        NEW_ID,
        put_errors={"backup.log": "AccessDenied"},
        reads_info=True,
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_backup_failures_upload_logs_and_always_restore(case: FailureCase) -> None:
    host = backup_host(replica=True, status=UnitStatus.active("Replica"))
    host.fake_tool.backup_result = case.result
    host.store.put_errors = case.put_errors
    assert on_create_backup(host, {}) == ActionFailed(case.message)
    info = [f"backup_tool.info({STANZA})"] if case.reads_info else []
    assert host.effects == [
        *TAKE,
        LATEST,
        FLAG,
        "unit_data[connectivity]='off'",
        HIDDEN,
        MAINTENANCE,
        f"backup_tool.backup(full, on_primary=False, primary={PRIMARY_ADDRESS})",
        *info,
        log_put(case.log_id),
        *ALWAYS,
        CONFIG_TLS,
        "set_status(active: Replica)",
        RELEASE,
    ]
    assert host.unit_dict == {}


def test_success_id_falls_back_to_the_announced_label_when_info_fails() -> None:
    host = backup_host()
    host.fake_tool.info_error = "ERROR: [039]: HTTP"
    host.fake_tool.backup_result = ok(stdout="new backup label = 20261128-150009F\n")
    outcome = on_create_backup(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["backup-id"] == "2026-11-28T15:00:09Z"
    assert log_put("2026-11-28T15:00:09Z") in host.calls


def test_success_id_is_the_newest_backup_not_the_last_listed() -> None:
    host = backup_host()
    host.fake_tool.new_backup = None
    host.fake_tool.stanzas = [
        stanza_info(
            backups=[backup("20261127-150000F"), backup(NEW_LABEL), backup("20261101-000000F")]
        ),
    ]
    outcome = on_create_backup(host, {})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["backup-id"] == NEW_ID


def test_same_id_form_for_success_and_failure_log_keys() -> None:
    ok_host = backup_host()
    on_create_backup(ok_host, {})
    failed_host = backup_host()
    failed_host.fake_tool.backup_result = CommandResult(
        ("pgbackrest",), 56, f"new backup label = {NEW_LABEL}\n", "ERROR: [056]: x\n"
    )
    on_create_backup(failed_host, {})
    assert log_put(NEW_ID) in ok_host.calls
    assert log_put(NEW_ID) in failed_host.calls


# ---------------------------------------------------------------------------
# "Always" means always (docs/behaviour/create-backup.md#step-18-always)


def test_always_step_runs_when_the_backup_raises() -> None:
    host = backup_host(replica=True, status=UnitStatus.active("Replica"))
    host.fake_tool.backup_raises = RuntimeError("pgbackrest vanished")
    with pytest.raises(RuntimeError, match="vanished"):
        on_create_backup(host, {})
    assert host.effects[-5:] == [*ALWAYS, CONFIG_TLS, "set_status(active: Replica)", RELEASE]
    assert host.unit_dict == {}
    assert host.fake_workload.configs[-1].connectivity


def test_always_step_restores_status_even_when_apply_config_raises() -> None:
    host = backup_host(replica=True, status=UnitStatus.active("Replica"))
    host.fake_workload.on_apply = [None, OSError("patroni reload failed")]
    with pytest.raises(OSError, match="reload"):
        on_create_backup(host, {})
    assert host.status == UnitStatus.active("Replica")
    assert host.unit_dict == {"backup-taken": NEW_LABEL}


def test_always_step_does_not_depend_on_the_role_after_the_backup() -> None:
    host = backup_host(replica=True)
    real_backup = host.fake_tool.backup

    def switchover_meanwhile(
        backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        host.fake_workload.primary = True  # this replica was promoted during the backup
        return real_backup(backup_type, on_primary=on_primary, primary=primary)

    host.fake_tool.backup = switchover_meanwhile  # type: ignore[method-assign]
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert host.unit_dict == {"backup-taken": NEW_LABEL}
    assert host.fake_workload.configs[-1].connectivity
    assert not host.fake_workload.configs[-1].creating_backup


def test_second_backup_is_refused_while_the_first_runs() -> None:
    host = backup_host(replica=True)
    second: list[object] = []
    real_backup = host.fake_tool.backup

    def meanwhile(
        backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        second.append(on_create_backup(host, {}))
        return real_backup(backup_type, on_primary=on_primary, primary=primary)

    host.fake_tool.backup = meanwhile  # type: ignore[method-assign]
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert second == [ActionFailed(f"{msg.BACKUP_ALREADY_RUNNING}: main/0 started one at {NEW_ID}")]
    assert host.calls.count(LATEST) == 1, "the refused request must not overwrite `latest`"


def test_failures_are_logged_with_prefix(caplog: pytest.LogCaptureFixture) -> None:
    host = backup_host()
    host.fake_tool.backup_result = failed("ERROR: [050]: lock")
    with caplog.at_level(logging.INFO):
        on_create_backup(host, {})
    assert "Backup failed: Failed to backup PostgreSQL: ERROR: [050]: lock" in caplog.text
    assert "A full backup has been requested on unit main/0" in caplog.text


# ---------------------------------------------------------------------------
# The type pgBackRest actually took, read back from `pgbackrest info`


def test_differential_on_an_empty_repository_reports_the_full_backup_taken() -> None:
    host = backup_host()
    host.fake_tool.stanzas = [stanza_info(backups=[])]
    host.fake_tool.new_backup = backup(NEW_LABEL)  # pgBackRest: "changed to full"
    host.fake_tool.backup_result = ok(
        stderr="WARN: no prior backup exists, diff backup has been changed to full"
    )
    outcome = on_create_backup(host, {"type": "differential"})
    assert outcome == ActionResults(
        {
            "backup-status": "backup created",
            "backup-id": NEW_ID,
            "type": "full",
            "requested-type": "differential",
            "message": "differential requested; no full backup existed, so a full backup was taken",
        }
    )
    assert "backup_tool.backup(diff, on_primary=True)" in host.calls


def test_the_type_comes_from_info_not_from_the_log_text() -> None:
    """A full backup existed, pgBackRest still took a full (and said nothing we parse)."""
    host = backup_host()
    host.fake_tool.backup_result = ok(stdout="new backup label = 20261127-150000F_20261128-150000I")
    outcome = on_create_backup(host, {"type": "incremental"})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["type"] == "full"
    assert outcome.results["message"] == (
        "incremental requested; pgBackRest took a full backup (see the backup's log)"
    )


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            lambda h: setattr(h.fake_tool, "info_error", "ERROR: [039]: HTTP"),
            "pgBackRest info failed: ERROR: [039]: HTTP",
        ),
        (
            lambda h: setattr(h.fake_tool, "new_backup", None),
            "pgBackRest lists no backup started since 2026-11-28T15:00:00Z",
        ),
        (
            lambda h: setattr(h.fake_tool, "new_backup", replace(backup(NEW_LABEL), type="diff")),
            f"backup {NEW_LABEL} has type 'diff' but not its label's letter",
        ),
    ],
    ids=["info-fails", "not-listed", "type-and-letter-disagree"],
)
def test_a_type_that_cannot_be_read_back_is_said(
    setup: Callable[[FakeHost], None], reason: str
) -> None:
    host = backup_host()
    setup(host)
    outcome = on_create_backup(host, {"type": "differential"})
    assert isinstance(outcome, ActionResults)
    assert outcome.results["type"] == "differential"
    assert outcome.results["message"] == (
        f"differential requested; the type taken could not be read back: {reason}"
    )


# ---------------------------------------------------------------------------
# One backup per cluster, in the repository (core/backup_claim.py)


def _claim(unit: str, state: str) -> tuple[str, bytes]:
    claim = Claim(CLAIMS, unit, NOW - timedelta(hours=1), state)
    return claim.key, claim.body()


def test_a_peers_running_claim_refuses_though_its_bag_says_nothing() -> None:
    """Under Juju a peer's bag writes show only when its action ends: the repository's
    claim is what refuses, before the `latest` object is touched."""
    host = backup_host(replica=True, planned_units=3, peers={"main/1": {}, "main/2": {}})
    key, body = _claim("main/2", "running")
    host.store.objects[key] = body
    assert on_create_backup(host, {}) == ActionFailed(
        f"{msg.BACKUP_ALREADY_RUNNING}: main/2 started one at 2026-11-28T14:00:00Z"
    )
    assert host.effects == [f"object_store.list_keys({CLAIMS})"]
    assert host.unit_dict == {}


def test_the_repository_cannot_be_read_for_claims() -> None:
    host = backup_host()
    host.store.list_error = "Could not connect to the endpoint URL"
    assert on_create_backup(host, {}) == ActionFailed(
        f"{msg.FAILED_TO_CLAIM_BACKUP}: Could not connect to the endpoint URL"
    )
    assert host.effects == [f"object_store.list_keys({CLAIMS})"]


def test_the_claim_is_released_when_the_backup_fails() -> None:
    host = backup_host()
    host.fake_tool.backup_result = failed("ERROR: [056]: x")
    assert isinstance(on_create_backup(host, {}), ActionFailed)
    assert host.effects[-1] == RELEASE
    assert not [k for k in host.store.objects if k.startswith(CLAIMS)]


def test_a_killed_backups_claim_is_removed_by_update_status() -> None:
    host = backup_host(replica=True, status=UnitStatus.maintenance(msg.CREATING_BACKUP))
    host.unit_data.update({"creating-backup": NEW_ID, "connectivity": "off"})
    key, body = _claim("main/0", "running")
    other_key, other_body = _claim("main/1", "running")
    host.store.objects.update({key: body, other_key: other_body})
    host.calls.clear()
    bring_back_after_interrupted_backup(host)
    assert host.effects == [
        *ALWAYS,
        CONFIG_TLS,
        "set_status(active)",
        f"object_store.list_keys({CLAIMS})",
        f"object_store.delete({key})",
    ]
    assert set(host.store.objects) == {other_key}


def test_a_claim_s3_refused_to_remove_is_noted_and_update_status_removes_it() -> None:
    host = backup_host(status=UnitStatus.active("Primary"))
    real_backup = host.fake_tool.backup

    def s3_goes_during_the_backup(
        backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        host.store.delete_error = "Could not connect to the endpoint URL"
        return real_backup(backup_type, on_primary=on_primary, primary=primary)

    host.fake_tool.backup = s3_goes_during_the_backup  # type: ignore[method-assign]
    outcome = on_create_backup(host, {})
    assert isinstance(outcome, ActionResults), "the backup itself worked"
    assert host.effects[-2:] == [RELEASE, f"unit_data[backup-claim-left]='{CLAIM}.running'"]
    assert f"{CLAIM}.running" in host.store.objects
    # update-status while S3 still refuses: the note stays
    host.calls.clear()
    bring_back_after_interrupted_backup(host)
    assert host.unit_dict == {"backup-claim-left": f"{CLAIM}.running", "backup-taken": NEW_LABEL}
    # and once S3 answers again, the claim and the note go; nothing else is touched
    host.store.delete_error = None
    host.calls.clear()
    bring_back_after_interrupted_backup(host)
    assert host.effects == [
        f"object_store.list_keys({CLAIMS})",
        f"object_store.delete({CLAIM}.running)",
        "unit_data[backup-claim-left]=''",
    ]
    assert host.unit_dict == {"backup-taken": NEW_LABEL}
    assert host.status == UnitStatus.active("Primary")


def test_the_next_backup_on_the_unit_removes_the_claim_left_and_its_note() -> None:
    host = backup_host(
        unit={"backup-claim-left": f"{CLAIMS}main%2F0.20261128T140000000000Z.running"}
    )
    left, body = _claim("main/0", "running")
    host.store.objects[left] = body
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert f"object_store.delete({left})" in host.effects  # stale: this unit's own
    assert host.effects[-2:] == [RELEASE, "unit_data[backup-claim-left]=''"]
    assert host.unit_dict == {"backup-taken": NEW_LABEL}
    assert not [k for k in host.store.objects if k.startswith(CLAIMS)]


def test_a_claim_of_a_unit_with_an_empty_bag_still_refuses() -> None:
    """The local host's peer_data leaves out a unit whose bag is empty; peers() lists it.
    Taken for a departed unit, its claim was removed and two backups ran (seen in e2e)."""
    host = backup_host(replica=True, planned_units=3, peers={"main/1": {}})
    host.bagless_peers = ["main/2"]
    key, body = _claim("main/2", "running")
    host.store.objects[key] = body
    assert on_create_backup(host, {}) == ActionFailed(
        f"{msg.BACKUP_ALREADY_RUNNING}: main/2 started one at 2026-11-28T14:00:00Z"
    )
    assert host.store.objects == {key: body}


def test_a_replica_backup_names_the_primary_to_watch_and_a_primary_backup_none() -> None:
    """The tool watches the primary's TLS server of a replica's backup (a primary cut off
    mid-backup stops it instead of leaving it waiting half an hour); a primary's own
    backup reaches no other unit, so nothing is named."""
    host = backup_host(replica=True)
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert f"backup_tool.backup(full, on_primary=False, primary={PRIMARY_ADDRESS})" in host.calls
    host = backup_host(replica=True)
    host.fake_workload.primary_addr = None  # Patroni does not say who the primary is
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert "backup_tool.backup(full, on_primary=False)" in host.calls
    host = backup_host(replica=False)
    assert isinstance(on_create_backup(host, {}), ActionResults)
    assert "backup_tool.backup(full, on_primary=True)" in host.calls
    assert "workload.primary_address" not in host.calls
