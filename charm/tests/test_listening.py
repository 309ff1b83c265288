"""What the charm's listening services let in, rendered for a 3-unit model from the
Juju model through the real charm (ops.testing): pg_hba and pg_ident on the shared
socket directory, Patroni's REST API password and the Raft password (from the
application's secret)."""

from __future__ import annotations

from typing import Any

import yaml
from charm_fakes import World
from charm_states import APP_SECRET, ctx, peers, state
from ops import testing

from charm import PASSWORD_KEYS
from pgbackups.core.host import WorkloadConfig
from pgbackups.workload.layout import UnitFacts
from pgbackups.workload.workload import patroni_yaml
from raft_dcs import RaftDcs
from workload import MachinePaths

# A different value for each key, so that a test sees which one went where; they reach
# the units through the application's Juju secret (charm/src/app_secret.py).
PASSWORDS = {key: f"{key}-value" for key in PASSWORD_KEYS}
SECRET = testing.Secret({**APP_SECRET.tracked_content, **PASSWORDS}, id=APP_SECRET.id, owner="app")


def unit_facts() -> UnitFacts:
    """Unit 0 of three (10.0.0.1, peers 10.0.0.2 and 10.0.0.3)."""
    c = ctx()
    with c(c.on.update_status(), state(peers(others=2), secrets=[SECRET])) as mgr:
        facts: UnitFacts = mgr.charm.unit_facts()
        mgr.run()
    return facts


def rendered(*, connectivity: bool = True) -> dict[str, Any]:
    """Patroni's YAML of unit 0 of three."""
    config = WorkloadConfig(s3=None, stanza=None, tls_server=False, connectivity=connectivity)
    text = patroni_yaml(unit_facts(), RaftDcs(MachinePaths().raft_dir), config)
    return dict(yaml.safe_load(text))


def test_socket_lets_in_the_db_user_by_peer_and_everyone_else_by_password(world: World) -> None:
    pg = rendered()["postgresql"]
    assert pg["parameters"]["unix_socket_directories"] == "/var/run/postgresql"
    assert pg["pg_hba"][:2] == [
        "local all postgres peer map=pgbackups",
        "local all all scram-sha-256",
    ]
    assert pg["pg_ident"] == ["pgbackups postgres postgres", "pgbackups root postgres"]
    assert not any("trust" in rule for rule in pg["pg_hba"])


def test_replication_only_from_the_three_units(world: World) -> None:
    hba = rendered()["postgresql"]["pg_hba"]
    assert hba[2:] == [
        "host replication replicator 10.0.0.1/32 scram-sha-256",
        "host postgres rewind_user 10.0.0.1/32 scram-sha-256",
        "host replication replicator 10.0.0.2/32 scram-sha-256",
        "host postgres rewind_user 10.0.0.2/32 scram-sha-256",
        "host replication replicator 10.0.0.3/32 scram-sha-256",
        "host postgres rewind_user 10.0.0.3/32 scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
        "host all all 10.0.0.1/32 scram-sha-256",
    ]


def test_hidden_unit_still_replicates_but_rejects_clients(world: World) -> None:
    hba = rendered(connectivity=False)["postgresql"]["pg_hba"]
    reject = hba.index("host all all 0.0.0.0/0 reject")
    assert hba.index("host replication replicator 10.0.0.3/32 scram-sha-256") < reject
    assert reject < hba.index("host all all 10.0.0.1/32 scram-sha-256")


def test_rest_api_and_raft_have_the_passwords_of_the_app_secret(world: World) -> None:
    doc = rendered()
    auth = doc["restapi"]["authentication"]
    assert auth == {"username": "pgbackups", "password": PASSWORDS["rest-api-password"]}
    # Patroni is a Raft client: no self_addr (in no quorum), no bind_addr (no listener);
    # it reaches the members, its own unit's first.
    assert doc["raft"] == {
        "partner_addrs": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"],
        "password": PASSWORDS["raft-password"],
    }
    # The member listens on the unit's address only, with the same password.
    member = yaml.safe_load(RaftDcs("/var/lib/pgbackups/raft").member_config(unit_facts()))
    assert member == {
        "raft": {
            "data_dir": "/var/lib/pgbackups/raft",
            "self_addr": "10.0.0.1:2222",
            "bind_addr": "10.0.0.1:2222",
            "partner_addrs": ["10.0.0.2:2222", "10.0.0.3:2222"],
            "password": PASSWORDS["raft-password"],
        }
    }
