"""The persistent state of a local cluster: JSON, written atomically under a lock.

Two commands may run at once (``status`` while ``up`` waits), so every read-modify-write
goes through :meth:`StateStore.transaction`, which holds an exclusive ``fcntl`` lock.
Keys this module does not know (added by other parts of the runtime) are kept as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgbackups.adapters import files, processes
from pgbackups.local.errors import ClusterNotFound, PgbackupsError, WriteFailed

STATE_VERSION = 1


@dataclass
class ProcessRecord:
    """A process we started: its PID and kernel start time (tells a PID from its reuse)."""

    pid: int
    start_time: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        return cls(pid, processes.process_start_time(pid))

    def is_ours(self) -> bool:
        """Alive, and the same process as the one recorded (not a reused PID)."""
        if not processes.is_alive(self.pid):
            return False
        return processes.process_start_time(self.pid) == self.start_time

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: Any) -> ProcessRecord | None:
        if not isinstance(data, dict) or "pid" not in data:
            return None
        st = data.get("start_time")
        return cls(int(data["pid"]), int(st) if st is not None else None)


@dataclass
class UnitRecord:
    index: int
    pg_port: int
    rest_port: int
    pgbackrest_port: int
    process: ProcessRecord | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pg_port": self.pg_port,
            "rest_port": self.rest_port,
            "pgbackrest_port": self.pgbackrest_port,
            "process": self.process.to_json() if self.process else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitRecord:
        return cls(
            index=int(data["index"]),
            pg_port=int(data["pg_port"]),
            rest_port=int(data["rest_port"]),
            pgbackrest_port=int(data["pgbackrest_port"]),
            process=ProcessRecord.from_json(data.get("process")),
        )


@dataclass
class ClusterState:
    name: str
    uuid: str
    created: str
    base_port: int
    etcd_client_port: int
    etcd_peer_port: int
    s3_port: int
    bucket: str
    tls: bool
    leader: str
    units: dict[str, UnitRecord] = field(default_factory=dict)
    next_index: int = 0
    bootstrapped: bool = False  # a primary accepted writes once (else start as new)
    # Every unit, the S3 server and etcd on a machine of its own (machinery/netns.py):
    # fixed when the cluster is made, like its ports.
    machines: bool = False
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)  # etcd, s3
    extra: dict[str, Any] = field(default_factory=dict)  # keys owned by others

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            {
                "version": STATE_VERSION,
                "name": self.name,
                "uuid": self.uuid,
                "created": self.created,
                "ports": {
                    "base": self.base_port,
                    "etcd_client": self.etcd_client_port,
                    "etcd_peer": self.etcd_peer_port,
                    "s3": self.s3_port,
                },
                "bucket": self.bucket,
                "tls": self.tls,
                "leader": self.leader,
                "units": {n: u.to_json() for n, u in self.units.items()},
                "next_index": self.next_index,
                "bootstrapped": self.bootstrapped,
                "machines": self.machines,
                "statuses": self.statuses,
                "processes": {n: p.to_json() for n, p in self.processes.items()},
            }
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        known = {
            "version", "name", "uuid", "created", "ports", "bucket", "tls", "leader",
            "units", "next_index", "bootstrapped", "statuses", "processes", "machines",
        }  # fmt: skip
        ports = data["ports"]
        procs = {
            n: rec
            for n, raw in (data.get("processes") or {}).items()
            if (rec := ProcessRecord.from_json(raw)) is not None
        }
        return cls(
            name=str(data["name"]),
            uuid=str(data["uuid"]),
            created=str(data.get("created", "")),
            base_port=int(ports["base"]),
            etcd_client_port=int(ports["etcd_client"]),
            etcd_peer_port=int(ports["etcd_peer"]),
            s3_port=int(ports["s3"]),
            bucket=str(data.get("bucket", "pgbackups")),
            tls=bool(data.get("tls", False)),
            leader=str(data.get("leader", "")),
            units={n: UnitRecord.from_json(u) for n, u in (data.get("units") or {}).items()},
            next_index=int(data.get("next_index", 0)),
            bootstrapped=bool(data.get("bootstrapped", False)),
            machines=bool(data.get("machines", False)),
            statuses={
                str(n): {
                    "status": str(s.get("status", "active")),
                    "message": str(s.get("message", "")),
                }
                for n, s in (data.get("statuses") or {}).items()
                if isinstance(s, dict)
            },
            processes=procs,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def sorted_units(self) -> list[tuple[str, UnitRecord]]:
        return sorted(self.units.items(), key=lambda item: item[1].index)


class StateStore:
    """``state.json`` of one cluster, with its lock file beside it."""

    def __init__(self, state_file: Path, lock_file: Path) -> None:
        self.state_file = state_file
        self.lock_file = lock_file

    def exists(self) -> bool:
        return self.state_file.exists()

    @contextlib.contextmanager
    def _locked(self, kind: int) -> Iterator[None]:
        if not self.lock_file.parent.is_dir():
            raise ClusterNotFound(f"no cluster at {self.lock_file.parent}")
        # The cluster's folder is root's (when we are root): O_NOFOLLOW is a second line.
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, kind)
            yield
        finally:
            os.close(fd)

    def _read(self) -> ClusterState:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError as exc:
            raise ClusterNotFound(f"no cluster state at {self.state_file}") from exc
        except (OSError, ValueError) as exc:
            raise PgbackupsError(f"unreadable cluster state {self.state_file}: {exc}") from exc
        return ClusterState.from_json(raw)

    def _write(self, state: ClusterState) -> None:
        """Atomically (temporary file, fsync, rename): a full disk or a killed command
        leaves the previous state, never half of one."""
        text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        try:
            files.write_atomically(text, self.state_file, None, 0o644)
        except OSError as exc:
            raise WriteFailed("the cluster state", exc) from exc

    def load(self) -> ClusterState:
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    def create(self, state: ClusterState) -> None:
        with self._locked(fcntl.LOCK_EX):
            self._write(state)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ClusterState]:
        """Read, let the caller change, write back (only if the block did not raise)."""
        with self._locked(fcntl.LOCK_EX):
            state = self._read()
            yield state
            self._write(state)
