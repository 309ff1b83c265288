"""What a unit knows of its cluster: a frozen record the cluster builds.

A unit needs the cluster's name, its directories, its state file and the database user,
not the cluster: with this record ``unit.py`` never imports ``cluster.py`` (which builds
units), so the two modules do not form an import cycle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery import netns
from pgbackups.local.machinery.etcd import LOOPBACK, EtcdTls
from pgbackups.local.machinery.paths import ClusterPaths
from pgbackups.local.machinery.state import ClusterState, ProcessRecord, StateStore


@dataclass(frozen=True)
class ClusterFacts:
    """The cluster as a unit sees it. What may change while the cluster lives (the TLS
    flag, ports, process records) is read from the state file on each use, never kept."""

    name: str
    paths: ClusterPaths
    store: StateStore
    db_user: OsUser

    def state(self) -> ClusterState:
        return self.store.load()

    def service(self, key: str) -> ProcessRecord | None:
        """The process recorded under ``key`` (etcd, S3, a unit's TLS server, a restore's
        PostgreSQL, a preloaded Patroni)."""
        return self.state().processes.get(key)

    def record_service(self, key: str, proc: ProcessRecord | None) -> None:
        with self.store.transaction() as state:
            if proc is None:
                state.processes.pop(key, None)
            else:
                state.processes[key] = proc

    def passwords(self) -> PatroniPasswords:
        data = json.loads(self.paths.passwords_file.read_text())
        return PatroniPasswords(
            data["superuser"], data["replication"], data["rewind"], data["rest_api"]
        )

    # --- machines (machinery/netns.py) -------------------------------------------

    def network(self, state: ClusterState | None = None) -> netns.Network | None:
        """The cluster's private network when its parts are machines, else None."""
        state = state or self.state()
        return netns.Network.for_block(state.base_port) if state.machines else None

    def address(self, machine: str, state: ClusterState | None = None) -> str:
        """Where ``machine`` (``u0``, ``s3``, ``dcs``) listens: its own address, or
        127.0.0.1 when everything shares the loopback."""
        network = self.network(state)
        return network.address(machine) if network else LOOPBACK

    @contextlib.contextmanager
    def inside(self, machine: str) -> Iterator[None]:
        """This thread on ``machine``'s network for the block (nothing changes on
        loopback): a process started or a socket opened here belongs to the machine."""
        network = self.network()
        if network is None:
            yield
            return
        with netns.inside(network.namespace(machine)):
            yield

    def control(self) -> contextlib.AbstractContextManager[None]:
        """This thread on the operator's workstation (the switch, which reaches every
        machine) for the block."""
        return self.inside(netns.SWITCH)

    @property
    def etcd_endpoint(self) -> str:
        state = self.state()
        return f"{self.address(netns.DCS, state)}:{state.etcd_client_port}"

    @property
    def etcd_tls(self) -> EtcdTls:
        paths = self.paths
        return EtcdTls(
            ca_file=paths.ca_cert,
            cert_file=paths.etcd_cert,
            key_file=paths.etcd_key,
            client_cert_file=paths.etcd_client_cert,
            client_key_file=paths.etcd_client_key,
        )

    @property
    def ca_file(self) -> Path:
        return self.paths.ca_cert

    @property
    def tls_enabled(self) -> bool:
        return self.state().tls
