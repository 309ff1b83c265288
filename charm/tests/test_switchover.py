"""The leaving primary's switchover, against a tiny local HTTP server that answers as
Patroni's REST API does: what the workload asks, and what it sends."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from pgbackups.adapters.patroni import REST_API_USER, PatroniPasswords
from pgbackups.core.host import Peer, WorkloadError
from pgbackups.workload.layout import UnitFacts
from workload import MachinePaths, MachineWorkload, machine_facts

OWN = "pgbackups-postgresql-0"


@dataclass
class FakePatroni:
    """What ``GET /cluster`` answers, and every write it received."""

    members: list[dict[str, Any]]
    switchover_status: int = 200
    writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


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
            self._answer(fake.switchover_status, {"message": "switched over"})

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def workload_at(port: int) -> MachineWorkload:
    base = machine_facts(
        MachinePaths(),
        app="pgbackups-postgresql",
        unit="pgbackups-postgresql/0",
        address="127.0.0.1",
        peers=(Peer("pgbackups-postgresql/1", "10.0.0.2"),),
        tls=None,
        passwords=PatroniPasswords("su", "repl", "rew", "rest-pw", "raft-pw"),
        stanza="prod.pgbackups-postgresql",
    )
    facts = replace(base, layout=replace(base.layout, rest_port=port))

    def current() -> UnitFacts:
        return facts

    return MachineWorkload(current)


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
