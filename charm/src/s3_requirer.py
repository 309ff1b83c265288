"""The requirer side of the ``s3`` interface, as both s3-integrator tracks speak it.

What we write (the leader, into our *application* bag, on relation-created/-joined and
leader-elected):

- ``bucket``: the bucket we ask for, this application's name (an operator's value
  stays). Track 1 (``charms.data_platform_libs.v0.s3``) publishes nothing until it
  appears; track 2 honours it when s3-integrator has no ``bucket`` configured.
- ``lib-version`` (``1.0``) and ``requested-secrets`` (``["access-key", "secret-key"]``),
  as track 2's requirer library writes them. Track 2 publishes only once ``bucket`` or
  ``lib-version`` is there, and with ``requested-secrets`` it hands the keys over in a
  Juju secret (and honours our bucket; without it, it treats us as a track-1 requirer
  and drops our bucket). Track 1 ignores both fields.

What we read (the provider's application bag): ``bucket``, ``endpoint``, ``region``,
``path``, ``s3-uri-style``, ``tls-ca-chain`` (JSON list of PEM), ``storage-class``,
``delete-older-than-days``... and the keys, either as plain ``access-key`` /
``secret-key`` fields (track 1) or in the secret whose id is in ``secret-extra``
(track 2: the ``secret-<group>`` fields of data-platform's relation data; the secret
holds ``access-key`` and ``secret-key``). Only those two keys are taken from a secret.
Whether every required setting is there and valid is the core's decision
(``pgbackups.core.settings.parse_s3_settings``).

The events the core knows:

- ``credentials_changed``: relation-changed, or secret-changed for the provider's
  secret (a key rotation), once both keys are known.
- ``credentials_gone``: relation-broken.
"""

from __future__ import annotations

import json
import logging

import ops

log = logging.getLogger(__name__)

# Both keys must be known before the core is told (as both tracks' libraries do).
EMIT_WHEN_PRESENT = ("access-key", "secret-key")
# What track 2's requirer library announces (its LIBAPI.LIBPATCH): the s3 interface v1
# behaviour (keys in a Juju secret) that this requirer follows.
LIB_VERSION = "1.0"
REQUESTED_SECRETS = json.dumps(["access-key", "secret-key"])
SECRET_FIELD_PREFIX = "secret-"  # noqa: S105 (a field name's start, no secret)
# Fields of ours and of the relation's mechanics, never S3 settings.
NOT_SETTINGS = ("lib-version", "requested-secrets", "provided-secrets")


class S3CredentialsChangedEvent(ops.EventBase):
    """The S3 connection info in the relation changed (and holds the keys)."""


class S3CredentialsGoneEvent(ops.EventBase):
    """The S3 relation is gone."""


class S3RequirerEvents(ops.ObjectEvents):
    credentials_changed = ops.EventSource(S3CredentialsChangedEvent)
    credentials_gone = ops.EventSource(S3CredentialsGoneEvent)


def _names_a_secret(field: str) -> bool:
    """``secret-extra`` and its kind hold a secret's id; ``secret-key`` is a key."""
    return field.startswith(SECRET_FIELD_PREFIX) and field not in EMIT_WHEN_PRESENT


def _secret_key_of(uri: str) -> str:
    """A secret's unique part, whatever form its id was written in (``secret:ID``,
    ``secret://MODEL/ID``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class S3Requirer(ops.Object):
    on = S3RequirerEvents()  # type: ignore[misc, unused-ignore]

    def __init__(self, charm: ops.CharmBase, relation_name: str):
        super().__init__(charm, relation_name)
        self.relation_name = relation_name
        framework = charm.framework
        framework.observe(charm.on[relation_name].relation_created, self._introduce)
        framework.observe(charm.on[relation_name].relation_joined, self._introduce)
        framework.observe(charm.on.leader_elected, self._introduce)
        framework.observe(charm.on[relation_name].relation_changed, self._on_changed)
        framework.observe(charm.on[relation_name].relation_broken, self._on_broken)
        framework.observe(charm.on.secret_changed, self._on_secret_changed)

    @property
    def relation(self) -> ops.Relation | None:
        return self.model.get_relation(self.relation_name)

    def _secret_ids(self, provider: dict[str, str]) -> list[str]:
        return [v for k, v in sorted(provider.items()) if _names_a_secret(k) and v]

    def connection_info(self) -> dict[str, str] | None:
        """The provider's settings, keys included from its secret; None when there is no
        S3 relation."""
        relation = self.relation
        if relation is None:
            return None
        if relation.app is None:  # the remote side is not known yet
            return {}
        provider = dict(relation.data[relation.app])
        info = {
            k: v for k, v in provider.items() if k not in NOT_SETTINGS and not _names_a_secret(k)
        }
        for uri in self._secret_ids(provider):
            try:
                content = self.model.get_secret(id=uri).get_content(refresh=True)
            except (ops.SecretNotFoundError, ops.ModelError) as exc:
                # Granted a moment after the bag was written, or revoked: no keys yet.
                log.warning("S3 relation: the integrator's secret is not readable: %s", exc)
                continue
            for key in EMIT_WHEN_PRESENT:
                if content.get(key):
                    info[key] = content[key]
        return info

    @property
    def bucket(self) -> str:
        """The bucket we ask for: the application's name (a valid bucket name for the
        names Juju allows, lower case letters, digits and hyphens)."""
        return self.model.app.name

    def _introduce(self, event: ops.EventBase) -> None:
        """The leader writes our side once (an operator's ``bucket`` stays)."""
        relation = self.relation
        if relation is None or not self.model.unit.is_leader():
            return
        ours = relation.data[self.model.app]
        if not ours.get("bucket"):
            ours["bucket"] = self.bucket
            log.info("S3 relation: asked the integrator for bucket %r", self.bucket)
        if ours.get("requested-secrets") != REQUESTED_SECRETS:
            ours["requested-secrets"] = REQUESTED_SECRETS
        if ours.get("lib-version") != LIB_VERSION:
            ours["lib-version"] = LIB_VERSION

    def _emit_if_complete(self) -> None:
        info = self.connection_info() or {}
        absent = [k for k in EMIT_WHEN_PRESENT if not info.get(k, "").strip()]
        if absent:
            log.warning("S3 relation: %s not provided yet; waiting for the integrator", absent)
            return
        self.on.credentials_changed.emit()

    def _on_changed(self, event: ops.RelationChangedEvent) -> None:
        self._introduce(event)  # a leader elected before the relation existed
        self._emit_if_complete()

    def _on_secret_changed(self, event: ops.SecretChangedEvent) -> None:
        """The integrator rotated the keys in its secret."""
        relation = self.relation
        if relation is None or relation.app is None or event.secret.id is None:
            return
        provider = dict(relation.data[relation.app])
        changed = _secret_key_of(event.secret.id)
        if any(_secret_key_of(uri) == changed for uri in self._secret_ids(provider)):
            self._emit_if_complete()

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        self.on.credentials_gone.emit()
