"""install/start/config-changed/update-status, peers, and the host's
mapping of ops onto the core's Host contract."""

from __future__ import annotations

import json

import ops
import pytest
from charm_fakes import World
from charm_states import (
    MODEL,
    STANZA,
    app_bag,
    certificates,
    ctx,
    peers,
    s3,
    state,
)
from ops import testing

from charm import AWAITING_MEMBER, WAITING_FOR_PEERS, InstallFailed
from charm_host import PeerBag, from_ops_status, to_ops_status
from pgbackups.core import messages
from pgbackups.core.host import Peer, UnitStatus

# --- lifecycle -----------------------------------------------------------------------


def test_install_installs_the_packages(world: World) -> None:
    c = ctx()
    out = c.run(c.on.install(), testing.State())
    assert world.calls == ["install"]
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    assert out.workload_version == "16.9-0ubuntu0.24.04.1"


def test_a_failed_install_fails_the_hook_so_juju_retries_it(world: World) -> None:
    # Never a Blocked status for good: the hook errors, Juju runs install again, and
    # a later success carries on as a first one would.
    world.workload.installed_ok = False
    c = ctx()
    with pytest.raises(testing.errors.UncaughtCharmError) as info:
        c.run(c.on.install(), testing.State())
    assert isinstance(info.value.__cause__, InstallFailed)
    world.workload.installed_ok = True
    c2 = ctx()
    out = c2.run(c2.on.install(), testing.State())
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    assert world.calls == ["install", "install"]


# The application's secret (passwords, pgBackRest CA) has its own tests: test_secrets.py.


def test_hooks_wait_for_the_peer_relation(world: World) -> None:
    c = ctx()
    out = c.run(c.on.update_status(), testing.State(leader=True))
    assert [d.name for d in out.deferred] == ["update_status"]
    c2 = ctx()
    with pytest.raises(testing.ActionFailed) as info:
        c2.run(c2.on.action("list-backups"), testing.State(leader=True))
    assert info.value.message == WAITING_FOR_PEERS


def test_update_status_shows_primary_once_the_member_runs(world: World) -> None:
    c = ctx()
    out = c.run(c.on.update_status(), state(peers(), status=testing.WaitingStatus(AWAITING_MEMBER)))
    assert out.unit_status == testing.ActiveStatus("Primary")


def test_update_status_replica_and_member_down(world: World) -> None:
    world.workload.primary = False
    c = ctx()
    out = c.run(c.on.update_status(), state(peers(others=1), leader=False))
    assert out.unit_status == testing.ActiveStatus("")
    world.workload.running = False
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), state(peers(others=1), leader=False))
    assert out2.unit_status == testing.WaitingStatus(AWAITING_MEMBER)


def test_update_status_shows_a_stopped_database_then_active_again(world: World) -> None:
    """The core's look at the database (core/handlers/health.py) is not hidden behind the
    charm's own "awaiting for member to start"."""
    world.workload.running = False
    world.workload.service_running = False
    c = ctx()
    out = c.run(c.on.update_status(), state(peers(), status=testing.ActiveStatus("Primary")))
    assert out.unit_status == testing.BlockedStatus(messages.DATABASE_STOPPED)
    world.workload.running = True
    world.workload.service_running = True
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), out)
    assert out2.unit_status == testing.ActiveStatus("Primary")


def test_update_status_leaves_core_statuses_alone(world: World) -> None:
    c = ctx()
    creating = testing.MaintenanceStatus("creating backup")
    out = c.run(c.on.update_status(), state(peers(), status=creating, leader=False))
    assert out.unit_status == creating


def test_update_status_marks_the_cluster_initialised_on_the_leader_only(world: World) -> None:
    c = ctx()
    out = c.run(c.on.update_status(), state(peers(initialised=False), leader=False))
    assert "cluster_initialised" not in app_bag(out)
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), state(peers(initialised=False)))
    assert app_bag(out2)["cluster_initialised"] == "True"


def test_config_changed_renders_the_configuration(world: World) -> None:
    c = ctx()
    c.run(c.on.config_changed(), state(peers({"stanza": STANZA}), s3()))
    assert world.calls == ["apply_config"]
    assert world.workload.configs[0].stanza == STANZA


# --- peers ---------------------------------------------------------------------------


def test_peer_joined_reconciles_the_tls_server(world: World) -> None:
    world.with_tls()
    pr = peers(others=1)
    c = ctx()
    c.run(c.on.relation_changed(pr, remote_unit=1), state(pr, certificates()))
    assert world.calls[-1] == "start_tls_server"
    assert world.workload.configs[-1].tls_server is True


def test_replica_defers_until_the_primary_tls_server_answers_then_re_runs(
    world: World,
) -> None:
    world.with_tls()
    world.workload.primary = False
    world.tool.ping = False
    pr = peers(others=1)
    c = ctx()
    out = c.run(c.on.relation_changed(pr, remote_unit=1), state(pr, certificates(), leader=False))
    assert [d.name for d in out.deferred] == ["database_peers_relation_changed"]
    assert "start_tls_server" not in world.calls

    world.tool.ping = True
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), out)
    assert out2.deferred == []
    assert "start_tls_server" in world.calls


def test_peer_departed_forgets_the_raft_member_and_stops_tls_on_one_unit(world: World) -> None:
    world.with_tls()
    pr = peers(others=1)
    c = ctx()
    out = c.run(
        c.on.relation_departed(pr, remote_unit=1, departing_unit=1),
        state(pr, certificates(), planned_units=1),
    )
    assert world.workload.forgotten == ["10.0.0.2"]
    assert world.calls[-1] == "stop_tls_server"
    assert out.deferred == []


# --- the host's mapping --------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        UnitStatus.active(""),
        UnitStatus.active("Primary"),
        UnitStatus.maintenance("creating backup"),
        UnitStatus.waiting("awaiting"),
        UnitStatus.blocked("Failed to restore backup"),
    ],
)
def test_status_round_trip(status: UnitStatus) -> None:
    assert from_ops_status(to_ops_status(status)) == status


def test_unknown_status_is_neither_blocked_nor_active() -> None:
    status = from_ops_status(ops.StatusBase.from_name("unknown", ""))
    assert not status.is_blocked
    assert status.kind.value == "maintenance"


def test_peer_bag_semantics() -> None:
    content: dict[str, str] = {"a": "1", "empty": ""}
    bag = PeerBag(content, writable=True, what="unit bag")  # type: ignore[arg-type]
    assert dict(bag) == {"a": "1"}
    bag["b"] = "2"
    bag["a"] = ""
    assert content == {"b": "2", "empty": ""}
    readonly = PeerBag(content, writable=False, what="application peer bag")  # type: ignore[arg-type]
    assert readonly["b"] == "2"
    with pytest.raises(PermissionError):
        readonly["b"] = "3"
    with pytest.raises(PermissionError):
        del readonly["b"]
    absent = PeerBag(None, writable=True, what="unit bag")
    assert dict(absent) == {} and absent.get("x") is None
    with pytest.raises(RuntimeError):
        absent["x"] = "1"


def test_host_answers_from_the_juju_model(world: World) -> None:
    pr = peers({"stanza": STANZA}, others=2)
    rel = s3(**{"s3-uri-style": "path"})
    c = ctx()
    with c(c.on.update_status(), state(pr, rel, leader=False)) as mgr:
        host = mgr.charm.host
        assert host.unit_name == "pgbackups-postgresql/0"
        assert host.stanza_name == STANZA
        assert host.cluster_id == f"{MODEL.uuid}/pgbackups-postgresql"
        assert not host.is_leader()
        assert host.planned_units() == 3
        assert list(host.peers()) == [
            Peer("pgbackups-postgresql/1", "10.0.0.2"),
            Peer("pgbackups-postgresql/2", "10.0.0.3"),
        ]
        assert host.app_data["stanza"] == STANZA
        with pytest.raises(PermissionError):
            host.app_data["stanza"] = ""
        host.unit_data["connectivity"] = "off"
        assert host.unit_data["connectivity"] == "off"
        params = host.s3_parameters()
        assert params is not None and params["s3-uri-style"] == "path"
        assert host.tls() is None
        assert host.now().tzinfo is not None
        described = host.describe()
        assert described["model"] == "prod" and described["unit"] == host.unit_name
        assert "secret" not in json.dumps(described)
        mgr.run()


def test_host_without_s3_relation(world: World) -> None:
    c = ctx()
    with c(c.on.update_status(), state(peers())) as mgr:
        assert mgr.charm.host.s3_parameters() is None
        mgr.run()
