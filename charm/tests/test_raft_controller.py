"""The Raft members apart from Patroni, for real: three ``patroni_raft_controller``
processes (Debian's Patroni 3.0.2, python3-pysyncobj 0.3.11) and Patroni with PostgreSQL
15 as a Raft *client*, each from the files the charm's code writes (``make_dirs``,
``write_raft_config``, the shared Patroni renderer with ``RaftDcs``), as ``postgres`` on
loopback addresses of their own.

The restore's situation: every unit's Patroni but the leader's is stopped. Their Raft
members keep running, so the leader's Patroni still writes its keys (leader, member)
through the members' quorum, and after ``patronictl remove`` it bootstraps a new
cluster on them. A member that stops leaves the other two a quorum. And a Raft member
started on the files an older revision's Patroni left keeps the keys."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters import processes
from pgbackups.adapters.patroni import PatroniClient, PatroniPasswords, PatroniUnavailable, RestAuth
from pgbackups.core.host import CommandResult, Peer, WorkloadConfig
from pgbackups.workload.layout import UnitFacts
from pgbackups.workload.workload import write_patroni_config
from raft_dcs import RAFT_PORT, SYSTEM_PYTHON
from workload import MachinePaths, MachineWorkload, machine_facts

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(os.geteuid() != 0, reason="root starts the services as postgres"),
]

PASSWORDS = PatroniPasswords("su-pw", "repl-pw", "rewind-pw", "rest-pw", "raft-pw")
# Loopback addresses nobody else here uses (test_raft_membership has .1-.3, the local
# clusters 127.0.0.1).
ADDRESSES = ("127.77.0.31", "127.77.0.32", "127.77.0.33")
APP = "pgbackups-postgresql"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # no PATRONI_* from ours
PG_VERSION = "15"  # Debian 12's, which this machine has

# The members a Raft member counts, read with the Raft password from stdin.
MEMBERS = """\
import json, sys
from pysyncobj.utility import TcpUtility
utility = TcpUtility(sys.stdin.readline().rstrip("\\n"), 10.0)
print(json.dumps(utility.executeCommand(sys.argv[1], ["members"])))
"""


def raft(address: str) -> str:
    return f"{address}:{RAFT_PORT}"


@dataclass
class Unit:
    index: int
    address: str
    paths: MachinePaths
    data_dir: str
    facts: UnitFacts
    raft: subprocess.Popen[bytes] | None = None
    patroni: subprocess.Popen[bytes] | None = None

    @property
    def workload(self) -> MachineWorkload:
        return MachineWorkload(lambda: self.facts, self.paths)

    def client(self) -> PatroniClient:
        return PatroniClient(self.address, 8008, timeout=3.0, auth=RestAuth.of(PASSWORDS))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    db = processes.db_user()
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=ENV,
            cwd="/",
            user=db.uid,
            group=db.gid,
            extra_groups=[],
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop one process this test started, by its PID (Patroni stops its PostgreSQL on
    SIGTERM); what is left of its session is killed."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its session only


def members_of(address: str) -> list[str] | None:
    done = processes.run(
        [SYSTEM_PYTHON, "-c", MEMBERS, raft(address)], input_text="raft-pw\n", timeout=30
    )
    if not done.ok:
        return None
    return sorted(m["addr"] for m in json.loads(done.stdout))


def dcs_rows(unit: Unit) -> list[dict[str, object]]:
    """The cluster's keys as patronictl reads them from the Raft members (a client of
    its own): one row per member key, the leader key as its role."""
    done = processes.run(
        ["patronictl", "-c", unit.paths.patroni_config, "list", "-f", "json"],
        user=processes.db_user(),
        timeout=60,
    )
    assert done.ok, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout or "[]")
    return rows


def leader_in_dcs(unit: Unit) -> str | None:
    return next((str(r["Member"]) for r in dcs_rows(unit) if r.get("Role") == "Leader"), None)


def members_in_dcs(unit: Unit) -> list[str]:
    return sorted(str(r["Member"]) for r in dcs_rows(unit))


def is_primary(unit: Unit) -> bool:
    try:
        return unit.client().is_primary()
    except PatroniUnavailable:
        return False


def system_identifier(unit: Unit) -> str:
    done = processes.run(
        [f"/usr/lib/postgresql/{PG_VERSION}/bin/pg_controldata", unit.data_dir],
        user=processes.db_user(),
        timeout=30,
    )
    assert done.ok, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("Database system identifier"))
    return line.split(":", 1)[1].strip()


@pytest.fixture
def units() -> Iterator[list[Unit]]:
    if not Path("/usr/bin/patroni_raft_controller").exists():
        pytest.fail("no patroni_raft_controller: `make setup` installs Debian's patroni")
    base = Path(tempfile.mkdtemp(prefix="pgbackups-raftctl-", dir="/tmp"))
    base.chmod(0o755)
    db = processes.db_user()
    made: list[Unit] = []
    try:
        for i, address in enumerate(ADDRESSES):
            root = base / f"u{i}"
            root.mkdir(mode=0o755)
            (root / "systemd").mkdir()  # the unit files the workload writes (never read)
            paths = MachinePaths(
                pg_version=PG_VERSION,
                state_dir=str(root / "lib"),
                etc_dir=str(root / "etc"),
                log_dir=str(root / "log"),
                systemd_dir=str(root / "systemd"),
                socket_dir=str(root / "sock"),
            )
            for folder in (root / "pg", root / "sock"):
                folder.mkdir(mode=0o700)
                os.chown(folder, db.uid, db.gid)
            facts = machine_facts(
                paths,
                app=APP,
                unit=f"{APP}/{i}",
                address=address,
                peers=tuple(Peer(f"{APP}/{j}", a) for j, a in enumerate(ADDRESSES) if j != i),
                tls=None,
                passwords=PASSWORDS,
                stanza=f"prod.{APP}",
            )
            data_dir = str(root / "pg" / "data")
            facts = replace(facts, layout=replace(facts.layout, data_dir=data_dir))
            unit = Unit(i, address, paths, data_dir, facts)
            workload = unit.workload
            workload.make_dirs()
            workload.write_raft_config(facts)
            config = WorkloadConfig(s3=None, stanza=None, tls_server=False)
            write_patroni_config(facts, workload.dcs, config, db)
            made.append(unit)
        for unit in made:
            unit.raft = spawn(
                ["/usr/bin/patroni_raft_controller", unit.paths.raft_config],
                Path(unit.paths.log_dir) / "raft.log",
            )
        wait_for(
            lambda: all(members_of(a) == sorted(map(raft, ADDRESSES)) for a in ADDRESSES),
            "three Raft members that count each other",
        )
        yield made
    finally:
        for unit in made:  # only the processes this fixture started
            terminate(unit.patroni)
        for unit in made:
            terminate(unit.raft)
        shutil.rmtree(base)


PATRONI_ACTIVE = "is-active --quiet pgbackups-patroni.service"
RAFT_START = "enable --now pgbackups-raft.service"
RAFT_ACTIVE = "is-active --quiet pgbackups-raft.service"


@dataclass
class ActiveRaft:
    """systemd as the test has it (no systemd runs here): Patroni stopped, the Raft
    member running (this test started it). Any other program runs for real."""

    asked: list[str] = field(default_factory=list)

    def run(self, args: Any, **kwargs: Any) -> CommandResult:
        argv = [str(a) for a in args]
        if argv[0] != "systemctl":
            return processes.run(argv, **kwargs)
        if argv[1] != "daemon-reload":
            self.asked.append(" ".join(argv[1:]))
        patroni_asked = argv[1] == "is-active" and argv[-1] == "pgbackups-patroni.service"
        return CommandResult(tuple(argv), 3 if patroni_asked else 0, "", "")


def start_patroni(unit: Unit) -> None:
    unit.patroni = spawn(
        ["/usr/bin/patroni", unit.paths.patroni_config],
        Path(unit.paths.log_dir) / "patroni-stdout.log",
    )


def test_patroni_is_a_raft_client_counted_in_no_quorum(units: list[Unit]) -> None:
    leader, *others = units
    start_patroni(leader)
    wait_for(lambda: is_primary(leader), "the leader's Patroni to bootstrap", timeout=120)
    # The others' Patroni, clients too, publish their member keys through the members.
    # (They cannot copy the primary here: on loopback their connections come from
    # 127.0.0.1, not their unit address that pg_hba admits; their keys are the point.)
    for unit in others:
        start_patroni(unit)
    every = sorted(u.facts.layout.member for u in units)
    wait_for(lambda: members_in_dcs(leader) == every, "three member keys", timeout=120)
    # The leader's keys went through the members' quorum: patronictl, a client of its
    # own, reads the leader key from them.
    assert leader_in_dcs(leader) == leader.facts.layout.member
    # No Patroni joined a Raft group: the members still count the three of them only.
    for address in ADDRESSES:
        assert members_of(address) == sorted(map(raft, ADDRESSES))
    # The restore's situation: Patroni stopped on the two other units (their members
    # run on). One member stopped as well: two of three are a quorum. The leader key is
    # still renewed past its TTL (20 s). (With two members stopped the same check
    # fails: the leader steps down.)
    for unit in others:
        terminate(unit.patroni)
        unit.patroni = None
    terminate(others[1].raft)
    others[1].raft = None
    time.sleep(25)
    assert is_primary(leader)
    assert leader_in_dcs(leader) == leader.facts.layout.member


def test_the_restore_bootstraps_again_while_the_others_patroni_is_stopped(
    units: list[Unit],
) -> None:
    leader = units[0]
    start_patroni(leader)
    wait_for(lambda: is_primary(leader), "the first bootstrap", timeout=120)
    first = system_identifier(leader)
    # The restore: Patroni stopped here too, its data moved aside, the cluster's keys
    # removed through the Raft members (no Patroni runs anywhere now), then Patroni
    # started on an empty data directory bootstraps a new cluster on the same members.
    terminate(leader.patroni)
    leader.patroni = None
    os.rename(leader.data_dir, leader.data_dir + ".moved")
    systemd = ActiveRaft()
    MachineWorkload(lambda: leader.facts, leader.paths, run=systemd.run).remove_dcs_state()
    assert systemd.asked == [PATRONI_ACTIVE, RAFT_START, RAFT_ACTIVE]
    assert leader_in_dcs(leader) is None
    start_patroni(leader)
    wait_for(lambda: is_primary(leader), "the bootstrap after the removal", timeout=120)
    assert system_identifier(leader) != first
    assert leader_in_dcs(leader) == leader.facts.layout.member


# What Patroni of an older revision ran inside itself: the member's store, one member,
# writing a key and stopping (as that Patroni's stop did).
EMBEDDED_MEMBER = """\
import sys, threading
from patroni.dcs.raft import KVStoreTTL
password = sys.stdin.readline().rstrip("\\n")
ready = threading.Event()
store = KVStoreTTL(ready.set, None, None, self_addr=sys.argv[1], bind_addr=sys.argv[1],
                   partner_addrs=[], data_dir=sys.argv[2], password=password)
store.startAutoTick()
assert ready.wait(30)
assert store.set("/service/old/initialize", "7000000000000000001", timeout=30)
store.destroy()
"""
# Patroni's form now: a read-only client of the member, reading that key.
# The client is "ready" once it caught up with what its partner had committed when it
# joined; a member just started on old files may not have replayed them by then (one CI
# run read None). So it reads for up to 30 s, as Patroni's own loop reads again: the
# point is that the key comes back, not how soon.
CLIENT_READ = """\
import sys, threading, time
from patroni.dcs.raft import KVStoreTTL
password = sys.stdin.readline().rstrip("\\n")
ready = threading.Event()
store = KVStoreTTL(ready.set, None, None, partner_addrs=[sys.argv[1]], password=password)
store.startAutoTick()
assert ready.wait(30)
deadline = time.monotonic() + 30
value = None
while value is None and time.monotonic() < deadline:
    value = (store.get("/service/old/initialize") or {}).get("value")
    if value is None:
        time.sleep(0.2)
print(value)
store.destroy()
"""


def test_the_member_takes_over_the_files_of_an_older_revisions_patroni() -> None:
    # The upgrade path: stop_database starts the separate member on the files Patroni's
    # own member left (same data_dir, same self_addr): the cluster's keys are kept.
    address = "127.77.0.34"
    base = Path(tempfile.mkdtemp(prefix="pgbackups-raftctl-", dir="/tmp"))
    base.chmod(0o755)
    (base / "systemd").mkdir()
    db = processes.db_user()
    paths = MachinePaths(
        state_dir=str(base / "lib"),
        etc_dir=str(base / "etc"),
        log_dir=str(base / "log"),
        systemd_dir=str(base / "systemd"),
    )
    facts = machine_facts(
        paths,
        app=APP,
        unit=f"{APP}/0",
        address=address,
        peers=(),
        tls=None,
        passwords=PASSWORDS,
        stanza=f"prod.{APP}",
    )
    member: subprocess.Popen[bytes] | None = None
    try:
        workload = MachineWorkload(lambda: facts, paths)
        workload.make_dirs()
        old = processes.run(
            [SYSTEM_PYTHON, "-c", EMBEDDED_MEMBER, raft(address), paths.raft_dir],
            user=db,
            input_text="raft-pw\n",
            timeout=90,
        )
        assert old.ok, old.stderr
        workload.write_raft_config(facts)
        member = spawn(
            ["/usr/bin/patroni_raft_controller", paths.raft_config],
            Path(paths.log_dir) / "raft.log",
        )
        read = processes.run(
            [SYSTEM_PYTHON, "-c", CLIENT_READ, raft(address)],
            user=db,
            input_text="raft-pw\n",
            timeout=90,
        )
        assert read.ok, read.stderr
        assert read.stdout.strip() == "7000000000000000001"
    finally:
        terminate(member)
        shutil.rmtree(base)
