"""Patroni's Raft DCS (pysyncobj) on Juju machines: every unit runs a Raft member of its
own, apart from Patroni.

The member is ``patroni_raft_controller`` (shipped with Patroni), a service of its own
(``pgbackups-raft.service``, :mod:`systemd_services`), so that it keeps running while
Patroni is stopped: a restore stops Patroni on every unit but the leader, and the
leader's bootstrap needs a Raft quorum. Patroni itself is only a Raft *client*: its
``raft`` section has no ``self_addr``, which makes pysyncobj a read-only node that
follows the members' log and sends its writes (leader key, member keys) to the Raft
leader; it counts in no quorum and listens on no port. Verified with Patroni 3.0.2 and
pysyncobj 0.3.11 (``tests/test_raft_controller.py``).

The member's ``bind_addr`` pins its listener to the unit's address (without it
pysyncobj listens on 0.0.0.0); a new member joins through any partner. See README.md
("The DCS") for why Raft and not etcd.

The Raft port is open to the network, and whoever speaks Raft to it could write
Patroni's keys (fake a leader). ``password`` (Patroni 3.0.2 hands it to pysyncobj's
``SyncObjConf``) encrypts every message with a key derived from it and drops what does
not decrypt: only members, and our own admin command, know it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import yaml

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

# The members a Raft member counts besides itself (its ``status``), as a JSON list.
PARTNERS_SCRIPT = """\
import json, sys
from pysyncobj.utility import TcpUtility, UtilityException
password = sys.stdin.readline().rstrip("\\n")
try:
    status = TcpUtility(password, 30.0).executeCommand(sys.argv[1], ["status"])
except UtilityException as exc:
    sys.exit("pysyncobj: %s" % exc)
prefix = "partner_node_status_server_"
print(json.dumps(sorted(k[len(prefix):] for k in status if k.startswith(prefix))))
"""


def raft_password(facts: UnitFacts) -> str:
    password = facts.passwords.raft if facts.passwords is not None else ""
    if not password:
        raise WorkloadError(f"{facts.layout.unit}: the Raft password is not known yet")
    return password


def member_section(facts: UnitFacts, raft_dir: str) -> dict[str, Any]:
    """The ``raft`` section of this unit's Raft member (``patroni_raft_controller``):
    it names its files after ``self_addr`` in ``data_dir`` (the database user's)."""
    own = f"{facts.layout.address}:{RAFT_PORT}"
    return {
        "data_dir": raft_dir,
        "self_addr": own,
        "bind_addr": own,
        "partner_addrs": sorted(f"{p.address}:{RAFT_PORT}" for p in facts.peers),
        "password": raft_password(facts),
    }


def client_section(facts: UnitFacts) -> dict[str, Any]:
    """Patroni's ``raft`` section: no ``self_addr`` (a read-only client, in no quorum,
    writing no Raft files), no ``bind_addr`` (it listens on nothing); it reaches the
    members, this unit's first, with the members' password."""
    own = f"{facts.layout.address}:{RAFT_PORT}"
    peers = sorted(f"{p.address}:{RAFT_PORT}" for p in facts.peers if p.address != own)
    return {"partner_addrs": [own, *peers], "password": raft_password(facts)}


def member_yaml(facts: UnitFacts, raft_dir: str) -> str:
    """The Raft member's configuration file (it holds the Raft password). It logs to
    its standard error: the journal, ``journalctl -u pgbackups-raft``."""
    return yaml.safe_dump({"raft": member_section(facts, raft_dir)}, sort_keys=False)


# A leaving member that was the Raft leader leaves its partners without one until they
# elect another (pysyncobj's election timeout is about a second): a removal asked in
# that moment fails, so leaving asks again for this long.
LEAVE_PATIENCE_SECONDS = 30.0
LEAVE_RETRY_SECONDS = 1.0


class RaftDcs:
    def __init__(
        self,
        raft_dir: str,
        *,
        run: Callable[..., CommandResult] = processes.run,
        leave_patience: float = LEAVE_PATIENCE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.raft_dir = raft_dir
        self._run = run
        self.leave_patience = leave_patience
        self._sleep = sleep

    def patroni_section(self, facts: UnitFacts) -> dict[str, Any]:
        return {"raft": client_section(facts)}

    def member_config(self, facts: UnitFacts) -> str:
        return member_yaml(facts, self.raft_dir)

    def _remove(self, facts: UnitFacts, through: str, address: str) -> None:
        """Ask the Raft member at ``through`` to remove the one at ``address``."""
        result = self._run(
            [
                SYSTEM_PYTHON,
                "-c",
                REMOVE_MEMBER_SCRIPT,
                f"{through}:{RAFT_PORT}",
                f"{address}:{RAFT_PORT}",
            ],
            input_text=raft_password(facts) + "\n",
            timeout=60,
        )
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"Raft member {address} not removed via {through}: {reason}")

    def partners(self, facts: UnitFacts, through: str) -> list[str] | None:
        """The ``address:port`` of the members the one at ``through`` counts besides
        itself; None when it does not answer."""
        result = self._run(
            [SYSTEM_PYTHON, "-c", PARTNERS_SCRIPT, f"{through}:{RAFT_PORT}"],
            input_text=raft_password(facts) + "\n",
            timeout=60,
        )
        if not result.ok:
            return None
        try:
            answer = json.loads(result.stdout)
        except json.JSONDecodeError:
            return None
        if not isinstance(answer, list):
            return None
        return [str(a) for a in answer]

    def remove_cluster(self, facts: UnitFacts) -> bool:
        """No client of ours for Patroni's Raft: ``patronictl remove`` deletes the keys
        through the members (they run on every unit, Patroni running or not)."""
        return False

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        """Remove a departed unit from the Raft group, through this (remaining) member.
        Nothing to do when it is no member any more (it left by itself): pysyncobj
        answers FAIL to the removal of a non-member, for ever."""
        own = facts.layout.address
        members = self.partners(facts, own)
        if members is not None and f"{address}:{RAFT_PORT}" not in members:
            log.info("Raft member %s already gone", address)
            return
        self._remove(facts, own, address)

    def leave(self, facts: UnitFacts) -> str | None:
        """Remove this (stopped) member from the Raft group through a partner that still
        runs Raft: a stopped member serves nothing, so never through this one. Returns
        the partner that removed it; None without partners (the last unit: no group to
        leave). Raises WorkloadError when no partner could."""
        own = facts.layout.address
        partners = sorted({p.address for p in facts.peers if p.address != own})
        if not partners:
            return None
        deadline = time.monotonic() + self.leave_patience
        while True:
            reasons = []
            for partner in partners:
                counted = self.partners(facts, partner)
                if counted is not None and f"{own}:{RAFT_PORT}" not in counted:
                    return partner  # removed already (an earlier try, or the leader)
                try:
                    self._remove(facts, partner, own)
                except WorkloadError as exc:
                    reasons.append(str(exc))
                    continue
                return partner
            if time.monotonic() >= deadline:
                raise WorkloadError("; ".join(reasons))
            self._sleep(LEAVE_RETRY_SECONDS)

    def data_files(self, facts: UnitFacts) -> str:
        """The start of the names of this member's Raft files (``<addr>:<port>.journal``,
        ``.dump``) in ``raft_dir``: the member names them after ``self_addr`` (as
        Patroni's own member did before, so a unit upgraded to the separate member keeps
        its Raft state)."""
        return f"{facts.layout.address}:{RAFT_PORT}."
