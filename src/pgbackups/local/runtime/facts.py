"""What a unit knows of its cluster: a frozen record the cluster builds.

A unit needs the cluster's name, its directories, its state file and the database user,
not the cluster: with this record ``unit.py`` never imports ``cluster.py`` (which builds
units), so the two modules do not form an import cycle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery.etcd import EtcdTls
from pgbackups.local.machinery.paths import ClusterPaths
from pgbackups.local.machinery.state import ClusterState, StateStore


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

    def passwords(self) -> PatroniPasswords:
        data = json.loads(self.paths.passwords_file.read_text())
        return PatroniPasswords(
            data["superuser"], data["replication"], data["rewind"], data["rest_api"]
        )

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.state().etcd_client_port}"

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
