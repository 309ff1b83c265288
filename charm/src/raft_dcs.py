"""Patroni's Raft DCS (pysyncobj) on Juju machines: every unit is a Raft member.

``bind_addr`` pins the listener to the unit's address (without it pysyncobj listens on
0.0.0.0); a new member joins through any partner. See README.md ("The DCS") for why
Raft and not etcd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pgbackups.adapters import processes
from pgbackups.core.host import CommandResult, WorkloadError
from pgbackups.workload.layout import UnitFacts

log = logging.getLogger(__name__)

RAFT_PORT = 2222


def raft_section(facts: UnitFacts, raft_dir: str) -> dict[str, Any]:
    own = f"{facts.layout.address}:{RAFT_PORT}"
    return {
        "data_dir": raft_dir,
        "self_addr": own,
        "bind_addr": own,
        "partner_addrs": sorted(f"{p.address}:{RAFT_PORT}" for p in facts.peers),
    }


class RaftDcs:
    def __init__(self, raft_dir: str, *, run: Callable[..., CommandResult] = processes.run) -> None:
        self.raft_dir = raft_dir
        self._run = run

    def patroni_section(self, facts: UnitFacts) -> dict[str, Any]:
        return {"raft": raft_section(facts, self.raft_dir)}

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        """Remove a departed unit from the Raft group, through this (remaining) member."""
        own = f"{facts.layout.address}:{RAFT_PORT}"
        result = self._run(
            ["syncobj_admin", "-conn", own, "-remove", f"{address}:{RAFT_PORT}"], timeout=60
        )
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"syncobj_admin -remove {address}: {reason}")
