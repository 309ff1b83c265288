"""The local cluster's DCS: the one etcd every unit's Patroni uses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pgbackups.workload.layout import UnitFacts

log = logging.getLogger(__name__)


class EtcdDcs:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint  # host:port of the cluster's etcd

    def patroni_section(self, facts: UnitFacts) -> Mapping[str, Any]:
        return {"etcd3": {"hosts": [self.endpoint]}}

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        # A member's key in etcd expires with Patroni's TTL once it stops: nothing to do.
        log.debug("etcd forgets the member at %s by itself", address)
