"""The requirer side of the ``s3`` interface, as small as the charm needs it.

The s3-integrator charm (the provider) writes the S3 connection info into its
*application* bag of the ``s3-parameters`` relation. This object turns the relation's
events into the two events the backups core knows:

- ``credentials_changed``: relation-changed once the provider's bag holds the fields
  the data-platform s3 library requires to emit it (``access-key`` and ``secret-key``).
  Whether *every* required setting is there (``bucket`` too), and whether the values
  are valid, is the core's decision (``pgbackups.core.settings.parse_s3_settings``).
- ``credentials_gone``: relation-broken.

Only the fields of the provider's application bag are read (``bucket``, ``access-key``,
``secret-key``, ``endpoint``, ``region``, ``path``, ``s3-uri-style``, ``tls-ca-chain`` as
a JSON list of PEM strings, ``storage-class``, ``delete-older-than-days``, ...).

The requirer's side of the interface is one field: the leader writes ``bucket`` (this
application's name) into our application bag when the relation is created or a unit
joins. The interface's requirer schema marks it required, and s3-integrator publishes
the credentials only once it sees it (a bucket configured on the integrator wins over
ours: the core uses the bucket the provider's bag names).
"""

from __future__ import annotations

import logging

import ops

log = logging.getLogger(__name__)

# The data-platform s3 library emits credentials-changed only when these are present.
EMIT_WHEN_PRESENT = ("access-key", "secret-key")


class S3CredentialsChangedEvent(ops.EventBase):
    """The S3 connection info in the relation changed (and holds the keys)."""


class S3CredentialsGoneEvent(ops.EventBase):
    """The S3 relation is gone."""


class S3RequirerEvents(ops.ObjectEvents):
    credentials_changed = ops.EventSource(S3CredentialsChangedEvent)
    credentials_gone = ops.EventSource(S3CredentialsGoneEvent)


class S3Requirer(ops.Object):
    on = S3RequirerEvents()  # type: ignore[misc, unused-ignore]

    def __init__(self, charm: ops.CharmBase, relation_name: str):
        super().__init__(charm, relation_name)
        self.relation_name = relation_name
        framework = charm.framework
        framework.observe(charm.on[relation_name].relation_created, self._ask_for_bucket)
        framework.observe(charm.on[relation_name].relation_joined, self._ask_for_bucket)
        framework.observe(charm.on.leader_elected, self._ask_for_bucket)
        framework.observe(charm.on[relation_name].relation_changed, self._on_changed)
        framework.observe(charm.on[relation_name].relation_broken, self._on_broken)

    def connection_info(self) -> dict[str, str] | None:
        """The provider's application bag; None when there is no S3 relation."""
        relation = self.model.get_relation(self.relation_name)
        if relation is None:
            return None
        if relation.app is None:  # the remote side is not known yet
            return {}
        return dict(relation.data[relation.app])

    @property
    def bucket(self) -> str:
        """The bucket we ask for: the application's name (a valid bucket name for the
        names Juju allows, lower case letters, digits and hyphens)."""
        return self.model.app.name

    def _ask_for_bucket(self, event: ops.EventBase) -> None:
        """The leader writes ``bucket`` once (an operator's edit stays)."""
        relation = self.model.get_relation(self.relation_name)
        if relation is None or not self.model.unit.is_leader():
            return
        ours = relation.data[self.model.app]
        if not ours.get("bucket"):
            ours["bucket"] = self.bucket
            log.info("S3 relation: asked the integrator for bucket %r", self.bucket)

    def _on_changed(self, event: ops.RelationChangedEvent) -> None:
        info = self.connection_info() or {}
        absent = [k for k in EMIT_WHEN_PRESENT if not info.get(k, "").strip()]
        if absent:
            log.warning("S3 relation: %s not provided yet; waiting for the integrator", absent)
            return
        self.on.credentials_changed.emit()

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        self.on.credentials_gone.emit()
