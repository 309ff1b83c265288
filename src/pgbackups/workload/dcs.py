"""Patroni's distributed configuration store, which differs between hosts: etcd for the
local runtime, Patroni's own Raft in the charm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pgbackups.workload.layout import UnitFacts

# The DCS keys Patroni's configuration may hold; the host's section replaces them all.
DCS_KEYS = ("etcd", "etcd3", "raft", "consul", "zookeeper", "kubernetes", "exhibitor")


class Dcs(Protocol):
    def patroni_section(self, facts: UnitFacts) -> Mapping[str, Any]:
        """The DCS part of Patroni's YAML, e.g. ``{"etcd3": {"hosts": [...]}}``."""
        ...

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        """Remove a departed unit (at ``address``) from the DCS; raises WorkloadError."""
        ...

    def remove_cluster(self, facts: UnitFacts) -> bool:
        """Delete the cluster's keys (a restore) with a client of this DCS's own: True
        when done; False when this DCS has none, and ``patronictl remove`` does it (it
        starts a Python with Patroni's modules: about half a second of a restore).
        Raises WorkloadError."""
        ...


def with_dcs(rendered: Mapping[str, Any], section: Mapping[str, Any]) -> dict[str, Any]:
    """Patroni's YAML with its DCS section replaced by ``section``, in the same place."""
    out: dict[str, Any] = {}
    placed = False
    for key, value in rendered.items():
        if key in DCS_KEYS:
            if not placed:
                out.update(section)
                placed = True
            continue
        out[key] = value
    if not placed:
        out.update(section)
    return out
