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


def test_the_leaving_unit_leaves_once_and_renders_nothing_more(world: World) -> None:
    pr = peers(others=2)
    # This unit is /3: ops.testing reads departing_unit=0 as "not given".
    c = testing.Context(PgBackupsCharm, unit_id=3)
    out = c.run(
        c.on.relation_departed(pr, remote_unit=1, departing_unit=3),
        state(pr, planned_units=2),
    )
    assert out.deferred == []
    assert world.calls == ["leave_cluster"]  # no peer-changed rendering afterwards
    # relation-departed again (for the other peer), then stop: nothing more.
    c2 = testing.Context(PgBackupsCharm, unit_id=3)
    out2 = c2.run(c2.on.relation_departed(pr, remote_unit=2, departing_unit=3), out)
    c3 = testing.Context(PgBackupsCharm, unit_id=3)
    c3.run(c3.on.stop(), out2)
    assert world.calls == ["leave_cluster"]


def test_stop_without_relation_departed_leaves(world: World) -> None:
    pr = peers(others=2)
    c = ctx()
    c.run(c.on.stop(), state(pr))
    assert world.calls == ["leave_cluster"]


def test_a_failed_leave_does_not_fail_the_hook_and_is_tried_again(world: World) -> None:
    world.workload.leave_ok = False
    pr = peers(others=1)
    c = ctx()
    out = c.run(c.on.stop(), state(pr))
    assert out.deferred == []
    world.workload.leave_ok = True
    c2 = ctx()
    c2.run(c2.on.stop(), out)
    assert world.calls == ["leave_cluster", "leave_cluster"]


def test_the_leader_removes_a_departed_member_from_raft_once_it_stopped(world: World) -> None:
    # The departed unit (10.0.0.3) still runs Patroni: its own leave removes it after
    # its stop; if it went without its hooks, the leader removes it once it stopped.
    world.workload.still_running = {"10.0.0.3"}
    pr = peers(others=2)
    c = ctx()
    out = c.run(c.on.relation_departed(pr, remote_unit=2, departing_unit=2), state(pr))
    assert world.workload.forgotten == []
    assert "forget_dcs_member 10.0.0.3" in world.calls
    world.workload.still_running = set()
    c2 = ctx()
    out2 = c2.run(c2.on.update_status(), out)
    assert world.workload.forgotten == ["10.0.0.3"]
    world.calls.clear()
    c3 = ctx()
    c3.run(c3.on.update_status(), out2)
    assert not [call for call in world.calls if call.startswith("forget_dcs_member")]


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
