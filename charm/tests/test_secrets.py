"""The application's secret: the Patroni passwords and the pgBackRest TLS CA live in one
application-owned Juju secret, never in a relation bag; the leader creates it once, every
unit reads it by the id in the peer bag; and each unit's pgBackRest certificate comes from
that CA."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from charm_fakes import World
from charm_states import APP_SECRET, CA_CERT, PASSWORDS, app_bag, ctx, peers, state
from ops import testing

from app_secret import CA_CERT_KEY, CA_KEY_KEY, PASSPHRASE_KEY, PASSWORD_KEYS, SECRET_ID_KEY
from charm import AWAITING_MEMBER, WAITING_FOR_PASSWORDS


def bag_values(out: testing.State) -> Iterator[str]:
    """Every value of every bag of every relation in ``out``, ours and the remote ones."""
    for relation in out.relations:
        bags = [relation.local_app_data, relation.local_unit_data]
        if isinstance(relation, testing.PeerRelation):
            bags += relation.peers_data.values()
        elif isinstance(relation, testing.Relation):
            bags += [relation.remote_app_data, *relation.remote_units_data.values()]
        for bag in bags:
            yield from dict(bag).values()


def assert_nothing_secret_in_any_bag(out: testing.State, content: dict[str, str]) -> None:
    for value in bag_values(out):
        for key, secret in content.items():
            assert secret not in value, f"{key} is in a relation bag"


def the_app_secret(out: testing.State) -> testing.Secret:
    [secret] = [s for s in out.secrets if s.owner == "app"]
    return secret


def content_of(secret: testing.Secret) -> dict[str, str]:
    return dict(secret.latest_content or secret.tracked_content)


def test_the_leader_creates_the_secret_once_from_an_empty_bag(world: World) -> None:
    c = ctx()
    out = c.run(c.on.start(), state(peers(passwords=False, initialised=False)))
    secret = the_app_secret(out)
    content = content_of(secret)
    assert app_bag(out) == {SECRET_ID_KEY: secret.id}
    assert set(content) == {*PASSWORD_KEYS, CA_CERT_KEY, CA_KEY_KEY, PASSPHRASE_KEY}
    assert len(content[PASSPHRASE_KEY]) >= 43  # 256 bits, url-safe base64
    assert all(len(content[k]) >= 24 for k in PASSWORD_KEYS)
    assert len({content[k] for k in PASSWORD_KEYS}) == len(PASSWORD_KEYS)
    assert "NEW-CA-KEY-1" in content[CA_KEY_KEY] and world.cas_made == 1
    assert_nothing_secret_in_any_bag(out, content)
    # The unit's pgBackRest certificate comes from that CA; Patroni starts with the
    # passwords read back from the secret.
    assert world.backup_tls.issued == ["pgbackups-postgresql-0 ['10.0.0.1'] from NEW-CA-1"]
    assert world.calls == ["apply_config", "start_database"]
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)

    # Later hooks, and a leader elected again, keep it as it is: no second secret, no
    # new revision, no new CA.
    for event in (c.on.leader_elected(), c.on.config_changed(), c.on.update_status()):
        out = ctx().run(event, out)
        assert the_app_secret(out) == secret and content_of(the_app_secret(out)) == content
        assert world.cas_made == 1
        assert_nothing_secret_in_any_bag(out, content)


def test_a_non_leader_waits_until_the_secret_exists(world: World) -> None:
    c = ctx()
    out = c.run(c.on.start(), state(peers(passwords=False), leader=False))
    assert [d.name for d in out.deferred] == ["start"]
    assert out.unit_status == testing.WaitingStatus(WAITING_FOR_PASSWORDS)
    assert list(out.secrets) == [] and SECRET_ID_KEY not in app_bag(out)
    assert world.calls == [] and world.backup_tls.issued == [] and world.cas_made == 0


def test_a_non_leader_reads_the_secret_the_bag_names(world: World) -> None:
    c = ctx()
    out = c.run(c.on.start(), state(peers(others=1), leader=False))
    assert world.calls == ["apply_config", "start_database"]
    assert world.backup_tls.issued == ["pgbackups-postgresql-0 ['10.0.0.1'] from PRIVATE-CA"]
    assert content_of(the_app_secret(out)) == content_of(APP_SECRET)
    assert world.cas_made == 0


def test_a_new_leader_keeps_the_secret(world: World) -> None:
    c = ctx()
    out = c.run(c.on.leader_elected(), state(peers(others=1)))
    assert the_app_secret(out) == APP_SECRET
    assert content_of(the_app_secret(out)) == content_of(APP_SECRET)
    assert app_bag(out)[SECRET_ID_KEY] == APP_SECRET.id and world.cas_made == 0


def test_passwords_an_older_charm_kept_in_the_bag_move_into_the_secret(world: World) -> None:
    legacy = {k: f"old-{k}" for k in PASSWORD_KEYS}
    c = ctx()
    out = c.run(c.on.upgrade_charm(), state(peers(legacy, passwords=False)))
    out = ctx().run(ctx().on.leader_elected(), out)
    content = content_of(the_app_secret(out))
    assert {k: content[k] for k in PASSWORD_KEYS} == legacy  # the database has these
    assert not set(PASSWORD_KEYS) & set(app_bag(out))
    assert_nothing_secret_in_any_bag(out, content)


def test_a_value_missing_from_the_secret_is_added_and_the_rest_kept(world: World) -> None:
    """A new charm revision that brings one more password: the leader adds it alone."""
    partial = {k: v for k, v in content_of(APP_SECRET).items() if k != PASSWORD_KEYS[-1]}
    secret = testing.Secret(partial, owner="app")
    c = ctx()
    out = c.run(
        c.on.leader_elected(),
        state(peers({SECRET_ID_KEY: secret.id}, passwords=False), secrets=[secret]),
    )
    content = content_of(the_app_secret(out))
    assert {k: content[k] for k in partial} == partial
    assert len(content[PASSWORD_KEYS[-1]]) >= 24 and world.cas_made == 0


def test_a_secret_that_cannot_be_read_is_never_replaced(world: World) -> None:
    """The database holds the passwords of the secret the bag names: a leader that cannot
    read it waits, it does not make new ones."""
    c = ctx()
    out = c.run(c.on.start(), state(peers(), secrets=[]))
    assert list(out.secrets) == [] and app_bag(out)[SECRET_ID_KEY] == APP_SECRET.id
    assert [d.name for d in out.deferred] == ["start"] and world.calls == []


@pytest.mark.parametrize("leader", [True, False])
def test_no_hook_puts_a_secret_into_a_bag(world: World, leader: bool) -> None:
    out = ctx().run(ctx().on.config_changed(), state(peers(others=2), leader=leader))
    assert_nothing_secret_in_any_bag(out, content_of(APP_SECRET))
    assert PASSWORDS.keys().isdisjoint(app_bag(out))


def test_the_certificate_is_issued_again_when_the_address_changes(world: World) -> None:
    before = state(peers())
    ctx().run(ctx().on.config_changed(), before)
    ctx().run(ctx().on.config_changed(), before)  # the same address: nothing to issue
    network = testing.Network(
        "database-peers",
        bind_addresses=[testing.BindAddress([testing.Address("10.0.0.9")])],
        ingress_addresses=["10.0.0.9"],
        egress_subnets=["10.0.0.0/24"],
    )
    ctx().run(ctx().on.config_changed(), dataclasses.replace(before, networks=frozenset({network})))
    ca = CA_CERT.splitlines()[1]
    assert world.backup_tls.issued == [
        f"pgbackups-postgresql-0 ['10.0.0.1'] from {ca}",
        f"pgbackups-postgresql-0 ['10.0.0.9'] from {ca}",
    ]
