"""Units join Patroni's Raft one at a time, in unit-number order.

Found by the charm-on-machines scenario (charm/tests/machines): two units that start
Patroni at once both ask the primary's Raft to add them; pysyncobj (0.3.11, Debian 12)
then lets the primary's Raft thread die when it commits a join whose requester has given
up waiting, the primary loses its DCS and demotes itself, and the cluster has no primary.
A non-leader now starts only once every peer with a lower unit number has published
``member=running``, which a unit does once its own member runs."""

from __future__ import annotations

from charm_fakes import World
from charm_states import APP_SECRET, MODEL
from ops import testing

from charm import (
    AWAITING_MEMBER,
    MEMBER_FLAG,
    MEMBER_RUNNING,
    SECRET_ID_KEY,
    WAITING_FOR_JOIN,
    PgBackupsCharm,
)

ADDRESS = {0: "10.0.0.10", 1: "10.0.0.11", 2: "10.0.0.12"}


def bag(unit: int, **extra: str) -> dict[str, str]:
    return {"ingress-address": ADDRESS[unit], "private-address": ADDRESS[unit], **extra}


def unit_two(peers: dict[int, dict[str, str]], **flags: str) -> testing.State:
    relation = testing.PeerRelation(
        "database-peers",
        local_app_data={SECRET_ID_KEY: APP_SECRET.id, "cluster_initialised": "True"},
        local_unit_data=bag(2, **flags),
        peers_data=peers,
    )
    return testing.State(
        leader=False,
        relations=[relation],
        secrets=[APP_SECRET],
        planned_units=3,
        model=MODEL,
        networks={
            testing.Network(
                "database-peers",
                bind_addresses=[testing.BindAddress([testing.Address(ADDRESS[2])])],
                ingress_addresses=[ADDRESS[2]],
            )
        },
    )


def unit_bag(out: testing.State) -> dict[str, str]:
    return dict(out.get_relations("database-peers")[0].local_unit_data)


def test_a_unit_waits_while_a_lower_numbered_peer_has_not_joined(world: World) -> None:
    c = testing.Context(PgBackupsCharm, unit_id=2)
    state = unit_two({0: bag(0, member=MEMBER_RUNNING), 1: bag(1)})
    out = c.run(c.on.start(), state)
    assert "start_database" not in world.calls
    assert out.unit_status == testing.WaitingStatus(WAITING_FOR_JOIN)
    assert [d.name for d in out.deferred] == ["start"]
    assert MEMBER_FLAG not in unit_bag(out)


def test_it_starts_once_they_have_and_says_so_when_its_member_runs(world: World) -> None:
    c = testing.Context(PgBackupsCharm, unit_id=2)
    state = unit_two({0: bag(0, member=MEMBER_RUNNING), 1: bag(1, member=MEMBER_RUNNING)})
    out = c.run(c.on.start(), state)
    assert "start_database" in world.calls
    assert out.deferred == []
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    # The next unit may start now: this one's member runs (the fake's answers so).
    assert unit_bag(out)[MEMBER_FLAG] == MEMBER_RUNNING


def test_higher_numbered_peers_do_not_hold_a_unit_back(world: World) -> None:
    c = testing.Context(PgBackupsCharm, unit_id=0)
    relation = testing.PeerRelation(
        "database-peers",
        local_app_data={SECRET_ID_KEY: APP_SECRET.id, "cluster_initialised": "True"},
        local_unit_data=bag(0),
        peers_data={1: bag(1), 2: bag(2, member=MEMBER_RUNNING)},
    )
    state = testing.State(
        leader=False, relations=[relation], secrets=[APP_SECRET], planned_units=3, model=MODEL
    )
    c.run(c.on.start(), state)
    assert "start_database" in world.calls


def test_update_status_publishes_a_running_member(world: World) -> None:
    c = testing.Context(PgBackupsCharm, unit_id=2)
    state = unit_two({0: bag(0, member=MEMBER_RUNNING), 1: bag(1, member=MEMBER_RUNNING)})
    world.workload.running = False
    out = c.run(c.on.update_status(), state)
    assert MEMBER_FLAG not in unit_bag(out)
    world.workload.running = True
    out = c.run(c.on.update_status(), state)
    assert unit_bag(out)[MEMBER_FLAG] == MEMBER_RUNNING
