"""The ``s3`` interface as s3-integrator speaks it, from an empty remote bag: our leader
asks for a bucket first, then the provider's bag (as s3-integrator publishes it once it
sees ``bucket``) leads to the S3 handling. A scripted provider plays s3-integrator."""

from __future__ import annotations

import json

import pytest
from charm_fakes import World
from charm_states import PEM, STANZA, app_bag, ctx, peers, state
from ops import testing

APP = "pgbackups-postgresql"


class ScriptedIntegrator:
    """What s3-integrator does with the requirer's bag: nothing until it names a bucket,
    then the connection info (its configured bucket, else the requested one)."""

    def __init__(self, configured_bucket: str = "") -> None:
        self.configured_bucket = configured_bucket

    def publish(self, requirer_app_bag: dict[str, str]) -> dict[str, str]:
        requested = requirer_app_bag.get("bucket", "")
        if not requested:
            return {}
        return {
            "access-key": "AKIAEXAMPLE",
            "secret-key": "not-a-real-secret-key",
            "bucket": self.configured_bucket or requested,
            "endpoint": "https://s3.example.com",
            "region": "eu-west-1",
            "path": "/pg",
            "s3-uri-style": "path",
            "tls-ca-chain": json.dumps([PEM]),
        }


def empty_s3() -> testing.Relation:
    return testing.Relation("s3-parameters", remote_app_name="s3-integrator", remote_app_data={})


@pytest.mark.parametrize("hook", ["relation_created", "relation_joined"])
def test_the_leader_asks_for_a_bucket_on_an_empty_relation(world: World, hook: str) -> None:
    c = ctx()
    rel = empty_s3()
    event = c.on.relation_created(rel) if hook == "relation_created" else c.on.relation_joined(rel)
    out = c.run(event, state(peers(), rel))
    assert out.get_relation(rel.id).local_app_data == {"bucket": APP}
    assert "ensure_bucket" not in world.calls  # no credentials yet: nothing else happens


def test_a_non_leader_writes_nothing(world: World) -> None:
    c = ctx()
    rel = empty_s3()
    out = c.run(c.on.relation_joined(rel), state(peers(), rel, leader=False))
    assert out.get_relation(rel.id).local_app_data == {}


def test_an_operator_s_bucket_stays(world: World) -> None:
    c = ctx()
    rel = testing.Relation(
        "s3-parameters", remote_app_name="s3-integrator", local_app_data={"bucket": "mine"}
    )
    out = c.run(c.on.relation_joined(rel), state(peers(), rel))
    assert out.get_relation(rel.id).local_app_data == {"bucket": "mine"}


def test_the_integrator_publishes_after_the_bucket_and_the_core_takes_it(world: World) -> None:
    integrator = ScriptedIntegrator()
    c = ctx()
    rel = empty_s3()
    assert integrator.publish(dict(rel.local_app_data)) == {}  # it waits for us
    out = c.run(c.on.relation_joined(rel), state(peers(), rel))
    ours: dict[str, str] = dict(out.get_relation(rel.id).local_app_data)
    published = testing.Relation(
        "s3-parameters",
        id=rel.id,
        remote_app_name="s3-integrator",
        local_app_data=ours,
        remote_app_data=integrator.publish(ours),
    )
    c2 = ctx()
    out2 = c2.run(c2.on.relation_changed(published), state(peers(), published))
    assert app_bag(out2)["stanza"] == STANZA
    assert world.calls.index("ensure_bucket") < world.calls.index("stanza_create")
    last = world.workload.configs[-1]
    assert last.s3 is not None
    assert last.s3.bucket == APP
    assert last.s3.path == "/pg"
    assert out2.unit_status == testing.ActiveStatus()
