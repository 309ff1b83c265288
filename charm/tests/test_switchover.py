"""The leaving unit: its switchover, against a tiny local HTTP server that answers as
Patroni's REST API does (what the workload asks, and what it sends); then the order of
leaving (switchover, stop, Raft removal through a partner) in one log shared by that
server and a recording runner; and the DCS removal of a restore when Raft cannot serve."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters.patroni import REST_API_USER, PatroniPasswords
from pgbackups.core.host import CommandResult, Peer, WorkloadError
from pgbackups.workload.layout import UnitFacts
from raft_dcs import PARTNERS_SCRIPT, RAFT_PORT, SYSTEM_PYTHON
from workload import MachinePaths, MachineWorkload, Runner, machine_facts

OWN = "pgbackups-postgresql-0"


@dataclass
class FakePatroni:
    """What ``GET /cluster`` answers, and every write it received."""

    members: list[dict[str, Any]]
    switchover_status: int = 200
    writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # shared with a runner: the call order


def member(name: str, role: str, state: str = "running", lag: int | None = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "role": role, "state": state, "host": "127.0.0.1"}
    if role != "leader" and lag is not None:
        entry["lag"] = lag
    return entry


@pytest.fixture
def patroni() -> Iterator[tuple[FakePatroni, int]]:
    fake = FakePatroni(members=[])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/cluster":
                self._answer(200, {"members": fake.members, "scope": "pgbackups-postgresql"})
            else:
                self._answer(404, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            fake.writes.append((self.path, self.headers.get("Authorization") or "", body))
            fake.log.append(f"POST {self.path}")
            self._answer(fake.switchover_status, {"message": "switched over"})

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def workload_at(
    port: int,
    run: Runner | None = None,
    peers: tuple[Peer, ...] = (Peer("pgbackups-postgresql/1", "10.0.0.2"),),
    paths: MachinePaths | None = None,
) -> MachineWorkload:
    """``paths``: where a test that stops Patroni lets systemd's unit files be written."""
    paths = paths or MachinePaths()
    base = machine_facts(
        paths,
        app="pgbackups-postgresql",
        unit="pgbackups-postgresql/0",
        address="127.0.0.1",
        peers=peers,
        tls=None,
        passwords=PatroniPasswords("su", "repl", "rew", "rest-pw", "raft-pw"),
        stanza="prod.pgbackups-postgresql",
    )
    facts = replace(base, layout=replace(base.layout, rest_port=port))

    def current() -> UnitFacts:
        return facts

    if run is None:
        return MachineWorkload(current, paths)
    return MachineWorkload(current, paths, run=run)


@pytest.fixture
def paths(tmp_path: Path) -> MachinePaths:
    (tmp_path / "systemd").mkdir()
    (tmp_path / "etc").mkdir()
    return MachinePaths(
        state_dir=str(tmp_path / "state"),
        etc_dir=str(tmp_path / "etc"),
        systemd_dir=str(tmp_path / "systemd"),
    )


@dataclass
class Machine:
    """Runs no program: records each in ``log`` (systemd says Patroni, and the Raft
    member, is active until ``systemctl disable --now`` stopped it, and again once
    ``enable --now`` started it; ``failing`` commands fail)."""

    log: list[str]
    patroni_active: bool = True
    raft_active: bool = True
    failing: tuple[str, ...] = ()
    users: list[str | None] = field(default_factory=list)
    argvs: list[tuple[str, ...]] = field(default_factory=list)  # beside users: who ran what
    # What a Raft member's status counts besides itself (here: every unit, for any).
    raft_partners: list[str] = field(
        default_factory=lambda: [f"{a}:{RAFT_PORT}" for a in ("127.0.0.1", "10.0.0.2", "10.0.0.3")]
    )

    def run(self, args: Any, **kwargs: Any) -> CommandResult:
        argv = tuple(str(a) for a in args)
        # The Raft removal's script is long: its through/member addresses name it.
        shown = " ".join(argv[3:]) if argv[:2] == (SYSTEM_PYTHON, "-c") else " ".join(argv)
        user = kwargs.get("user")
        self.users.append(user.name if user is not None else None)
        self.argvs.append(argv)
        if argv[:2] == ("systemctl", "is-active"):
            active = self.raft_active if argv[-1] == UNIT_RAFT else self.patroni_active
            return CommandResult(argv, 0 if active else 3, "", "")
        if argv == ("systemctl", "daemon-reload"):  # the unit files written for the stop
            return CommandResult(argv, 0, "", "")
        if argv[:3] == (SYSTEM_PYTHON, "-c", PARTNERS_SCRIPT):
            self.log.append(f"raft partners {shown}")
            return CommandResult(argv, 0, json.dumps(self.raft_partners), "")
        self.log.append(shown if argv[0] != SYSTEM_PYTHON else f"raft remove {shown}")
        if argv[:2] == ("systemctl", "disable") or argv[:2] == ("systemctl", "enable"):
            now = argv[1] == "enable"
            if argv[-1] == UNIT_RAFT:
                self.raft_active = now
            else:
                self.patroni_active = now
        if any(shown.startswith(f) for f in self.failing):
            return CommandResult(argv, 1, "", "FAIL")
        return CommandResult(argv, 0, "SUCCESS", "")


def test_the_primary_switches_over_to_the_closest_streaming_replica(
    patroni: tuple[FakePatroni, int],
) -> None:
    fake, port = patroni
    fake.members = [
        member(OWN, "leader"),
        member("pgbackups-postgresql-1", "replica", lag=4096),
        member("pgbackups-postgresql-2", "replica", lag=0),
        member("pgbackups-postgresql-3", "replica", state="stopped", lag=None),
    ]
    assert workload_at(port).switch_over_away() == "pgbackups-postgresql-2"
    token = base64.b64encode(f"{REST_API_USER}:rest-pw".encode()).decode()
    assert fake.writes == [
        (
            "/switchover",
            f"Basic {token}",
            {"leader": OWN, "candidate": "pgbackups-postgresql-2"},
        )
    ]


def test_a_replica_leaves_without_a_switchover(patroni: tuple[FakePatroni, int]) -> None:
    fake, port = patroni
    fake.members = [member("pgbackups-postgresql-1", "leader"), member(OWN, "replica")]
    assert workload_at(port).switch_over_away() is None
    assert fake.writes == []


def test_no_streaming_replica_is_an_error(patroni: tuple[FakePatroni, int]) -> None:
    fake, port = patroni
    fake.members = [member(OWN, "leader"), member("pgbackups-postgresql-1", "replica", "stopped")]
    with pytest.raises(WorkloadError, match="no streaming replica"):
        workload_at(port).switch_over_away()
    assert fake.writes == []


def test_a_refused_switchover_is_an_error(patroni: tuple[FakePatroni, int]) -> None:
    fake, port = patroni
    fake.members = [member(OWN, "leader"), member("pgbackups-postgresql-1", "replica")]
    fake.switchover_status = 412
    with pytest.raises(WorkloadError, match="HTTP 412"):
        workload_at(port).switch_over_away()


# --- leaving: switchover, stop, Raft removal through a partner -------------------------

UNIT_PATRONI = "pgbackups-patroni.service"
UNIT_RAFT = "pgbackups-raft.service"
THREE = (Peer("pgbackups-postgresql/1", "10.0.0.2"), Peer("pgbackups-postgresql/2", "10.0.0.3"))


def test_a_leaving_primary_switches_over_then_stops_then_leaves_raft_through_a_partner(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    fake.members = [member(OWN, "leader"), member("pgbackups-postgresql-1", "replica")]
    machine = Machine(fake.log)
    workload_at(port, machine.run, THREE, paths).leave_cluster()
    assert fake.log == [
        "POST /switchover",
        f"systemctl disable --now {UNIT_PATRONI}",
        f"systemctl disable --now {UNIT_RAFT}",  # stopped before its removal
        f"raft partners 10.0.0.2:{RAFT_PORT}",  # still counted there: removed through it
        f"raft remove 10.0.0.2:{RAFT_PORT} 127.0.0.1:{RAFT_PORT}",  # never through itself
    ]


def test_the_next_partner_removes_it_when_the_first_cannot(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    fake.members = [member("pgbackups-postgresql-1", "leader"), member(OWN, "replica")]
    machine = Machine(fake.log, failing=(f"10.0.0.2:{RAFT_PORT}",))
    workload_at(port, machine.run, THREE, paths).leave_cluster()
    assert fake.log == [  # a replica: no switchover
        f"systemctl disable --now {UNIT_PATRONI}",
        f"systemctl disable --now {UNIT_RAFT}",
        f"raft partners 10.0.0.2:{RAFT_PORT}",
        f"raft remove 10.0.0.2:{RAFT_PORT} 127.0.0.1:{RAFT_PORT}",
        f"raft partners 10.0.0.3:{RAFT_PORT}",
        f"raft remove 10.0.0.3:{RAFT_PORT} 127.0.0.1:{RAFT_PORT}",
    ]


def test_a_member_removed_already_leaves_without_another_removal(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    fake.members = [member("pgbackups-postgresql-1", "leader"), member(OWN, "replica")]
    machine = Machine(fake.log, raft_partners=[f"10.0.0.3:{RAFT_PORT}"])  # not counted
    workload_at(port, machine.run, THREE, paths).leave_cluster()
    assert fake.log == [
        f"systemctl disable --now {UNIT_PATRONI}",
        f"systemctl disable --now {UNIT_RAFT}",
        f"raft partners 10.0.0.2:{RAFT_PORT}",
    ]


def test_no_raft_removal_while_patroni_still_runs(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    fake.members = [member("pgbackups-postgresql-1", "leader"), member(OWN, "replica")]
    machine = Machine(fake.log)
    machine.failing = ("systemctl disable",)
    machine.patroni_active = True

    def stuck(args: Any, **kwargs: Any) -> CommandResult:
        result = machine.run(args, **kwargs)
        machine.patroni_active = True  # the stop did not take
        return result

    with pytest.raises(WorkloadError):
        workload_at(port, stuck, THREE, paths).leave_cluster()
    assert not [e for e in fake.log if e.startswith("raft remove")]


def test_the_last_unit_leaves_no_raft_group(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    fake.members = [member(OWN, "leader")]
    machine = Machine(fake.log)
    workload_at(port, machine.run, (), paths).leave_cluster()  # no replica: switchover logged
    assert fake.log == [
        f"systemctl disable --now {UNIT_PATRONI}",
        f"systemctl disable --now {UNIT_RAFT}",
    ]


def test_the_leader_does_not_remove_a_member_that_still_runs(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    leaving = {**member("pgbackups-postgresql-2", "replica"), "host": "10.0.0.3"}
    fake.members = [member(OWN, "leader"), leaving]
    machine = Machine(fake.log)
    with pytest.raises(WorkloadError, match="still runs Patroni"):
        workload_at(port, machine.run, THREE, paths).forget_dcs_member("10.0.0.3")
    assert fake.log == []
    fake.members = [member(OWN, "leader")]  # it stopped (its member key expired)
    machine.raft_partners = [f"10.0.0.2:{RAFT_PORT}", f"10.0.0.3:{RAFT_PORT}"]
    workload_at(port, machine.run, THREE, paths).forget_dcs_member("10.0.0.3")
    assert fake.log == [
        f"raft partners 127.0.0.1:{RAFT_PORT}",
        f"raft remove 127.0.0.1:{RAFT_PORT} 10.0.0.3:{RAFT_PORT}",
    ]
    # Gone from Raft already (it left by itself): nothing more to remove.
    machine.raft_partners = [f"10.0.0.2:{RAFT_PORT}"]
    fake.log.clear()
    workload_at(port, machine.run, THREE, paths).forget_dcs_member("10.0.0.3")
    assert fake.log == [f"raft partners 127.0.0.1:{RAFT_PORT}"]


# --- a restore's DCS removal -----------------------------------------------------------


def test_a_restore_on_the_only_unit_starts_its_raft_group_afresh(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    machine = Machine(fake.log, patroni_active=False)  # the restore stopped Patroni
    workload_at(port, machine.run, (), paths).remove_dcs_state()
    stop, command, start = fake.log
    assert stop == f"systemctl disable --now {UNIT_RAFT}"  # its member stopped first
    assert command.startswith(f"find {paths.raft_dir} -mindepth 1 -maxdepth 1 -type f")
    assert f"-name 127.0.0.1:{RAFT_PORT}.* -delete" in command
    assert "patronictl" not in command
    [finder] = [u for u, c in zip(machine.users, machine.argvs, strict=True) if c[0] == "find"]
    assert finder == "postgres"  # in the database user's folder, as that user
    assert start == f"systemctl enable --now {UNIT_RAFT}"  # then a group of one again
    assert Path(paths.raft_config).is_file()


def test_a_failed_raft_file_removal_is_a_workload_error(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    machine = Machine(fake.log, patroni_active=False, failing=("find",))
    with pytest.raises(WorkloadError, match="Raft state was not removed"):
        workload_at(port, machine.run, (), paths).remove_dcs_state()


# --- the Raft member beside Patroni ------------------------------------------------------


def test_stopping_the_database_keeps_this_units_raft_member(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    # A restore stops Patroni on every unit but the leader: their members keep the
    # quorum the leader's bootstrap needs. (After a Patroni of an older revision, which
    # ran the member inside itself, the member takes over its files here.)
    fake, port = patroni
    machine = Machine(fake.log, raft_active=False)
    workload = workload_at(port, machine.run, THREE, paths)
    workload.stop_database()
    assert fake.log == [
        f"systemctl disable --now {UNIT_PATRONI}",
        f"systemctl enable --now {UNIT_RAFT}",
    ]
    assert machine.raft_active and not machine.patroni_active
    fake.log.clear()
    workload.start_database()
    assert fake.log == [
        f"systemctl enable --now {UNIT_RAFT}",  # a no-op while it runs
        f"systemctl enable --now {UNIT_PATRONI}",
    ]


def test_a_running_patroni_is_started_without_touching_the_raft_member(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    # An older revision's Patroni holds the Raft port itself until its next stop.
    fake, port = patroni
    machine = Machine(fake.log, raft_active=False)
    workload_at(port, machine.run, THREE, paths).start_database()
    assert fake.log == [f"systemctl enable --now {UNIT_PATRONI}"]
    assert not machine.raft_active


def test_a_raft_member_that_does_not_run_fails_the_start(
    patroni: tuple[FakePatroni, int], paths: MachinePaths
) -> None:
    fake, port = patroni
    machine = Machine(fake.log, patroni_active=False, raft_active=False)

    def exits_at_once(args: Any, **kwargs: Any) -> CommandResult:
        result = machine.run(args, **kwargs)
        machine.raft_active = False  # started, and gone again (a bad configuration)
        return result

    with pytest.raises(WorkloadError, match="the Raft member does not run"):
        workload_at(port, exits_at_once, THREE, paths).start_database()
    assert fake.log == [f"systemctl enable --now {UNIT_RAFT}"]  # Patroni not started
