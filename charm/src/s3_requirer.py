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
a JSON list of PEM strings, ``storage-class``, ``delete-older-than-days``, ...). The
requirer asks for nothing: the bucket is configured on the integrator.
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

    def _on_changed(self, event: ops.RelationChangedEvent) -> None:
        info = self.connection_info() or {}
        absent = [k for k in EMIT_WHEN_PRESENT if not info.get(k, "").strip()]
        if absent:
            log.warning("S3 relation: %s not provided yet; waiting for the integrator", absent)
            return
        self.on.credentials_changed.emit()

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        self.on.credentials_gone.emit()
