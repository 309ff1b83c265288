"""Where one unit keeps its files and how it and its peers are reached: built by the host.

The local runtime puts every unit on one machine (its own folder and ports, reached as
``localhost``); the charm puts one unit on each machine (fixed paths and ports, reached
at its peer-relation address). :class:`UnitFacts` is read afresh for each step, since
peers, certificates and passwords come and go between hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.core.host import TlsMaterial


@dataclass(frozen=True)
class UnitLayout:
    """This unit's paths, names, address and ports."""

    unit: str  # the unit name, for log lines (``main/0``, ``app/0``)
    scope: str  # Patroni's cluster name
    member: str  # Patroni's member name (no ``/``: it becomes a DCS key)
    stanza: str
    address: str  # where Patroni's REST API and PostgreSQL listen
    data_dir: str
    socket_dir: str
    bin_dir: str  # PostgreSQL's programs
    patroni_config: str
    pgbackrest_config: str
    pgpass: str
    s3_ca_file: str  # the S3 CA chain pgBackRest reads
    pgbackrest_log_dir: str
    pgbackrest_lock_dir: str
    pgbackrest_spool_dir: str
    patroni_log_dir: str | None  # None: Patroni logs to its standard error
    pg_port: int
    rest_port: int
    tls_server_listen: str  # where this unit's pgBackRest TLS server listens
    tls_server_host: str  # how a client names it (pgBackRest 2.45 checks DNS names only)
    tls_server_port: int
    io_timeout: int | None = None  # pgBackRest's --io-timeout; None: its default (60 s)
    # Without TLS servers pgBackRest can still reach the other units' PostgreSQL directly
    # when they are on this machine (pgN-path): only the local runtime's are.
    peers_share_machine: bool = False

    @property
    def tls_server_address(self) -> str:
        return f"{self.tls_server_host}:{self.tls_server_port}"


@dataclass(frozen=True)
class PeerLayout:
    """Another unit of the cluster, as this unit's pgBackRest and Patroni see it."""

    member: str  # its Patroni member name
    cert_name: str  # the common name of its certificate: a client our TLS server allows
    address: str  # where its Patroni and PostgreSQL listen
    tls_server_host: str
    tls_server_port: int
    data_dir: str
    pg_port: int
    socket_dir: str

    @property
    def tls_server_address(self) -> str:
        return f"{self.tls_server_host}:{self.tls_server_port}"


@dataclass(frozen=True)
class UnitFacts:
    layout: UnitLayout
    peers: Sequence[PeerLayout]
    tls: TlsMaterial | None  # PostgreSQL's certificate (the host's TLS provider)
    passwords: PatroniPasswords | None  # None until the host has them (the charm's leader)
    # The pgBackRest TLS servers' identity: a CA that signs this cluster's units only (the
    # server admits a client by its certificate's name, so whoever can get a certificate
    # from the CA it trusts can pick any name). Locally the cluster's own CA; in the charm
    # the application's private CA. None: no TLS server.
    backup_tls: TlsMaterial | None = None
