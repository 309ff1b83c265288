"""Patroni's Raft DCS (pysyncobj) on Juju machines: every unit is a Raft member.

``bind_addr`` pins the listener to the unit's address (without it pysyncobj listens on
0.0.0.0); a new member joins through any partner. See README.md ("The DCS") for why
Raft and not etcd.

The Raft port is open to the network, and whoever speaks Raft to it could write
Patroni's keys (fake a leader). ``password`` (Patroni 3.0.2 hands it to pysyncobj's
``SyncObjConf``) encrypts every message with a key derived from it and drops what does
not decrypt: only members, and our own admin command, know it.
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
# The system Python, where python3-pysyncobj is installed (the charm's own venv has no
# pysyncobj). syncobj_admin would need the password as ``-pass`` on its command line,
# which every local user can read in /proc: this reads it from its standard input.
SYSTEM_PYTHON = "/usr/bin/python3"
REMOVE_MEMBER_SCRIPT = """\
import sys
from pysyncobj.utility import TcpUtility, UtilityException
password = sys.stdin.readline().rstrip("\\n")
try:
    answer = TcpUtility(password, 30.0).executeCommand(sys.argv[1], ["remove", sys.argv[2]])
except UtilityException as exc:
    sys.exit("pysyncobj: %s" % exc)
print(answer)
sys.exit(0 if str(answer).startswith("SUCCESS") else 1)
"""


def raft_password(facts: UnitFacts) -> str:
    password = facts.passwords.raft if facts.passwords is not None else ""
    if not password:
        raise WorkloadError(f"{facts.layout.unit}: the Raft password is not known yet")
    return password


def raft_section(facts: UnitFacts, raft_dir: str) -> dict[str, Any]:
    own = f"{facts.layout.address}:{RAFT_PORT}"
    return {
        "data_dir": raft_dir,
        "self_addr": own,
        "bind_addr": own,
        "partner_addrs": sorted(f"{p.address}:{RAFT_PORT}" for p in facts.peers),
        "password": raft_password(facts),
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
            [SYSTEM_PYTHON, "-c", REMOVE_MEMBER_SCRIPT, own, f"{address}:{RAFT_PORT}"],
            input_text=raft_password(facts) + "\n",
            timeout=60,
        )
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"Raft member {address} not removed: {reason}")

    def remove_state(self, facts: UnitFacts) -> None:
        """Forget the cluster (a restore bootstraps it again): with Raft the DCS is the
        members' Raft log, kept in ``raft_dir`` and served by Patroni itself. Patroni is
        stopped for a restore, so ``patronictl remove`` finds no Raft to talk to and waits
        for its timeout; on the single unit a restore allows, removing this member's log
        is removing the cluster from the DCS. Done as the database user, whose folder it
        is (root never deletes by path in it)."""
        result = self._run(
            ["find", self.raft_dir, "-mindepth", "1", "-delete"],
            user=processes.db_user(),
            timeout=60,
        )
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"{facts.layout.unit}: the Raft state was not removed: {reason}")
