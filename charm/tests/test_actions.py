"""The actions (docs/behaviour/create-backup.md, docs/behaviour/list-backups.md,
docs/behaviour/restore.md, and rollback-restore): every branch of each chart ends in the same
outcome as in the core's tests, with the reference's messages, as results or failures."""

from __future__ import annotations

import json

import pytest
from charm_fakes import World, backup_record, failed, stanza_info
from charm_states import GOOD_S3, STANZA, app_bag, certificates, ctx, peers, s3, state, unit_bag
from ops import testing

from charm import PgBackupsCharm
from pgbackups.core import messages as msg
from pgbackups.core.ids import label_to_id

LABEL = "20261128-143926F"
BACKUP_ID = "2026-11-28T14:39:26Z"


def run_action(
    name: str, st: testing.State, params: dict[str, str] | None = None
) -> tuple[testing.Context[PgBackupsCharm], testing.State]:
    c = ctx()
    out = c.run(c.on.action(name, params=params or {}), st)
    return c, out


def fail_message(name: str, st: testing.State, params: dict[str, str] | None = None) -> str:
    c = ctx()
    with pytest.raises(testing.ActionFailed) as info:
        c.run(c.on.action(name, params=params or {}), st)
    return info.value.message


def ready(*extra: testing.RelationBase, **kw: object) -> testing.State:
    return state(peers({"stanza": STANZA}), s3(), *extra, **kw)  # type: ignore[arg-type]


# --- create-backup -----------------------------------------------------------------


def test_backup_on_a_single_unit_primary(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    c, out = run_action("create-backup", ready(), {"type": "full"})
    [label] = world.tool.taken
    assert c.action_results == {
        msg.RESULT_BACKUP_STATUS: msg.BACKUP_CREATED,
        "backup-id": label_to_id(label),
        "type": "full",
        "requested-type": "full",
    }
    assert "backup full on_primary=True" in world.calls
    assert testing.MaintenanceStatus(msg.CREATING_BACKUP) in c.unit_status_history
    assert out.unit_status == testing.ActiveStatus()  # the status it had before
    keys = set(world.store.objects)
    assert f"pg/backup/{STANZA}/latest" in keys
    assert f"pg/backup/{STANZA}/{label_to_id(label)}/backup.log" in keys
    assert not [k for k in keys if "/backup-claims/" in k], "the claim is released"


def test_backup_type_defaults_to_full(world: World) -> None:
    c, _ = run_action("create-backup", ready())
    assert c.action_results is not None and c.action_results["type"] == "full"


@pytest.mark.parametrize(("kind", "tool_type"), [("differential", "diff"), ("incremental", "incr")])
def test_backup_types_map_to_pgbackrest(world: World, kind: str, tool_type: str) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    c, _ = run_action("create-backup", ready(), {"type": kind})
    assert f"backup {tool_type} on_primary=True" in world.calls
    assert c.action_results is not None
    assert (c.action_results["type"], c.action_results["requested-type"]) == (kind, kind)


def test_backup_reports_the_full_backup_pgbackrest_took_instead(world: World) -> None:
    c, _ = run_action("create-backup", ready(), {"type": "incremental"})
    assert c.action_results is not None
    assert c.action_results["type"] == "full"
    assert c.action_results["requested-type"] == "incremental"
    assert c.action_results["message"] == (
        "incremental requested; no full backup existed, so a full backup was taken"
    )


def test_backup_on_a_replica_hides_it_and_always_restores_it(world: World) -> None:
    world.with_tls()
    world.workload.primary = False
    c, out = run_action(
        "create-backup", state(peers({"stanza": STANZA}, others=1), s3(), certificates())
    )
    assert c.action_results is not None
    assert "backup full on_primary=False" in world.calls
    hidden = [cfg for cfg in world.workload.configs if not cfg.connectivity]
    assert hidden and hidden[0].creating_backup
    assert world.workload.configs[-1].connectivity is True
    assert "connectivity" not in unit_bag(out)
    assert "creating-backup" not in unit_bag(out)


def test_failed_backup_uploads_the_logs_and_still_restores_the_unit(world: World) -> None:
    world.with_tls()
    world.workload.primary = False
    world.tool.backup_result = failed("archive-push queue full", 82)
    st = state(peers({"stanza": STANZA}, others=1), s3(), certificates())
    message = fail_message("create-backup", st)
    assert message == f"{msg.FAILED_TO_BACKUP}: ERROR: [082]: archive-push queue full"
    assert any(k.endswith("/backup.log") for k in world.store.objects)
    assert world.workload.configs[-1].connectivity is True


def test_log_upload_failure_fails_the_action(world: World) -> None:
    world.store.put_fails_for = ("backup.log",)
    message = fail_message("create-backup", ready())
    assert message.startswith(msg.FAILED_TO_UPLOAD_LOGS)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda w, kw: None, None),
        (lambda w, kw: kw.update(status=testing.BlockedStatus("x")), msg.BACKUP_UNIT_BLOCKED),
        (
            lambda w, kw: w.workload.__dict__.update(running=False, state="stopped"),
            f"{msg.BACKUP_NOT_RUNNING}: Patroni reports the member stopped",
        ),
        (
            lambda w, kw: setattr(w.workload, "unavailable", True),
            f"{msg.BACKUP_NOT_RUNNING}: Patroni does not answer",
        ),
        (lambda w, kw: setattr(w.workload, "primary", False), msg.BACKUP_TLS_DISABLED),
        (
            lambda w, kw: setattr(w.store, "put_fails_for", ("/latest",)),
            msg.FAILED_TO_UPLOAD_METADATA,
        ),
        (
            lambda w, kw: setattr(w.store, "unreachable", "denied"),
            f"{msg.FAILED_TO_CLAIM_BACKUP}: denied",
        ),
    ],
)
def test_create_backup_refusals(world: World, setup, expected: str | None) -> None:  # type: ignore[no-untyped-def]
    kw: dict[str, object] = {}
    setup(world, kw)
    st = ready(**kw)
    if expected is None:
        run_action("create-backup", st)
    else:
        assert fail_message("create-backup", st) == expected


def test_invalid_backup_type(world: World) -> None:
    message = fail_message("create-backup", ready(), {"type": "weekly"})
    assert message == (
        f"{msg.INVALID_BACKUP_TYPE}: weekly. Possible values: full, differential, incremental."
    )


def test_primary_of_a_tls_multi_unit_cluster_refuses(world: World) -> None:
    world.with_tls()
    st = state(peers({"stanza": STANZA}, others=1), s3(), certificates())
    assert fail_message("create-backup", st) == msg.BACKUP_ON_PRIMARY


def test_stanza_not_initialised(world: World) -> None:
    assert fail_message("create-backup", state(peers(), s3())) == msg.STANZA_NOT_INITIALISED


def test_s3_relation_missing(world: World) -> None:
    st = state(peers({"stanza": STANZA}))
    assert fail_message("create-backup", st) == msg.S3_RELATION_MISSING


def test_s3_parameters_missing(world: World) -> None:
    st = state(peers({"stanza": STANZA}), s3({"bucket": "bkt", "access-key": "a"}))
    assert fail_message("create-backup", st) == f"{msg.MISSING_S3_PARAMETERS}: ['secret-key']"


def test_a_second_backup_is_refused(world: World) -> None:
    pr = peers({"stanza": STANZA}, others=1, others_data={1: {"creating-backup": "x"}})
    message = fail_message("create-backup", state(pr, s3()))
    assert message.startswith(msg.BACKUP_ALREADY_RUNNING)


# --- list-backups ------------------------------------------------------------------


def test_list_backups_table(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    c, _ = run_action("list-backups", ready())
    assert c.action_results is not None
    text = c.action_results[msg.RESULT_BACKUPS]
    assert "backups" in text and BACKUP_ID in text and "full backup" in text


def test_list_backups_json(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    c, _ = run_action("list-backups", ready(), {"format": "json"})
    assert c.action_results is not None
    rows = json.loads(c.action_results[msg.RESULT_BACKUPS])
    assert rows and BACKUP_ID in json.dumps(rows)


def test_list_backups_of_an_empty_repository_is_no_error(world: World) -> None:
    c, _ = run_action("list-backups", ready())
    assert c.action_results is not None
    assert BACKUP_ID not in c.action_results[msg.RESULT_BACKUPS]


def test_list_backups_without_relation(world: World) -> None:
    assert fail_message("list-backups", state(peers())) == msg.S3_RELATION_MISSING_LIST


def test_list_backups_with_missing_parameters(world: World) -> None:
    st = state(peers(), s3({k: v for k, v in GOOD_S3.items() if k != "bucket"}))
    assert fail_message("list-backups", st) == f"{msg.MISSING_S3_PARAMETERS}: ['bucket']"


def test_list_backups_when_pgbackrest_fails(world: World) -> None:
    world.tool.info_error = "ERROR: [039]: HTTP request failed"
    message = fail_message("list-backups", ready())
    assert message == f"{msg.FAILED_TO_LIST_BACKUPS}: ERROR: [039]: HTTP request failed"


# --- restore -------------------------------------------------------------------------


def test_restore_starts_and_moves_the_data_aside(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    c, out = run_action("restore", ready(), {"backup-id": BACKUP_ID})
    assert c.action_results == {msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED}
    assert out.unit_status == testing.MaintenanceStatus(msg.RESTORING_BACKUP)
    bag = app_bag(out)
    assert bag["restoring-backup"] == LABEL
    assert bag["restore-stanza"] == STANZA
    assert bag["restore-moved-data"] == world.workload.moved
    order = [c for c in world.calls if not c.startswith(("info", "apply", "archive_segments"))]
    assert order == [
        f"start_staged_restore {LABEL}",
        "stop_database",
        "remove_dcs_state",
        "wait_staged_restore",
        "swap_in_restored",
        f"start_recovery {world.workload.moved}",
    ]
    assert world.workload.configs[-1].restore is not None
    assert world.workload.configs[-1].restore.label == LABEL


def test_restore_completion_on_update_status(world: World) -> None:
    moved = world.workload.moved
    pr = peers(
        {
            "stanza": STANZA,
            "restoring-backup": LABEL,
            "restore-stanza": STANZA,
            "restore-type": "immediate",
            "restore-moved-data": str(moved),
        }
    )
    c = ctx()
    out = c.run(
        c.on.update_status(),
        state(pr, s3(), status=testing.MaintenanceStatus(msg.RESTORING_BACKUP)),
    )
    bag = app_bag(out)
    assert "restoring-backup" not in bag and "restore-moved-data" not in bag
    assert f"remove_moved_data_later {moved}" in world.calls
    # The core sets Active; the charm's refresh after it names the primary.
    assert out.unit_status == testing.ActiveStatus("Primary")


def test_restore_failure_detected_on_update_status(world: World) -> None:
    world.workload.failed_bootstrap = True
    world.workload.state = "start failed"
    pr = peers({"restoring-backup": LABEL, "restore-moved-data": "/old"})
    c = ctx()
    out = c.run(c.on.update_status(), state(pr, s3()))
    assert out.unit_status == testing.BlockedStatus(
        f"{msg.FAILED_TO_RESTORE_BACKUP}: old data kept at /old"
    )
    assert app_bag(out)["restore-moved-data"] == "/old"


def test_rollback_restore_puts_the_old_data_back_and_starts(world: World) -> None:
    pr = peers(
        {
            "stanza": STANZA,
            "restoring-backup": LABEL,
            "restore-stanza": STANZA,
            "restore-type": "time",
            "restore-to-time": "2026-11-28 10:30:00.000000+00",
            "restore-moved-data": "/old",
        }
    )
    blocked = testing.BlockedStatus(msg.CANNOT_RESTORE_PITR)
    c, out = run_action("rollback-restore", state(pr, s3(), status=blocked))
    assert c.action_results == {msg.RESULT_ROLLBACK_STATUS: msg.ROLLED_BACK}
    order = [call for call in world.calls if not call.startswith(("info", "apply"))]
    assert order == ["stop_database", "remove_dcs_state", "move_data_back /old", "start_database"]
    bag = app_bag(out)
    assert bag["stanza"] == STANZA
    assert not {"restoring-backup", "restore-to-time", "restore-moved-data"} & set(bag)
    assert world.workload.configs[-1].restore is None
    assert out.unit_status == testing.ActiveStatus()


def test_rollback_restore_without_a_failed_restore_is_refused(world: World) -> None:
    message = fail_message("rollback-restore", ready())
    assert message == f"{msg.NO_FAILED_RESTORE}: the unit is active"
    assert world.calls == []


@pytest.mark.parametrize(
    ("params", "setup", "expected"),
    [
        ({}, None, msg.MISSING_RESTORE_TARGET),
        ({"backup-id": BACKUP_ID}, "not-initialised", msg.WORKLOAD_NOT_ACCESSIBLE),
        ({"backup-id": BACKUP_ID}, "blocked", msg.RESTORE_UNIT_BLOCKED),
        ({"backup-id": BACKUP_ID}, "non-leader", msg.RESTORE_NOT_LEADER),
        (
            {"backup-id": "2020-01-01T00:00:00Z"},
            None,
            f"{msg.INVALID_BACKUP_ID}: 2020-01-01T00:00:00Z",
        ),
        ({"backup-id": "yesterday"}, None, f"{msg.INVALID_BACKUP_ID}: yesterday"),
    ],
)
def test_restore_refusals(
    world: World, params: dict[str, str], setup: str | None, expected: str
) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    kw: dict[str, object] = {}
    others = 0
    if setup == "not-initialised":
        world.workload.initialised = False
    elif setup == "blocked":
        kw["status"] = testing.BlockedStatus(msg.FAILED_TO_INITIALIZE_STANZA)
    elif setup == "non-leader":
        kw["leader"] = False
    st = state(peers({"stanza": STANZA}, others=others), s3(), **kw)  # type: ignore[arg-type]
    assert fail_message("restore", st, params) == expected
    assert "stop_database" not in world.calls


def test_restore_of_two_units_starts_by_stopping_the_other(world: World) -> None:
    """The one-unit refusal is gone: the leader records the restore (stage stopping),
    refuses clients, and restores only once the other unit stopped (cluster_restore)."""
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    st = state(peers({"stanza": STANZA}, others=1), s3())
    c, out = run_action("restore", st, {"backup-id": BACKUP_ID})
    assert c.action_results == {msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED}
    bag = app_bag(out)
    assert (bag["restoring-backup"], bag["restore-stage"]) == (LABEL, "stopping")
    assert "stop_database" not in world.calls
    assert isinstance(out.unit_status, testing.MaintenanceStatus)
    assert out.unit_status.message.startswith(msg.RESTORING_BACKUP + ": waiting for ")


def test_restore_allowed_when_blocked_by_another_clusters_repository(world: World) -> None:
    world.tool.stanzas = [stanza_info("old.postgresql", backup_record("old.postgresql", LABEL))]
    st = ready(status=testing.BlockedStatus(msg.ANOTHER_CLUSTER_REPOSITORY))
    c, out = run_action("restore", st, {"backup-id": LABEL})
    assert c.action_results == {msg.RESULT_RESTORE_STATUS: msg.RESTORE_STARTED}
    assert app_bag(out)["restore-stanza"] == "old.postgresql"


def test_restore_that_cannot_stop_the_database(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    world.workload.stop_ok = False
    message = fail_message("restore", ready(), {"backup-id": BACKUP_ID})
    assert message.startswith(msg.FAILED_TO_RESTORE_BACKUP)
    assert "remove_dcs_state" not in world.calls


def test_restore_that_cannot_clear_the_dcs_starts_the_database_again(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    world.workload.dcs_ok = False
    message = fail_message("restore", ready(), {"backup-id": BACKUP_ID})
    assert message.startswith(msg.FAILED_TO_RESTORE_BACKUP)
    assert world.calls[-1] == "start_database"
    assert "move_data_aside" not in world.calls


def test_restore_that_cannot_move_the_data_starts_the_database_again(world: World) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, LABEL))]
    world.workload.moved = None
    message = fail_message("restore", ready(), {"backup-id": BACKUP_ID})
    assert message.startswith(msg.FAILED_TO_RESTORE_BACKUP)
    assert world.calls[-1] == "start_database"


def test_actions_fail_cleanly_when_patroni_does_not_answer(world: World) -> None:
    world.workload.unavailable = True
    message = fail_message("create-backup", ready())
    assert message == f"{msg.BACKUP_NOT_RUNNING}: Patroni does not answer"


# --- parameters: the allow-list runs before anything (core/params.py) ----------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "restore",
            {"backup-id": "2026-11-28T14:39:26Z", "restore-to-time": ""},
            "restore-to-time is empty",
        ),
        ("restore", {"backup-id": ""}, "backup-id is empty"),
        ("create-backup", {"type": "full\u2028"}, "type must be printable ASCII"),
    ],
)
def test_a_bad_parameter_fails_the_action_and_nothing_runs(
    world: World, name: str, params: dict[str, str], message: str
) -> None:
    st = ready()
    assert message in fail_message(name, st, params)
    assert world.calls == []
    assert world.workload.configs == []
