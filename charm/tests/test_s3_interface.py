"""The ``s3`` interface as both s3-integrator tracks speak it, from an empty remote bag.

Scripted providers play s3-integrator: track 1 (``charms.data_platform_libs.v0.s3``)
publishes plain fields once our bag names a ``bucket``; track 2 writes its
``lib-version`` on relation-created, publishes only once our bag holds ``bucket`` or
``lib-version``, and, for a requirer that lists ``requested-secrets``, puts the keys in
a Juju secret named by ``secret-extra``. Both sides' bags are checked against the
interface's published schemas (charm-relation-interfaces ``s3`` v0 and v1), restated
below as the fields each requires and their types (no JSON-schema library here)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from charm_fakes import World
from charm_states import PEM, STANZA, app_bag, ctx, peers, state
from ops import testing

APP = "pgbackups-postgresql"
ACCESS, SECRET = "AKIAEXAMPLE", "not-a-real-secret-key"

Schema = dict[str, tuple[str, ...]]

# --- the published schemas: required fields, JSON-array fields --------------------------------
# Relation data are strings (so every field is one); an array of the schema is JSON.
REQUIRER_V0: Schema = {"required": ("bucket",), "json_lists": ()}
REQUIRER_V1: Schema = {
    "required": ("lib-version", "requested-secrets"),
    "json_lists": ("requested-secrets",),
}
PROVIDER_V0: Schema = {
    "required": ("bucket", "access-key", "secret-key"),
    "json_lists": ("tls-ca-chain",),
}
# v1's README: the keys travel in the secret ``secret-extra`` names, not in the bag.
PROVIDER_V1: Schema = {
    "required": ("secret-extra",),
    "json_lists": ("tls-ca-chain",),
}


def schema_problems(bag: dict[str, str], schema: Schema) -> list[str]:
    problems = [f"{k} missing" for k in schema["required"] if not bag.get(k)]
    for k in schema["json_lists"]:
        if k in bag:
            value = json.loads(bag[k])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{k} not a JSON list of strings")
    return problems


# --- scripted providers ----------------------------------------------------------------


def settings(bucket: str) -> dict[str, str]:
    return {
        "bucket": bucket,
        "endpoint": "https://s3.example.com",
        "region": "eu-west-1",
        "path": "/pg",
        "s3-uri-style": "path",
        "tls-ca-chain": json.dumps([PEM]),
    }


class Track1Integrator:
    """Nothing until the requirer's bag names a bucket; then the keys in plain fields
    and its configured bucket, else the requested one."""

    def __init__(self, configured_bucket: str = "") -> None:
        self.configured_bucket = configured_bucket

    def publish(self, requirer_app_bag: dict[str, str]) -> dict[str, str]:
        requested = requirer_app_bag.get("bucket", "")
        if not requested:
            return {}
        return {
            "access-key": ACCESS,
            "secret-key": SECRET,
            **settings(self.configured_bucket or requested),
        }


class Track2Integrator:
    """Its ``lib-version`` from relation-created on; the settings once the requirer's
    bag holds ``bucket`` or ``lib-version``; the keys in a secret for a requirer that
    requested them (whose bucket it then honours), else in plain fields (and a track-1
    requirer's bucket is ignored)."""

    LIB_VERSION = "1.0"

    def __init__(self, configured_bucket: str = "") -> None:
        self.configured_bucket = configured_bucket
        self.secret = testing.Secret({"access-key": ACCESS, "secret-key": SECRET})

    def created(self) -> dict[str, str]:
        return {"lib-version": self.LIB_VERSION}

    def publish(self, requirer_app_bag: dict[str, str]) -> dict[str, str]:
        if not (requirer_app_bag.get("bucket") or requirer_app_bag.get("lib-version")):
            return self.created()
        wants_secret = set(json.loads(requirer_app_bag.get("requested-secrets", "[]")))
        requested = requirer_app_bag.get("bucket", "") if wants_secret else ""
        bag = {**self.created(), **settings(self.configured_bucket or requested)}
        if {"access-key", "secret-key"} <= wants_secret:
            bag["secret-extra"] = self.secret.id
        else:
            bag.update({"access-key": ACCESS, "secret-key": SECRET})
        return bag

    def rotate(self, access_key: str) -> testing.Secret:
        self.secret = dataclasses.replace(
            self.secret, latest_content={"access-key": access_key, "secret-key": SECRET}
        )
        return self.secret


def empty_s3() -> testing.Relation:
    return testing.Relation("s3-parameters", remote_app_name="s3-integrator", remote_app_data={})


def answered(
    out: testing.State, rel_id: int, bag: dict[str, str]
) -> tuple[testing.State, testing.Relation]:
    rel = out.get_relation(rel_id)
    assert isinstance(rel, testing.Relation)
    new = dataclasses.replace(rel, remote_app_data=bag)
    others = [r for r in out.relations if r.id != rel_id]
    return dataclasses.replace(out, relations=frozenset([*others, new])), new


def requirer_bag(out: testing.State, rel_id: int) -> dict[str, str]:
    return dict(out.get_relation(rel_id).local_app_data)


# --- our side ------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["relation_created", "relation_joined"])
def test_the_leader_introduces_itself_on_an_empty_relation(world: World, hook: str) -> None:
    c = ctx()
    rel = empty_s3()
    event = c.on.relation_created(rel) if hook == "relation_created" else c.on.relation_joined(rel)
    out = c.run(event, state(peers(), rel))
    ours = requirer_bag(out, rel.id)
    assert ours == {
        "bucket": APP,
        "lib-version": "1.0",
        "requested-secrets": json.dumps(["access-key", "secret-key"]),
    }
    assert schema_problems(ours, REQUIRER_V0) == []
    assert schema_problems(ours, REQUIRER_V1) == []
    assert "ensure_bucket" not in world.calls  # no credentials yet: nothing else happens


def test_the_schema_check_can_fail() -> None:
    assert schema_problems({}, REQUIRER_V0) == ["bucket missing"]
    assert schema_problems({"tls-ca-chain": "[1]"}, PROVIDER_V0)[-1].startswith("tls-ca-chain")


def test_a_non_leader_writes_nothing(world: World) -> None:
    c = ctx()
    rel = empty_s3()
    out = c.run(c.on.relation_joined(rel), state(peers(), rel, leader=False))
    assert requirer_bag(out, rel.id) == {}


def test_an_operator_s_bucket_stays(world: World) -> None:
    c = ctx()
    rel = testing.Relation(
        "s3-parameters", remote_app_name="s3-integrator", local_app_data={"bucket": "mine"}
    )
    out = c.run(c.on.relation_joined(rel), state(peers(), rel))
    assert requirer_bag(out, rel.id)["bucket"] == "mine"


# --- track 1 -------------------------------------------------------------------------


def test_track_1_publishes_after_the_bucket_and_the_core_takes_it(world: World) -> None:
    integrator = Track1Integrator()
    c = ctx()
    rel = empty_s3()
    assert integrator.publish(dict(rel.local_app_data)) == {}  # it waits for us
    out = c.run(c.on.relation_joined(rel), state(peers(), rel))
    published = integrator.publish(requirer_bag(out, rel.id))
    assert schema_problems(published, PROVIDER_V0) == []
    st, rel2 = answered(out, rel.id, published)
    c2 = ctx()
    out2 = c2.run(c2.on.relation_changed(rel2), st)
    assert app_bag(out2)["stanza"] == STANZA
    assert world.calls.index("ensure_bucket") < world.calls.index("stanza_create")
    last = world.workload.configs[-1]
    assert last.s3 is not None
    assert (last.s3.bucket, last.s3.path, last.s3.access_key) == (APP, "/pg", ACCESS)
    assert out2.unit_status == testing.ActiveStatus()


# --- track 2 -------------------------------------------------------------------------


def test_track_2_waits_for_our_bag_then_hands_the_keys_over_in_a_secret(world: World) -> None:
    integrator = Track2Integrator()
    rel = empty_s3()
    # Its relation-created answer (only its lib-version) reaches us before ours reached it.
    st, rel1 = answered(state(peers(), rel), rel.id, integrator.created())
    c = ctx()
    out = c.run(c.on.relation_changed(rel1), st)
    assert "ensure_bucket" not in world.calls  # no keys: nothing for the core yet
    ours = requirer_bag(out, rel.id)
    assert ours["lib-version"] == "1.0" and ours["bucket"] == APP
    published = integrator.publish(ours)
    assert "access-key" not in published and "secret-key" not in published
    assert schema_problems(published, PROVIDER_V1) == []
    st2, rel2 = answered(out, rel.id, published)
    st2 = dataclasses.replace(st2, secrets=frozenset([*st2.secrets, integrator.secret]))
    c2 = ctx()
    out2 = c2.run(c2.on.relation_changed(rel2), st2)
    assert app_bag(out2)["stanza"] == STANZA
    last = world.workload.configs[-1]
    assert last.s3 is not None
    assert (last.s3.bucket, last.s3.access_key, last.s3.secret_key) == (APP, ACCESS, SECRET)
    assert out2.unit_status == testing.ActiveStatus()


def test_track_2_key_rotation_reaches_the_core(world: World) -> None:
    integrator = Track2Integrator()
    rel = testing.Relation(
        "s3-parameters",
        remote_app_name="s3-integrator",
        local_app_data={"bucket": APP, "lib-version": "1.0"},
    )
    ours: dict[str, str] = {
        **rel.local_app_data,
        "requested-secrets": json.dumps(["access-key", "secret-key"]),
    }
    st, _ = answered(state(peers(), rel), rel.id, integrator.publish(ours))
    rotated = integrator.rotate("AKIAROTATED")
    st = dataclasses.replace(st, secrets=frozenset([*st.secrets, rotated]))
    c = ctx()
    c.run(c.on.secret_changed(rotated), st)
    assert world.store.settings[-1].access_key == "AKIAROTATED"


def test_another_secret_changing_is_not_ours(world: World) -> None:
    integrator = Track2Integrator()
    rel = testing.Relation("s3-parameters", remote_app_name="s3-integrator")
    st, _ = answered(state(peers(), rel), rel.id, integrator.publish({"lib-version": "1.0"}))
    other = testing.Secret({"x": "y"})
    st = dataclasses.replace(st, secrets=frozenset([*st.secrets, other]))
    c = ctx()
    c.run(c.on.secret_changed(other), st)
    assert "ensure_bucket" not in world.calls


def test_track_2_secret_not_granted_yet_waits_quietly(world: World) -> None:
    integrator = Track2Integrator()
    rel = testing.Relation(
        "s3-parameters",
        remote_app_name="s3-integrator",
        local_app_data={
            "bucket": APP,
            "lib-version": "1.0",
            "requested-secrets": json.dumps(["access-key", "secret-key"]),
        },
    )
    published = integrator.publish(dict(rel.local_app_data))
    st, rel2 = answered(state(peers(), rel), rel.id, published)  # the secret is not ours
    c = ctx()
    out = c.run(c.on.relation_changed(rel2), st)
    assert "ensure_bucket" not in world.calls
    assert out.unit_status == testing.ActiveStatus()


def test_track_2_for_a_requirer_without_requested_secrets_sends_plain_keys() -> None:
    # What our requirer avoids by requesting secrets: its bucket would be dropped.
    published = Track2Integrator(configured_bucket="").publish({"bucket": APP})
    assert published["access-key"] == ACCESS and published["bucket"] == ""
