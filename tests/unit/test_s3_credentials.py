"""s3-credentials-changed (docs/behaviour/s3-credentials.md#s3-credentials-changed), leader-elected
and s3-credentials-gone: every branch of the chart, with the exact ordered calls. The TLS-server
steps that end the chart are in test_tls_server.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fakes import (
    CLUSTER_ID,
    MARKER_KEY,
    OTHER_SYSTEM_ID,
    REPOSITORY_ID,
    STANZA,
    SYSTEM_ID,
    VALID_S3,
    FakeHost,
    failed,
    marker_body,
    ok,
    stanza_info,
)

from pgbackups.core import messages as msg
from pgbackups.core.handlers import s3_credentials
from pgbackups.core.handlers.s3_credentials import (
    on_leader_elected,
    on_s3_credentials_changed,
    on_s3_credentials_gone,
)
from pgbackups.core.host import StatusKind, UnitStatus
from pgbackups.core.outcomes import Deferred, Done

CONFIG_OFF = "workload.apply_config(stanza=-)"
CONFIG_ON = f"workload.apply_config(stanza={STANZA})"
INITIALISING = "set_status(maintenance: initialising stanza)"
CHECKING = "set_status(maintenance: checking stanza)"
ROOT_MARKER = "object_store.get(pgbackups-cluster.json)"  # no repository encloses the path
OWNERSHIP = [ROOT_MARKER, "backup_tool.info()", f"object_store.get({MARKER_KEY})"]
# The marker is written before archiving starts, and read back (a concurrent claim).
CLAIM = [f"object_store.put({MARKER_KEY})", f"object_store.get({MARKER_KEY})"]
START = [CONFIG_OFF, INITIALISING, "object_store.ensure_bucket", *OWNERSHIP]
SUCCESS = [
    *CLAIM,
    "backup_tool.stanza_create",
    CHECKING,
    f"app_data[stanza]={STANZA!r}",
    f"app_data[repository]={REPOSITORY_ID!r}",
    "app_data[archive-held]=''",
    CONFIG_ON,
    "backup_tool.check",
    "app_data[s3-block-message]=''",
    "set_status(active)",
]


CONFIG_HELD = "workload.apply_config(stanza=-, hold-wal)"


def blocked_calls(message: str, *, stanza_was_set: bool = False) -> list[str]:
    # The repository was ours: WAL is held (kept on disk), not discarded; another
    # cluster's repository turns archiving off.
    foreign = message == msg.ANOTHER_CLUSTER_REPOSITORY
    held = "" if foreign else STANZA
    config = CONFIG_OFF if foreign else CONFIG_HELD
    clear = ["app_data[stanza]=''", f"app_data[archive-held]={held!r}", config]
    clear = clear if stanza_was_set else []
    return [*clear, f"app_data[s3-block-message]={message!r}", f"set_status(blocked: {message})"]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    sleeps: list[float] = []
    monkeypatch.setattr(s3_credentials, "SLEEP", sleeps.append)
    return sleeps


# ---------------------------------------------------------------------------
# The happy path, every call (reads included)


def test_happy_path_full_call_sequence() -> None:
    host = FakeHost()
    outcome = on_s3_credentials_changed(host)
    assert outcome == Done()
    assert host.calls == [
        CONFIG_OFF,
        INITIALISING,
        "object_store.ensure_bucket",
        ROOT_MARKER,
        "backup_tool.info()",
        f"object_store.get({MARKER_KEY})",
        "workload.system_identifier",
        "workload.system_identifier",
        *CLAIM,
        "backup_tool.stanza_create",
        CHECKING,
        f"app_data[stanza]={STANZA!r}",
        f"app_data[repository]={REPOSITORY_ID!r}",
        "app_data[archive-held]=''",
        CONFIG_ON,
        "backup_tool.check",
        "app_data[s3-block-message]=''",
        "set_status(active)",
        "workload.stop_tls_server",
    ]
    assert host.status == UnitStatus.active()
    assert host.app_dict == {
        "cluster_initialised": "True",
        "stanza": STANZA,
        "repository": REPOSITORY_ID,
    }
    assert host.store.objects[MARKER_KEY] == marker_body()
    assert host.store_settings[0].bucket == "backups"


# ---------------------------------------------------------------------------
# Every branch


Setup = Callable[[FakeHost], None]


def _nothing(host: FakeHost) -> None:
    pass


def _not_initialised(host: FakeHost) -> None:
    host.app_data["cluster_initialised"] = ""
    host.calls.clear()


def _restoring(host: FakeHost) -> None:
    host.app_data["restoring-backup"] = "20261128-143926F"
    host.calls.clear()


def _no_s3(host: FakeHost) -> None:
    host.s3 = None


def _missing_keys(host: FakeHost) -> None:
    host.s3 = {"bucket": "backups", "secret-key": "very-secret"}


def _invalid(host: FakeHost) -> None:
    host.s3 = {**VALID_S3, "s3-uri-style": "virtual"}


def _invalid_non_leader(host: FakeHost) -> None:
    _invalid(host)
    host.set_leader(False)


def _non_leader(host: FakeHost) -> None:
    host.set_leader(False)


def _blocked_restore(host: FakeHost) -> None:
    host.status = UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP)


def _blocked_s3(host: FakeHost) -> None:
    host.status = UnitStatus.blocked(msg.FAILED_TO_INITIALIZE_STANZA + ": ERROR: [039]: x")
    host.app_data["s3-block-message"] = host.status.message
    host.calls.clear()


def _bucket_error(host: FakeHost) -> None:
    host.store.ensure_error = "Could not connect to the endpoint URL"


def _bucket_error_archiving(host: FakeHost) -> None:
    _bucket_error(host)
    host.app_data["stanza"] = STANZA
    host.calls.clear()


def _foreign_stanza(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info("other.main")]


def _own_stanza_other_system(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info(system_ids=(OTHER_SYSTEM_ID,))]


def _own_stanza_no_db(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info(system_ids=())]


def _marker_other_cluster(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info()]
    host.store.objects[MARKER_KEY] = marker_body(cluster_id="cluster-9999")


def _marker_other_system(host: FakeHost) -> None:
    host.store.objects[MARKER_KEY] = marker_body(system_id=OTHER_SYSTEM_ID)


def _marker_other_stanza(host: FakeHost) -> None:
    host.store.objects[MARKER_KEY] = marker_body(stanza="other.main")


def _marker_garbage(host: FakeHost) -> None:
    host.store.objects[MARKER_KEY] = b"model-uuid-0001"


def _own_stanza_no_marker(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info()]


def _own_stanza_own_marker(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info(system_ids=(OTHER_SYSTEM_ID, SYSTEM_ID))]
    host.store.objects[MARKER_KEY] = marker_body()


def _missing_stanza_path(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info(status_code=1, system_ids=())]


def _invalid_stanza(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info("[invalid]", system_ids=())]


def _no_system_id(host: FakeHost) -> None:
    host.fake_tool.stanzas = [stanza_info()]
    host.fake_workload.system_id = None


def _info_error(host: FakeHost) -> None:
    host.fake_tool.info_error = "ERROR: [039]: HTTP request failed"


def _marker_read_error(host: FakeHost) -> None:
    host.store.get_error = "AccessDenied"


def _stanza_create_fails(host: FakeHost) -> None:
    host.fake_tool.stanza_create_result = failed("ERROR: [039]: HTTP request failed with 403")


def _check_fails(host: FakeHost) -> None:
    host.fake_tool.check_results = [failed("ERROR: [082]: WAL segment was not archived")]


def _check_fails_twice(host: FakeHost) -> None:
    host.fake_tool.check_results = [failed(), failed(), ok()]


def _marker_write_fails(host: FakeHost) -> None:
    host.store.put_errors = {"pgbackups-cluster.json": "AccessDenied"}


ANOTHER = msg.ANOTHER_CLUSTER_REPOSITORY
BUCKET = msg.FAILED_TO_ACCESS_CREATE_BUCKET
STANZA_MSG = msg.FAILED_TO_INITIALIZE_STANZA
NO_SYSTEM_ID_MSG = (
    f"{STANZA_MSG}: the PostgreSQL system identifier cannot be read to verify the repository"
)
INVALID_MSG = f"{BUCKET}: Invalid S3 parameters: s3-uri-style 'virtual' is not one of host, path"

CASES: list[tuple[str, Setup, object, UnitStatus, list[str]]] = [
    ("not-initialised", _not_initialised, Deferred, UnitStatus.active(), []),
    ("restore-in-progress", _restoring, Deferred, UnitStatus.active(), []),
    ("no-s3-relation", _no_s3, Done, UnitStatus.active(), []),
    ("missing-keys", _missing_keys, Done, UnitStatus.active(), []),
    (
        "invalid-settings",
        _invalid,
        Done,
        UnitStatus.blocked(INVALID_MSG),
        blocked_calls(INVALID_MSG),
    ),
    ("invalid-settings-non-leader", _invalid_non_leader, Done, UnitStatus.active(), []),
    ("non-leader", _non_leader, Done, UnitStatus.active(), [CONFIG_OFF]),
    (
        "blocked-not-by-s3",
        _blocked_restore,
        Done,
        UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP),
        [CONFIG_OFF],
    ),
    (
        "blocked-by-s3-is-retried",
        _blocked_s3,
        Done,
        UnitStatus.active(),
        [*START, *SUCCESS, "workload.stop_tls_server"],
    ),
    (
        "bucket-error",
        _bucket_error,
        Done,
        UnitStatus.blocked(f"{BUCKET}: Could not connect to the endpoint URL"),
        [
            CONFIG_OFF,
            INITIALISING,
            "object_store.ensure_bucket",
            *blocked_calls(f"{BUCKET}: Could not connect to the endpoint URL"),
        ],
    ),
    (
        "bucket-error-turns-archiving-off",
        _bucket_error_archiving,
        Done,
        UnitStatus.blocked(f"{BUCKET}: Could not connect to the endpoint URL"),
        [
            CONFIG_ON,
            INITIALISING,
            "object_store.ensure_bucket",
            *blocked_calls(f"{BUCKET}: Could not connect to the endpoint URL", stanza_was_set=True),
        ],
    ),
    (
        "foreign-stanza",
        _foreign_stanza,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "own-stanza-other-system-id",
        _own_stanza_other_system,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "own-stanza-without-db",
        _own_stanza_no_db,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "marker-of-other-cluster",
        _marker_other_cluster,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "marker-of-other-system-id",
        _marker_other_system,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "marker-of-other-stanza",
        _marker_other_stanza,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "unreadable-marker",
        _marker_garbage,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        # The marker is required: a restored copy of this cluster has the same stanza
        # name and system identifier, and only the marker tells the two apart.
        "own-stanza-no-marker-is-not-ours",
        _own_stanza_no_marker,
        Done,
        UnitStatus.blocked(ANOTHER),
        [*START, *blocked_calls(ANOTHER)],
    ),
    (
        "own-stanza-own-marker",
        _own_stanza_own_marker,
        Done,
        UnitStatus.active(),
        [*START, *SUCCESS, "workload.stop_tls_server"],
    ),
    (
        "stanza-never-created-is-empty",
        _missing_stanza_path,
        Done,
        UnitStatus.active(),
        [*START, *SUCCESS, "workload.stop_tls_server"],
    ),
    (
        "invalid-stanza",
        _invalid_stanza,
        Done,
        UnitStatus.blocked(f"{STANZA_MSG}: pgBackRest cannot read the repository: ok"),
        [*START, *blocked_calls(f"{STANZA_MSG}: pgBackRest cannot read the repository: ok")],
    ),
    (
        "system-id-unreadable",
        _no_system_id,
        Done,
        UnitStatus.blocked(NO_SYSTEM_ID_MSG),
        [*START, *blocked_calls(NO_SYSTEM_ID_MSG)],
    ),
    (
        "info-error",
        _info_error,
        Done,
        UnitStatus.blocked(f"{STANZA_MSG}: ERROR: [039]: HTTP request failed"),
        [
            CONFIG_OFF,
            INITIALISING,
            "object_store.ensure_bucket",
            ROOT_MARKER,
            "backup_tool.info()",
            *blocked_calls(f"{STANZA_MSG}: ERROR: [039]: HTTP request failed"),
        ],
    ),
    (
        "marker-read-error",
        _marker_read_error,
        Done,
        UnitStatus.blocked(f"{BUCKET}: AccessDenied"),
        [*START, *blocked_calls(f"{BUCKET}: AccessDenied")],
    ),
    (
        "stanza-create-fails",
        _stanza_create_fails,
        Done,
        UnitStatus.blocked(f"{STANZA_MSG}: ERROR: [039]: HTTP request failed with 403"),
        [
            *START,
            *CLAIM,
            "backup_tool.stanza_create",
            *blocked_calls(f"{STANZA_MSG}: ERROR: [039]: HTTP request failed with 403"),
        ],
    ),
    (
        "check-keeps-failing",
        _check_fails,
        Done,
        UnitStatus.blocked(f"{STANZA_MSG}: ERROR: [082]: WAL segment was not archived"),
        [
            *START,
            *CLAIM,
            "backup_tool.stanza_create",
            CHECKING,
            f"app_data[stanza]={STANZA!r}",
            f"app_data[repository]={REPOSITORY_ID!r}",
            "app_data[archive-held]=''",
            CONFIG_ON,
            "backup_tool.check",
            "backup_tool.check",
            "backup_tool.check",
            *blocked_calls(
                f"{STANZA_MSG}: ERROR: [082]: WAL segment was not archived", stanza_was_set=True
            ),
        ],
    ),
    (
        "check-succeeds-on-third-try",
        _check_fails_twice,
        Done,
        UnitStatus.active(),
        [
            *START,
            *SUCCESS[:9],
            "backup_tool.check",
            "backup_tool.check",
            *SUCCESS[9:],
            "workload.stop_tls_server",
        ],
    ),
    (
        # The marker is required before archiving starts: not written, no archiving.
        "marker-write-failure-blocks",
        _marker_write_fails,
        Done,
        UnitStatus.blocked(f"{BUCKET}: AccessDenied"),
        [*START, f"object_store.put({MARKER_KEY})", *blocked_calls(f"{BUCKET}: AccessDenied")],
    ),
]


def test_non_primary_leader_waits_for_the_primary_to_archive() -> None:
    """Error 068 on a leader that is a replica: the primary has not rendered the
    archive_command yet (it sees the app bag after this hook). Defer, keep the stanza."""
    host = FakeHost()
    host.fake_workload.primary = False
    not_yet = failed("ERROR: [068]: archive_command '/bin/true' must contain pgbackrest", 68)
    host.fake_tool.check_results = [not_yet]
    result = on_s3_credentials_changed(host)
    assert isinstance(result, Deferred)
    assert host.status == UnitStatus.maintenance(msg.CHECKING_STANZA)
    assert host.app_dict.get("stanza") == STANZA
    assert "s3-block-message" not in host.app_dict
    assert host.calls.count("backup_tool.check") == 1  # no retry can help inside this hook
    # The re-run, after the primary picked up the configuration, completes.
    host.fake_tool.check_results = [ok()]
    assert isinstance(on_s3_credentials_changed(host), Done)
    assert host.status == UnitStatus.active()


def test_error_068_on_the_primary_itself_blocks() -> None:
    host = FakeHost()
    not_yet = failed("ERROR: [068]: archive_command '/bin/true' must contain pgbackrest", 68)
    host.fake_tool.check_results = [not_yet]
    assert isinstance(on_s3_credentials_changed(host), Done)
    assert host.status.is_blocked and host.status.message.startswith(STANZA_MSG)
    assert "stanza" not in host.app_dict


@pytest.mark.parametrize(
    ("setup", "outcome", "status", "effects"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_s3_credentials_changed_branches(
    setup: Setup, outcome: type, status: UnitStatus, effects: list[str]
) -> None:
    host = FakeHost()
    setup(host)
    result = on_s3_credentials_changed(host)
    assert isinstance(result, outcome)
    assert host.status == status
    assert host.effects == effects
    archiving = host.app_dict.get("stanza")
    if status.is_blocked and status.kind is StatusKind.BLOCKED and host.leader:
        assert archiving is None, "a blocked repository never has archiving on"
        if msg.is_s3_block_message(status.message):
            assert host.app_dict["s3-block-message"] == status.message
    if status == UnitStatus.active() and effects and effects[-1] == "workload.stop_tls_server":
        assert archiving == STANZA
        assert host.store.objects.get(MARKER_KEY) == marker_body() or setup is _marker_write_fails


def test_check_retries_wait_between_attempts(no_sleep: list[float]) -> None:
    host = FakeHost()
    _check_fails(host)
    on_s3_credentials_changed(host)
    assert no_sleep == [s3_credentials.CHECK_RETRY_DELAY_SECONDS] * (
        s3_credentials.CHECK_ATTEMPTS - 1
    )


def test_check_attempts_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_credentials, "CHECK_ATTEMPTS", 1)
    host = FakeHost()
    host.fake_tool.check_results = [failed(), ok()]
    on_s3_credentials_changed(host)
    assert host.effects.count("backup_tool.check") == 1
    assert host.status.is_blocked


def test_missing_settings_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(s3={"bucket": "backups", "secret-key": "very-secret"})
    with caplog.at_level(logging.DEBUG):
        assert on_s3_credentials_changed(host) == Done()
    assert "access-key" in caplog.text
    assert "very-secret" not in caplog.text


def test_no_secret_in_any_log_or_status(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost()
    host.store.ensure_error = "SignatureDoesNotMatch"
    with caplog.at_level(logging.DEBUG):
        on_s3_credentials_changed(host)
    assert "very-secret" not in caplog.text
    assert "very-secret" not in host.status.message
    assert "very-secret" not in "".join(host.calls)


def test_corrected_setting_clears_the_s3_block() -> None:
    host = FakeHost()
    host.store.ensure_error = "NoSuchBucket"
    on_s3_credentials_changed(host)
    assert host.status.is_blocked
    host.store.ensure_error = None
    on_s3_credentials_changed(host)
    assert host.status == UnitStatus.active()
    assert "s3-block-message" not in host.app_dict
    assert host.app_dict["stanza"] == STANZA


def test_invalid_settings_hold_wal() -> None:
    host = FakeHost(app={"stanza": STANZA}, s3={**VALID_S3, "tls-ca-chain": "not a pem"})
    on_s3_credentials_changed(host)
    assert host.effects[:3] == [
        "app_data[stanza]=''",
        f"app_data[archive-held]={STANZA!r}",
        "workload.apply_config(stanza=-, hold-wal, s3=-)",
    ]
    assert host.status.is_blocked
    assert "tls-ca-chain" in host.status.message
    assert msg.is_s3_block_message(host.status.message)


def test_leader_elected_reruns_s3_initialisation() -> None:
    host = FakeHost(app={"s3-block-message": msg.ANOTHER_CLUSTER_REPOSITORY})
    assert on_leader_elected(host) == Done()
    assert host.effects == [*START, *SUCCESS, "workload.stop_tls_server"]


# ---------------------------------------------------------------------------
# s3-credentials-gone


GONE_CASES = [
    (
        "leader-s3-blocked",
        True,
        UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY),
        UnitStatus.active(),
        [
            "app_data[stanza]=''",
            "app_data[archive-held]=''",
            "app_data[s3-block-message]=''",
            "workload.apply_config(stanza=-, s3=-)",
            "set_status(active)",
        ],
    ),
    (
        "leader-s3-block-with-reason",
        True,
        UnitStatus.blocked(msg.FAILED_TO_INITIALIZE_STANZA + ": ERROR: [039]: x"),
        UnitStatus.active(),
        [
            "app_data[stanza]=''",
            "app_data[archive-held]=''",
            "app_data[s3-block-message]=''",
            "workload.apply_config(stanza=-, s3=-)",
            "set_status(active)",
        ],
    ),
    (
        "leader-other-block-kept",
        True,
        UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP),
        UnitStatus.blocked(msg.FAILED_TO_RESTORE_BACKUP),
        [
            "app_data[stanza]=''",
            "app_data[archive-held]=''",
            "app_data[s3-block-message]=''",
            "workload.apply_config(stanza=-, s3=-)",
        ],
    ),
    (
        "non-leader",
        False,
        UnitStatus.active(),
        UnitStatus.active(),
        # Until the leader clears the stanza, WAL is held: never discarded by a non-leader.
        ["workload.apply_config(stanza=-, hold-wal, s3=-)"],
    ),
]


@pytest.mark.parametrize(
    ("leader", "before", "after", "effects"),
    [c[1:] for c in GONE_CASES],
    ids=[c[0] for c in GONE_CASES],
)
def test_s3_credentials_gone(
    leader: bool, before: UnitStatus, after: UnitStatus, effects: list[str]
) -> None:
    host = FakeHost(
        leader=leader,
        status=before,
        s3=None,
        app={"stanza": STANZA, "s3-block-message": msg.ANOTHER_CLUSTER_REPOSITORY},
    )
    assert on_s3_credentials_gone(host) == Done()
    assert host.effects == effects
    assert host.status == after
    if leader:
        assert host.app_dict == {"cluster_initialised": "True"}
        assert host.fake_workload.configs[-1].stanza is None


def test_cluster_id_is_in_the_marker() -> None:
    host = FakeHost()
    on_s3_credentials_changed(host)
    assert CLUSTER_ID.encode() in host.store.objects[MARKER_KEY]
    assert str(SYSTEM_ID).encode() in host.store.objects[MARKER_KEY]


def test_a_403_on_the_bucket_check_lets_pgbackrest_say_why() -> None:
    """Issue 4: a wrong secret key blocks with the stanza message and pgBackRest's reason;
    nothing is written before pgBackRest could read the repository."""
    host = FakeHost()
    host.store.ensure_forbidden = "403: Forbidden"
    reason = "ERROR: [029]: S3 request failed with 403: Forbidden"
    host.fake_tool.info_error = reason
    assert on_s3_credentials_changed(host) == Done()
    message = f"{msg.FAILED_TO_INITIALIZE_STANZA}: {reason}"
    assert host.status == UnitStatus.blocked(message)
    assert host.effects == [
        CONFIG_OFF,
        INITIALISING,
        "object_store.ensure_bucket",
        ROOT_MARKER,
        "backup_tool.info()",
        *blocked_calls(message),
    ]


def test_a_403_then_a_readable_repository_goes_on_like_an_existing_bucket() -> None:
    """Keys that may not HEAD the bucket but may use it: the chart goes on as usual."""
    host = FakeHost()
    host.store.ensure_forbidden = "403: Forbidden"
    assert on_s3_credentials_changed(host) == Done()
    assert host.status == UnitStatus.active()
    assert host.effects == [*START, *SUCCESS, "workload.stop_tls_server"]


# ---------------------------------------------------------------------------
# Two clusters, one repository (docs/security.md)


def test_a_path_inside_another_repository_is_refused() -> None:
    host = FakeHost(s3={**VALID_S3, "path": "/pg/nested"})
    host.store.objects["pg/pgbackups-cluster.json"] = marker_body(cluster_id="someone-else")
    assert on_s3_credentials_changed(host) == Done()
    assert host.status.is_blocked
    assert "the path /pg/nested is inside the repository at /pg" in host.status.message
    assert "backup_tool.stanza_create" not in host.calls
    assert not [c for c in host.calls if c.startswith("object_store.put")]


def test_a_claim_lost_to_another_cluster_stops_before_archiving() -> None:
    # Another cluster wrote its marker right after ours: reading it back tells.
    host = FakeHost()
    host.store.overwrite_after_put = {MARKER_KEY: marker_body(cluster_id="the-other-one")}
    assert on_s3_credentials_changed(host) == Done()
    assert host.status == UnitStatus.blocked(msg.ANOTHER_CLUSTER_REPOSITORY)
    assert "backup_tool.stanza_create" not in host.calls
    assert "stanza" not in host.app_dict
