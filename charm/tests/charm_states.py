"""State builders for the charm tests."""

from __future__ import annotations

import ops
from ops import testing

from app_secret import CA_CERT_KEY, CA_KEY_KEY, PASSPHRASE_KEY
from charm import PASSWORD_KEYS, SECRET_ID_KEY, PgBackupsCharm

MODEL = testing.Model(name="prod", uuid="00000000-0000-4000-8000-000000000001")
STANZA = "prod.pgbackups-postgresql"
PASSWORDS = dict.fromkeys(PASSWORD_KEYS, "secret-pw")
CA_CERT = "-----BEGIN CERTIFICATE-----\nPRIVATE-CA\n-----END CERTIFICATE-----\n"
CA_KEY = "-----BEGIN PRIVATE KEY-----\nPRIVATE-CA-KEY\n-----END PRIVATE KEY-----\n"
REPOSITORY_PASSPHRASE = "repository-passphrase-of-the-tests"
# The application's secret as the leader leaves it: what most tests start from.
APP_SECRET = testing.Secret(
    {**PASSWORDS, CA_CERT_KEY: CA_CERT, CA_KEY_KEY: CA_KEY, PASSPHRASE_KEY: REPOSITORY_PASSPHRASE},
    owner="app",
    description="pgbackups: Patroni passwords, pgBackRest TLS CA",
)
GOOD_S3 = {
    "bucket": "backups",
    "access-key": "AKIAEXAMPLE",
    "secret-key": "s3cr3t",
    "endpoint": "https://s3.example.com",
    "path": "pg",
    "region": "eu-west-1",
}
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def ctx() -> testing.Context[PgBackupsCharm]:
    return testing.Context(PgBackupsCharm)


def peers(
    app: dict[str, str] | None = None,
    unit: dict[str, str] | None = None,
    others: int = 0,
    *,
    initialised: bool = True,
    passwords: bool = True,
    others_data: dict[int, dict[str, str]] | None = None,
) -> testing.PeerRelation:
    app_data = {SECRET_ID_KEY: APP_SECRET.id} if passwords else {}
    if initialised:
        app_data["cluster_initialised"] = "True"
    app_data.update(app or {})
    peers_data = {
        i: {"ingress-address": f"10.0.0.{i + 1}", "private-address": f"10.0.0.{i + 1}"}
        for i in range(1, others + 1)
    }
    for i, extra in (others_data or {}).items():
        peers_data.setdefault(i, {}).update(extra)
    return testing.PeerRelation(
        "database-peers",
        local_app_data=app_data,
        local_unit_data={
            "ingress-address": "10.0.0.1",
            "private-address": "10.0.0.1",
            "egress-subnets": "10.0.0.1/32",
            **(unit or {}),
        },
        peers_data=peers_data,
    )


def s3(data: dict[str, str] | None = None, /, **extra: str) -> testing.Relation:
    fields = dict(GOOD_S3 if data is None else data)
    fields.update({k.replace("_", "-"): v for k, v in extra.items()})
    return testing.Relation(
        "s3-parameters", remote_app_name="s3-integrator", remote_app_data=fields
    )


def certificates(provider: dict[str, str] | None = None) -> testing.Relation:
    return testing.Relation(
        "certificates",
        remote_app_name="self-signed-certificates",
        remote_app_data=provider or {},
    )


def state(
    *relations: testing.RelationBase,
    leader: bool = True,
    status: ops.StatusBase | None = None,
    planned_units: int | None = None,
    deferred: list[testing.DeferredEvent] | None = None,
    secrets: list[testing.Secret] | None = None,
) -> testing.State:
    """``secrets``: by default the application's secret when the peer bag names it."""
    peer = next((r for r in relations if isinstance(r, testing.PeerRelation)), None)
    units = planned_units or (1 + len(peer.peers_data) if peer is not None else 1)
    if secrets is None:
        bag: dict[str, str] = dict(peer.local_app_data) if peer is not None else {}
        named = bag.get(SECRET_ID_KEY) == APP_SECRET.id
        secrets = [APP_SECRET] if named else []
    return testing.State(
        secrets=secrets,
        leader=leader,
        relations=list(relations),
        unit_status=status or testing.ActiveStatus(),
        planned_units=units,
        model=MODEL,
        deferred=deferred or [],
        networks={
            testing.Network(
                "database-peers",
                bind_addresses=[testing.BindAddress([testing.Address("10.0.0.1")])],
                ingress_addresses=["10.0.0.1"],
                egress_subnets=["10.0.0.0/24"],
            )
        },
    )


def app_bag(out: testing.State) -> dict[str, str]:
    return dict(out.get_relations("database-peers")[0].local_app_data)


def unit_bag(out: testing.State) -> dict[str, str]:
    return dict(out.get_relations("database-peers")[0].local_unit_data)
