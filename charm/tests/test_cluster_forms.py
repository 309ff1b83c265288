"""A machine cluster forms: only the leader bootstraps, and a leaving primary switches
over first. The states start from what Juju delivers: a peer relation whose bags are
empty, no partner yet."""

from __future__ import annotations

from charm_fakes import World
from charm_states import ctx, peers, state
from ops import testing

from charm import AWAITING_MEMBER, WAITING_FOR_LEADER, WAITING_FOR_PARTNERS, PgBackupsCharm


def test_a_non_leader_waits_for_the_leaders_cluster(world: World) -> None:
    # juju deploy -n 3: the app bag holds only the secret, no peer has joined yet.
    pr = peers(initialised=False)
    c = ctx()
    out = c.run(c.on.start(), state(pr, leader=False))
    assert "start_database" not in world.calls
    assert out.unit_status == testing.WaitingStatus(WAITING_FOR_LEADER)
    assert [d.name for d in out.deferred] == ["start"]


def test_a_non_leader_waits_for_a_raft_partner(world: World) -> None:
    pr = peers(initialised=True, others=0)
    c = ctx()
    out = c.run(c.on.start(), state(pr, leader=False))
    assert "start_database" not in world.calls
    assert out.unit_status == testing.WaitingStatus(WAITING_FOR_PARTNERS)
    assert [d.name for d in out.deferred] == ["start"]


def test_the_deferred_start_runs_once_the_leader_initialised_and_a_peer_joined(
    world: World,
) -> None:
    c = ctx()
    out = c.run(c.on.start(), state(peers(initialised=False), leader=False))
    assert "start_database" not in world.calls
    # Later: the leader set cluster_initialised and unit 1 joined.
    joined = peers(initialised=True, others=1)
    c2 = ctx()
    out2 = c2.run(
        c2.on.relation_changed(joined, remote_unit=1),
        state(joined, leader=False, deferred=list(out.deferred)),
    )
    assert "start_database" in world.calls
    assert out2.deferred == []
    assert out2.unit_status == testing.WaitingStatus(AWAITING_MEMBER)


def test_update_status_keeps_saying_what_a_non_leader_waits_for(world: World) -> None:
    world.workload.running = False
    world.workload.primary = False
    pr = peers(initialised=False)
    c = ctx()
    out = c.run(
        c.on.update_status(), state(pr, leader=False, status=testing.WaitingStatus(AWAITING_MEMBER))
    )
    assert out.unit_status == testing.WaitingStatus(WAITING_FOR_LEADER)


def test_the_leader_bootstraps_alone(world: World) -> None:
    pr = peers(initialised=False)
    c = ctx()
    out = c.run(c.on.start(), state(pr, leader=True))
    assert "start_database" in world.calls
    assert out.deferred == []


def test_a_leaving_primary_switches_over_before_it_goes(world: World) -> None:
    pr = peers(others=2)
    # This unit is /3: ops.testing reads departing_unit=0 as "not given".
    c = testing.Context(PgBackupsCharm, unit_id=3)
    out = c.run(
        c.on.relation_departed(pr, remote_unit=1, departing_unit=3),
        state(pr, planned_units=2),
    )
    assert out.deferred == []
    assert "switch_over_away" in world.calls
    assert world.workload.primary is False


def test_a_leaving_replica_does_not_switch_over(world: World) -> None:
    world.workload.primary = False
    pr = peers(others=2)
    c = ctx()
    c.run(c.on.stop(), state(pr, leader=False))
    assert "switch_over_away" not in world.calls


def test_stop_on_the_primary_switches_over(world: World) -> None:
    pr = peers(others=2)
    c = ctx()
    c.run(c.on.stop(), state(pr))
    assert "switch_over_away" in world.calls


def test_a_failed_switchover_does_not_fail_the_departure(world: World) -> None:
    world.workload.replica_to_take_over = None
    pr = peers(others=1)
    c = ctx()
    out = c.run(c.on.stop(), state(pr))
    assert "switch_over_away" in world.calls
    assert out.deferred == []


def test_the_leader_bootstraps_with_no_raft_partner(world: World) -> None:
    # Peers joined before the leader's (deferred) start ran: they wait for its cluster,
    # so a Raft listing them would never reach a quorum, and nothing would bootstrap.
    world.workload.initialised = False
    pr = peers(initialised=False, others=2)
    c = ctx()
    with c(c.on.start(), state(pr, leader=True)) as manager:
        manager.run()
        assert manager.charm.unit_facts().peers == ()
    assert "start_database" in world.calls


def test_once_initialised_the_leader_renders_its_partners(world: World) -> None:
    pr = peers(initialised=True, others=2)
    c = ctx()
    with c(c.on.start(), state(pr, leader=True)) as manager:
        manager.run()
        partners = [p.address for p in manager.charm.unit_facts().peers]
    assert partners == ["10.0.0.2", "10.0.0.3"]
