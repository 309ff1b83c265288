"""Raft membership changes against real pysyncobj members (the system Python's
``python3-pysyncobj``, what Patroni's Raft runs on), password-protected as the charm's
are, on loopback addresses of their own: a leaving member, stopped, is removed through
a partner that still runs Raft; never through itself, which pysyncobj refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters import processes
from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.core.host import Peer, WorkloadError
from pgbackups.workload.layout import UnitFacts
from raft_dcs import RAFT_PORT, REMOVE_MEMBER_SCRIPT, SYSTEM_PYTHON, RaftDcs
from workload import MachinePaths, machine_facts

pytestmark = pytest.mark.real

PASSWORD = "raft-test-password"
# Loopback addresses nobody else here uses (the local clusters sit on 127.0.0.1).
ADDRESSES = ("127.77.0.1", "127.77.0.2", "127.77.0.3")
MEMBER = """\
import sys, time
from pysyncobj import SyncObj, SyncObjConf
password = sys.stdin.readline().rstrip("\\n")
conf = SyncObjConf(password=password, dynamicMembershipChange=True, bindAddress=sys.argv[1])
SyncObj(sys.argv[1], sys.argv[2:], conf)
while True:
    time.sleep(1)
"""
STATUS = """\
import json, sys
from pysyncobj.utility import TcpUtility
utility = TcpUtility(sys.stdin.readline().rstrip("\\n"), 10.0)
status = utility.executeCommand(sys.argv[1], ["status"])
print(json.dumps({k: str(v) for k, v in status.items()}))
"""

pysyncobj_missing = subprocess.run(
    [SYSTEM_PYTHON, "-c", "import pysyncobj"], capture_output=True, timeout=30, check=False
).returncode


def raft(address: str) -> str:
    return f"{address}:{RAFT_PORT}"


def status(address: str) -> dict[str, str] | None:
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", STATUS, raft(address)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return None
    answer: dict[str, str] = json.loads(done.stdout)
    return answer


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def members(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    if pysyncobj_missing:
        pytest.fail("the system Python has no pysyncobj: `make setup` installs python3-pysyncobj")
    started: dict[str, subprocess.Popen[str]] = {}
    try:
        for own in ADDRESSES:
            partners = [raft(a) for a in ADDRESSES if a != own]
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, "-c", MEMBER, raft(own), *partners],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"{own}.log").open("w"),
                text=True,
                start_new_session=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(PASSWORD + "\n")
            proc.stdin.close()
            started[own] = proc
        wait_for(
            lambda: all(
                (s := status(a)) and s.get("leader") not in (None, "None") for a in ADDRESSES
            ),
            "a Raft leader known to every member",
        )
        yield started
    finally:
        for proc in started.values():  # only the processes this fixture started
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def facts_of(own: str) -> UnitFacts:
    return machine_facts(
        MachinePaths(),
        app="pgbackups-postgresql",
        unit=f"pgbackups-postgresql/{ADDRESSES.index(own)}",
        address=own,
        peers=tuple(
            Peer(f"pgbackups-postgresql/{i}", a) for i, a in enumerate(ADDRESSES) if a != own
        ),
        tls=None,
        passwords=PatroniPasswords("su", "repl", "rew", "rest", PASSWORD),
        stanza="prod.pgbackups-postgresql",
    )


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_stopped_member_leaves_through_a_partner(
    members: dict[str, subprocess.Popen[str]],
) -> None:
    leaving = ADDRESSES[2]
    stop(members[leaving])  # step 2 of leaving: its Patroni (and Raft) stopped
    dcs = RaftDcs("/nonexistent", run=processes.run)
    # Asked right after the stop: if the stopped member led Raft, the partners first
    # elect another leader, and leave() asks again meanwhile.
    assert dcs.leave(facts_of(leaving)) in ADDRESSES[:2]
    for remaining in ADDRESSES[:2]:
        wait_for(
            lambda r=remaining: (s := status(r)) is not None and s["partner_nodes_count"] == "1",
            f"{remaining} to count one partner",
        )
        answer = status(remaining)
        assert answer is not None
        assert f"partner_node_status_server_{raft(leaving)}" not in answer


def test_removal_through_the_leaving_member_itself_is_refused(
    members: dict[str, subprocess.Popen[str]],
) -> None:
    # Why leaving never goes through its own member: pysyncobj denies it.
    own = raft(ADDRESSES[2])
    refused = processes.run(
        [SYSTEM_PYTHON, "-c", REMOVE_MEMBER_SCRIPT, own, own],
        input_text=PASSWORD + "\n",
        timeout=60,
    )
    assert not refused.ok and "FAIL" in refused.stdout


def test_the_leader_removes_a_departed_member_through_its_own(
    members: dict[str, subprocess.Popen[str]],
) -> None:
    stop(members[ADDRESSES[1]])
    dcs = RaftDcs("/nonexistent", run=processes.run)

    def forgotten() -> bool:
        # Refused while the partners elect a new leader (the stopped one may have led):
        # the charm keeps it pending and asks again on the next hooks.
        try:
            dcs.forget_member(facts_of(ADDRESSES[0]), ADDRESSES[1])
        except WorkloadError:
            return False
        return True

    wait_for(forgotten, "the departed member's removal")
    assert dcs.partners(facts_of(ADDRESSES[0]), ADDRESSES[0]) == [raft(ADDRESSES[2])]
    # Again (a retry, or it had left by itself): nothing to do, not a failure for ever.
    dcs.forget_member(facts_of(ADDRESSES[0]), ADDRESSES[1])
    wait_for(
        lambda: (s := status(ADDRESSES[2])) is not None and s["partner_nodes_count"] == "1",
        "the third member to count one partner",
    )
