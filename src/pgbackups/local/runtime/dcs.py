"""The local cluster's DCS: the one etcd every unit's Patroni uses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pgbackups.adapters import patroni
from pgbackups.core.host import WorkloadError
from pgbackups.local.machinery import etcd
from pgbackups.local.machinery.etcd import EtcdTls
from pgbackups.workload.layout import UnitFacts

log = logging.getLogger(__name__)


class EtcdDcs:
    """Patroni reaches etcd over TLS with the cluster's client certificate (etcd lets in
    no client without one, see :mod:`pgbackups.local.machinery.etcd`)."""

    def __init__(self, endpoint: str, tls: EtcdTls) -> None:
        self.endpoint = endpoint  # host:port of the cluster's etcd
        self.tls = tls

    def patroni_section(self, facts: UnitFacts) -> Mapping[str, Any]:
        return {"etcd3": etcd.patroni_section(self.endpoint, self.tls)}

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        # A member's key in etcd expires with Patroni's TTL once it stops: nothing to do.
        log.debug("etcd forgets the member at %s by itself", address)

    def remove_cluster(self, facts: UnitFacts) -> bool:
        """What ``patronictl remove`` deletes (every key under Patroni's namespace and
        the scope), in one request to etcd's v3 gateway."""
        prefix = f"{patroni.NAMESPACE}{facts.layout.scope}/"
        try:
            deleted = etcd.delete_prefix(self.endpoint, self.tls, prefix)
        except OSError as exc:
            raise WorkloadError(f"{facts.layout.unit}: {exc}") from exc
        log.info("%s: removed %d keys of %s from etcd", facts.layout.unit, deleted, prefix)
        return True
