"""s3-credentials-changed / -gone, leader-elected and update-status's S3 retry
(docs/behaviour/s3-credentials.md#s3-credentials-changed), through the charm: relation data in,
status and peer bags out."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from charm_fakes import World, failed, stanza_info
from charm_states import (
    GOOD_S3,
    PEM,
    REPOSITORY_PASSPHRASE,
    STANZA,
    app_bag,
    certificates,
    ctx,
    peers,
    s3,
    state,
)
from ops import testing

from charm import PgBackupsCharm
from pgbackups.adapters import pgbackrest
from pgbackups.core import messages as msg
from pgbackups.core.marker import marker_key

if TYPE_CHECKING:
    from scenario.state import _Event  # what Context.on builds; ops.testing does not name it

S3_EVENT = "credentials_changed"


def changed(c: testing.Context[PgBackupsCharm], relation: testing.Relation) -> _Event:
    event: _Event = c.on.relation_changed(relation, remote_unit=0)  # ops leaves it untyped
    return event


def test_not_initialised_defers_and_the_deferred_event_re_runs(world: World) -> None:
    c = ctx()
    world.workload.initialised = False
    rel = s3()
    out = c.run(changed(c, rel), state(peers(initialised=False), rel))
    assert [d.name for d in out.deferred] == [S3_EVENT]
    assert "stanza" not in app_bag(out)
    assert world.tool.calls == []

    # Patroni bootstrapped meanwhile: the leader marks it, the deferred hook re-runs first.
    world.workload.initialised = True
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), out)
    assert out2.deferred == []
    assert app_bag(out2)["cluster_initialised"] == "True"
    assert app_bag(out2)["stanza"] == STANZA
    assert out2.unit_status == testing.ActiveStatus("Primary")  # update-status refreshed it


def test_missing_required_setting_keeps_the_status(world: World) -> None:
    c = ctx()
    rel = s3({k: v for k, v in GOOD_S3.items() if k != "bucket"})
    before = testing.WaitingStatus("awaiting for member to start")
    out = c.run(changed(c, rel), state(peers(), rel, status=before))
    assert out.unit_status == before
    assert out.deferred == []
    assert "stanza" not in app_bag(out)
    assert "ensure_bucket" not in world.calls


def test_no_event_until_the_integrator_gave_the_keys(world: World) -> None:
    c = ctx()
    rel = s3({"bucket": "backups"})
    out = c.run(changed(c, rel), state(peers(), rel))
    assert world.calls == []
    assert out.unit_status == testing.ActiveStatus()


def test_leader_initialises_the_stanza_and_turns_archiving_on(world: World) -> None:
    c = ctx()
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert app_bag(out)["stanza"] == STANZA
    assert out.unit_status == testing.ActiveStatus()
    assert world.calls.index("ensure_bucket") < world.calls.index("stanza_create")
    assert world.calls.index("stanza_create") < world.calls.index("check")
    # The last configuration archives into the stanza; the S3 settings are normalised.
    last = world.workload.configs[-1]
    assert last.stanza == STANZA
    assert last.s3 is not None and last.s3.path == "/pg"
    # Encrypted with the passphrase of the application's secret, never a relation's.
    assert last.s3.cipher_pass == REPOSITORY_PASSPHRASE
    text = pgbackrest.render_config(
        pgbackrest.PgBackRestConfig(stanza=STANZA, pg_path="/d", s3=last.s3)
    )
    assert "repo1-cipher-type=aes-256-cbc\n" in text
    assert f"repo1-cipher-pass={REPOSITORY_PASSPHRASE}\n" in text
    assert all(REPOSITORY_PASSPHRASE not in str(r.local_app_data) for r in out.relations)
    assert marker_key("/pg") in world.store.objects
    assert testing.MaintenanceStatus(msg.INITIALISING_STANZA) in c.unit_status_history
    assert testing.MaintenanceStatus(msg.CHECKING_STANZA) in c.unit_status_history


def test_non_leader_only_renders_the_settings(world: World) -> None:
    c = ctx()
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel, leader=False))
    assert world.calls == ["apply_config"]
    assert world.workload.configs[0].s3 is not None
    assert out.unit_status == testing.ActiveStatus()


def test_leader_blocked_by_something_else_stops_after_rendering(world: World) -> None:
    c = ctx()
    rel = s3()
    blocked = testing.BlockedStatus(msg.FAILED_TO_RESTORE_BACKUP)
    out = c.run(changed(c, rel), state(peers(), rel, status=blocked))
    assert out.unit_status == blocked
    assert world.calls == ["apply_config"]


def test_bucket_failure_blocks(world: World) -> None:
    c = ctx()
    world.store.unreachable = "EndpointConnectionError: could not connect"
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert out.unit_status == testing.BlockedStatus(
        f"{msg.FAILED_TO_ACCESS_CREATE_BUCKET}: EndpointConnectionError: could not connect"
    )
    assert "stanza" not in app_bag(out)
    assert app_bag(out)["s3-block-message"].startswith(msg.FAILED_TO_ACCESS_CREATE_BUCKET)


def test_repository_of_another_cluster_blocks(world: World) -> None:
    c = ctx()
    world.tool.stanzas = [stanza_info("other-model.postgresql", system_id=99)]
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert out.unit_status == testing.BlockedStatus(msg.ANOTHER_CLUSTER_REPOSITORY)
    assert "stanza_create" not in world.calls
    assert "stanza" not in app_bag(out)


def test_stanza_create_failure_blocks_with_the_error_line(world: World) -> None:
    c = ctx()
    world.tool.stanza_create_result = failed("unable to find primary cluster", 56)
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert out.unit_status == testing.BlockedStatus(
        f"{msg.FAILED_TO_INITIALIZE_STANZA}: ERROR: [056]: unable to find primary cluster"
    )


def test_failing_check_turns_archiving_off_again_and_blocks(world: World) -> None:
    c = ctx()
    world.tool.check_results = [failed("archive timeout", 82)] * 3
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith(msg.FAILED_TO_INITIALIZE_STANZA)
    assert "stanza" not in app_bag(out)
    assert world.workload.configs[-1].stanza is None
    assert world.calls.count("check") == 3


def test_check_succeeding_on_a_retry_is_enough(world: World) -> None:
    c = ctx()
    world.tool.check_results = [failed("archive timeout", 82)]
    rel = s3()
    out = c.run(changed(c, rel), state(peers(), rel))
    assert out.unit_status == testing.ActiveStatus()
    assert world.calls.count("check") == 2


def test_a_corrected_setting_clears_an_s3_block(world: World) -> None:
    c = ctx()
    rel = s3()
    blocked = testing.BlockedStatus(f"{msg.FAILED_TO_ACCESS_CREATE_BUCKET}: AccessDenied")
    out = c.run(changed(c, rel), state(peers(), rel, status=blocked))
    assert out.unit_status == testing.ActiveStatus()
    assert app_bag(out)["stanza"] == STANZA


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("tls-ca-chain", "[not json", "tls-ca-chain is not a valid JSON list"),
        ("tls-ca-chain", json.dumps(["not a pem"]), "is not a PEM certificate"),
        ("tls-ca-chain", json.dumps([PEM, 3]), "tls-ca-chain must be a JSON list"),
        ("s3-uri-style", "virtual", "s3-uri-style 'virtual' is not one of host, path"),
        ("endpoint", "s3.example.com", "is not a URL"),
        ("delete-older-than-days", "soon", "delete-older-than-days 'soon'"),
    ],
)
def test_malformed_relation_data_blocks_with_a_clear_message(
    world: World, field: str, value: str, reason: str
) -> None:
    c = ctx()
    rel = s3(**{field: value})
    out = c.run(changed(c, rel), state(peers(), rel))  # no hook error
    assert isinstance(out.unit_status, testing.BlockedStatus)
    message = out.unit_status.message
    assert message.startswith(f"{msg.FAILED_TO_ACCESS_CREATE_BUCKET}: Invalid S3 parameters: ")
    assert reason in message
    assert "s3cr3t" not in message
    assert "ensure_bucket" not in world.calls


def test_malformed_data_on_a_non_leader_is_no_hook_error(world: World) -> None:
    c = ctx()
    rel = s3(**{"s3-uri-style": "virtual"})
    out = c.run(changed(c, rel), state(peers(), rel, leader=False))
    assert out.unit_status == testing.ActiveStatus()
    assert world.calls == []


def test_a_valid_ca_chain_reaches_the_settings(world: World) -> None:
    c = ctx()
    rel = s3(**{"tls-ca-chain": json.dumps([PEM]), "s3-uri-style": "path"})
    out = c.run(changed(c, rel), state(peers(), rel))
    assert out.unit_status == testing.ActiveStatus()
    settings = world.store.settings[0]
    assert settings.tls_ca_chain == (PEM,)
    assert settings.uri_style == "path"


def test_tls_multi_unit_leader_on_the_primary_starts_the_tls_server(world: World) -> None:
    c = ctx()
    world.with_tls()
    rel = s3()
    c.run(changed(c, rel), state(peers(others=1), rel, certificates()))
    assert world.calls[-1] == "start_tls_server"


def test_single_unit_stops_the_tls_server(world: World) -> None:
    c = ctx()
    world.with_tls()
    rel = s3()
    c.run(changed(c, rel), state(peers(), rel, certificates()))
    assert world.calls[-1] == "stop_tls_server"


def test_replica_leader_waits_for_the_primary_tls_server(world: World) -> None:
    c = ctx()
    world.with_tls()
    world.workload.primary = False
    world.tool.ping = False
    rel = s3()
    out = c.run(changed(c, rel), state(peers(others=1), rel, certificates()))
    assert world.calls[-1] == "server_ping 10.0.0.1"
    assert "start_tls_server" not in world.calls
    assert out.unit_status == testing.ActiveStatus()


def test_credentials_gone_turns_archiving_off_and_clears_an_s3_block(world: World) -> None:
    c = ctx()
    rel = s3()
    blocked = testing.BlockedStatus(msg.FAILED_TO_INITIALIZE_STANZA)
    pr = peers({"stanza": STANZA, "s3-block-message": msg.FAILED_TO_INITIALIZE_STANZA})
    out = c.run(c.on.relation_broken(rel), state(pr, rel, status=blocked))
    assert "stanza" not in app_bag(out)
    assert "s3-block-message" not in app_bag(out)
    assert out.unit_status == testing.ActiveStatus()
    assert world.workload.configs[-1].s3 is None
    assert world.workload.configs[-1].stanza is None


def test_credentials_gone_keeps_a_non_s3_block(world: World) -> None:
    c = ctx()
    rel = s3()
    blocked = testing.BlockedStatus(msg.FAILED_TO_RESTORE_BACKUP)
    out = c.run(c.on.relation_broken(rel), state(peers(), rel, status=blocked, leader=False))
    assert out.unit_status == blocked


def test_leader_elected_re_runs_s3_initialisation(world: World) -> None:
    c = ctx()
    out = c.run(c.on.leader_elected(), state(peers(), s3()))
    assert app_bag(out)["stanza"] == STANZA
    assert out.unit_status == testing.ActiveStatus()


def test_leader_elected_without_s3_changes_nothing(world: World) -> None:
    c = ctx()
    out = c.run(c.on.leader_elected(), state(peers()))
    assert "stanza" not in app_bag(out)
    assert world.tool.calls == []


def test_update_status_retries_an_s3_block_and_clears_it(world: World) -> None:
    c = ctx()
    blocked = testing.BlockedStatus(f"{msg.FAILED_TO_ACCESS_CREATE_BUCKET}: timeout")
    pr = peers({"s3-block-message": blocked.message})
    out = c.run(c.on.update_status(), state(pr, s3(), status=blocked))
    # The core sets Active; the charm's refresh after it names the primary.
    assert out.unit_status == testing.ActiveStatus("Primary")
    assert app_bag(out)["stanza"] == STANZA
    assert "s3-block-message" not in app_bag(out)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("region", "us-east-1\x1crepo1-s3-verify-tls=n"),  # the security issue's exploit
        ("path", "/pg\x0brepo1-host=evil.example.com\x0bcmd-ssh=/tmp/x.sh"),
        ("endpoint", "http://s3.example.com"),
        ("delete-older-than-days", "99999999"),
    ],
)
def test_an_injected_value_blocks_naming_the_field_and_is_never_rendered(
    world: World, field: str, value: str
) -> None:
    c = ctx()
    rel = s3(**{field: value})
    out = c.run(changed(c, rel), state(peers(), rel))  # no hook error
    assert isinstance(out.unit_status, testing.BlockedStatus)
    assert out.unit_status.message.startswith(
        f"{msg.FAILED_TO_ACCESS_CREATE_BUCKET}: Invalid S3 parameters: {field} "
    )
    assert "ensure_bucket" not in world.calls
    assert "stanza" not in app_bag(out)
    # A non-leader neither: refused settings are never rendered (a configuration applied
    # later has no repository), and what the real renderer makes of any configuration
    # applied holds none of the injected options.
    c2 = ctx()
    out2 = c2.run(changed(c2, rel), state(peers(), rel, leader=False))
    assert out2.unit_status == testing.ActiveStatus()
    assert "apply_config" not in world.calls
    for config in world.workload.configs:
        assert config.s3 is None
        text = pgbackrest.render_config(
            pgbackrest.PgBackRestConfig(stanza=STANZA, pg_path="/data", s3=config.s3)
        )
        assert "verify-tls" not in text
        assert "cmd-ssh" not in text
