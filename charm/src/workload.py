"""PostgreSQL 16 under Patroni, and the pgBackRest TLS server, on a Juju machine.

``MachineWorkload`` implements :class:`pgbackups.core.host.Workload` with packages from the
Ubuntu 24.04 archive (``postgresql-16``, ``patroni``, ``python3-pysyncobj``,
``pgbackrest``) and two systemd units rendered by the charm:

- ``pgbackups-patroni.service``: Patroni (which runs PostgreSQL), as ``postgres``;
- ``pgbackups-pgbackrest-server.service``: ``pgbackrest server``, as ``postgres``.

The DCS is Patroni's Raft (pysyncobj) with ``bind_addr`` set to the unit's address; see
README.md ("The DCS") for why. The configuration files are rendered by the core's
adapters (``pgbackups.adapters.patroni.render_config``,
``pgbackups.adapters.pgbackrest``); this module adds only what is specific to a Juju
machine: paths, the DCS section, systemd.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pgbackups.adapters import patroni, pgbackrest, processes
from pgbackups.core.host import (
    CommandResult,
    Peer,
    TlsMaterial,
    WorkloadConfig,
    WorkloadUnavailable,
)

log = logging.getLogger(__name__)

PG_VERSION = "16"  # what Ubuntu 24.04 ships; 22.04 would be 14
APT_PACKAGES = (
    f"postgresql-{PG_VERSION}",
    f"postgresql-client-{PG_VERSION}",
    "patroni",
    "python3-pysyncobj",  # Patroni's Raft DCS
    "pgbackrest",
    "openssl",
)
PATRONI_SERVICE = "pgbackups-patroni.service"
TLS_SERVER_SERVICE = "pgbackups-pgbackrest-server.service"
PG_PORT = 5432
REST_PORT = 8008
RAFT_PORT = 2222
TLS_SERVER_PORT = 8432
MOVED_SUFFIX = ".pgbackups-moved-"


@dataclass(frozen=True)
class MachinePaths:
    pg_version: str = PG_VERSION
    state_dir: str = "/var/lib/pgbackups"
    etc_dir: str = "/etc/pgbackups"
    log_dir: str = "/var/log/pgbackups"
    systemd_dir: str = "/etc/systemd/system"
    socket_dir: str = "/var/run/postgresql"

    @property
    def bin_dir(self) -> str:
        return f"/usr/lib/postgresql/{self.pg_version}/bin"

    @property
    def data_dir(self) -> str:
        return f"/var/lib/postgresql/{self.pg_version}/pgbackups"

    @property
    def patroni_config(self) -> str:
        return f"{self.etc_dir}/patroni.yaml"

    @property
    def pgbackrest_config(self) -> str:
        return f"{self.etc_dir}/pgbackrest.conf"

    @property
    def raft_dir(self) -> str:
        return f"{self.state_dir}/raft"

    @property
    def tls_dir(self) -> str:
        return f"{self.state_dir}/tls"

    @property
    def pgpass(self) -> str:
        return f"{self.state_dir}/pgpass"


@dataclass(frozen=True)
class UnitFacts:
    """What the workload needs to know from Juju; read afresh for every call."""

    scope: str  # the Patroni cluster name: the application name
    member: str  # this unit's member name: the unit name with "/" -> "-"
    address: str  # this unit's address on the peer relation
    peers: Sequence[Peer]
    tls: TlsMaterial | None
    passwords: patroni.PatroniPasswords | None  # None until the leader has generated them
    stanza_name: str


# ---------------------------------------------------------------------------
# Pure rendering (tested without a machine)


def systemd_unit(description: str, exec_start: str, *, user: str = "postgres") -> str:
    return (
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"Group={user}\n"
        f"ExecStart={exec_start}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "KillMode=process\n"
        "TimeoutStopSec=60\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def patroni_unit(paths: MachinePaths) -> str:
    return systemd_unit(
        "Patroni (PostgreSQL high availability), managed by pgbackups-postgresql",
        f"/usr/bin/patroni {paths.patroni_config}",
    )


def tls_server_unit(paths: MachinePaths) -> str:
    return systemd_unit(
        "pgBackRest TLS server, managed by pgbackups-postgresql",
        f"/usr/bin/pgbackrest --config={paths.pgbackrest_config} server",
    )


def raft_section(facts: UnitFacts, paths: MachinePaths) -> dict[str, Any]:
    """Patroni's Raft DCS. ``bind_addr`` pins the listener to the unit's address
    (without it pysyncobj listens on 0.0.0.0). A new member joins through any partner."""
    own = f"{facts.address}:{RAFT_PORT}"
    return {
        "data_dir": paths.raft_dir,
        "self_addr": own,
        "bind_addr": own,
        "partner_addrs": sorted(f"{p.address}:{RAFT_PORT}" for p in facts.peers),
    }


def with_raft_dcs(
    rendered: dict[str, Any], facts: UnitFacts, paths: MachinePaths
) -> dict[str, Any]:
    """The core's Patroni YAML speaks etcd3; on a machine the DCS is Raft."""
    out = dict(rendered)
    for key in ("etcd", "etcd3"):
        out.pop(key, None)
    out["raft"] = raft_section(facts, paths)
    return out


# ---------------------------------------------------------------------------
# The workload


Runner = Callable[..., CommandResult]


class MachineWorkload:
    def __init__(
        self,
        facts: Callable[[], UnitFacts],
        paths: MachinePaths | None = None,
        *,
        run: Runner = processes.run,
    ) -> None:
        self._facts = facts
        self.paths = paths or MachinePaths()
        self._run = run

    # --- machine set-up (charm only) -------------------------------------------------

    def install(self) -> bool:
        """Install the packages and drop Debian's default cluster (Patroni owns the data)."""
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        update = self._run(["apt-get", "update", "-q"], timeout=600, env=env)
        if not update.ok:
            log.error("apt-get update failed: %s", update.stderr.strip()[-500:])
            return False
        result = self._run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
            timeout=1200,
            env=env,
        )
        if not result.ok:
            log.error("apt-get install failed: %s", result.stderr.strip()[-500:])
            return False
        # Debian starts a "main" cluster on install; it would hold port 5432.
        self._run(["pg_dropcluster", "--stop", self.paths.pg_version, "main"], timeout=120)
        for unit in ("patroni.service", "etcd.service"):
            self._run(["systemctl", "disable", "--now", unit], timeout=60)
        for d in (self.paths.state_dir, self.paths.etc_dir, self.paths.log_dir):
            self._mkdir_db_owned(d)
        self._write_units()
        return True

    def _mkdir_db_owned(self, path: str, mode: int = 0o750) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        shutil.chown(path, "postgres", "postgres")

    def _write(self, path: str, text: str, mode: int = 0o600, *, owner: str = "postgres") -> bool:
        p = Path(path)
        if p.exists() and p.read_text() == text:
            return False
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        shutil.chown(tmp, owner, owner)
        tmp.replace(p)
        return True

    def _write_units(self) -> None:
        changed = self._write(
            f"{self.paths.systemd_dir}/{PATRONI_SERVICE}",
            patroni_unit(self.paths),
            0o644,
            owner="root",
        )
        changed |= self._write(
            f"{self.paths.systemd_dir}/{TLS_SERVER_SERVICE}",
            tls_server_unit(self.paths),
            0o644,
            owner="root",
        )
        if changed:
            self._systemctl("daemon-reload")

    def _systemctl(self, *args: str) -> CommandResult:
        result = self._run(["systemctl", *args], timeout=120)
        if not result.ok:
            log.warning("systemctl %s: %s", " ".join(args), result.stderr.strip())
        return result

    def _is_active(self, service: str) -> bool:
        return self._run(["systemctl", "is-active", "--quiet", service], timeout=30).ok

    # --- Patroni ---------------------------------------------------------------------

    def _client(self) -> patroni.PatroniClient:
        return patroni.PatroniClient(self._facts().address or "127.0.0.1", REST_PORT)

    def _member(self, facts: UnitFacts) -> patroni.PatroniMember:
        assert facts.passwords is not None
        return patroni.PatroniMember(
            scope=facts.scope,
            name=facts.member,
            data_dir=self.paths.data_dir,
            host=facts.address,
            pg_port=PG_PORT,
            rest_port=REST_PORT,
            socket_dir=self.paths.socket_dir,
            etcd_hosts=(),
            passwords=facts.passwords,
            pgpass=self.paths.pgpass,
            pgbackrest_config=self.paths.pgbackrest_config,
            bin_dir=self.paths.bin_dir,
            log_dir=self.paths.log_dir,
            ssl=facts.tls,
        )

    def is_cluster_initialised(self) -> bool:
        try:
            return any(m.is_primary for m in self._client().cluster())
        except WorkloadUnavailable as exc:
            log.debug("cluster not initialised yet: %s", exc)
            return False

    def is_primary(self) -> bool:
        return bool(self._client().member().is_primary)

    def is_member_running(self) -> bool:
        try:
            return bool(self._client().member().is_running)
        except WorkloadUnavailable:
            return False

    def member_state(self) -> str | None:
        try:
            return str(self._client().member().state) or None
        except WorkloadUnavailable:
            return None

    def primary_address(self) -> str | None:
        try:
            for member in self._client().cluster():
                if member.is_primary:
                    return str(member.host) if member.host else None
        except WorkloadUnavailable:
            return None
        return None

    def system_identifier(self) -> int | None:
        try:
            value = self._client().member().system_identifier
        except WorkloadUnavailable:
            return None
        return int(value) if value is not None else None

    def current_timeline(self) -> int | None:
        try:
            value = self._client().member().timeline
        except WorkloadUnavailable:
            return None
        return int(value) if value is not None else None

    def start_database(self) -> bool:
        self._write_units()
        return self._systemctl("enable", "--now", PATRONI_SERVICE).ok

    def stop_database(self) -> bool:
        self._systemctl("stop", PATRONI_SERVICE)
        return not self._is_active(PATRONI_SERVICE)

    def remove_dcs_state(self) -> bool:
        result = patroni.remove_dcs_state(self.paths.patroni_config, self._facts().scope)
        if not result.ok:
            log.error("patronictl remove failed: %s", result.stderr.strip()[-500:])
        return bool(result.ok)

    def move_data_aside(self) -> str | None:
        """Rename the data directory beside itself. "" when there is none: after a failed
        bootstrap Patroni renamed it to ``<data>.failed``, and the data from before the
        first restore is already aside (a second restore must be possible)."""
        src = Path(self.paths.data_dir)
        if not src.exists():
            log.info("no data directory at %s: nothing to move aside", src)
            return ""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        dest = src.with_name(src.name + MOVED_SUFFIX + stamp)
        try:
            src.rename(dest)
        except OSError as exc:
            log.error("could not move %s aside: %s", src, exc)
            return None
        return str(dest)

    def move_data_back(self, moved_path: str) -> bool:
        src, dest = Path(moved_path), Path(self.paths.data_dir)
        if MOVED_SUFFIX not in src.name or src.parent != dest.parent:
            log.error("%s is not a moved-aside data directory", src)
            return False
        try:
            if dest.exists():  # what a failed restore left: aside too, never deleted
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                dest.rename(dest.with_name(f"{dest.name}.pgbackups-failed-restore-{stamp}"))
            src.rename(dest)
        except OSError as exc:
            log.error("could not move %s back: %s", src, exc)
            return False
        return True

    def remove_moved_data(self, moved_path: str) -> None:
        path = Path(moved_path)
        if MOVED_SUFFIX not in path.name:  # never remove anything else
            log.error("refusing to remove %s: not a moved-aside data directory", path)
            return
        shutil.rmtree(path, ignore_errors=True)

    def bootstrap_failed(self) -> bool:
        return self.member_state() in ("start failed", "bootstrap failed", "crashed")

    # --- configuration ---------------------------------------------------------------

    def s3_ca_file(self) -> str:
        return f"{self.paths.etc_dir}/s3-ca-chain.pem"

    def render_pgbackrest(self, config: WorkloadConfig, facts: UnitFacts) -> str:
        """``pgbackrest.conf`` through the core's renderer, with this machine's paths.

        The stanza section is always ``<model>.<app>``; WAL archiving is switched on and
        off in Patroni's archive_command (``config.stanza``), not here. With the TLS
        server on, the peers are the other units at their peer-relation address, and the
        clients allowed are the common names of their certificates (their addresses).
        """
        ca_file = None
        if config.s3 is not None:
            ca_file = pgbackrest.write_ca_chain(config.s3, self.s3_ca_file(), processes.db_user())
        tls = None
        peers: tuple[pgbackrest.PeerHost, ...] = ()
        if config.tls_server and facts.tls is not None:
            allowed = tuple(sorted({facts.address, *(p.address for p in facts.peers)}))
            tls = pgbackrest.TlsServerConfig(
                address=facts.address,
                cert_file=facts.tls.cert_file,
                key_file=facts.tls.key_file,
                ca_file=facts.tls.ca_file,
                port=TLS_SERVER_PORT,
                allowed_clients=allowed,
            )
            peers = tuple(
                pgbackrest.PeerHost(
                    host=p.address,
                    pg_path=self.paths.data_dir,
                    port=TLS_SERVER_PORT,
                    pg_port=PG_PORT,
                    pg_socket_path=self.paths.socket_dir,
                )
                for p in sorted(facts.peers, key=lambda p: p.name)
            )
        cfg = pgbackrest.PgBackRestConfig(
            stanza=facts.stanza_name,
            pg_path=self.paths.data_dir,
            s3=config.s3,
            pg_port=PG_PORT,
            pg_socket_path=self.paths.socket_dir,
            log_path=f"{self.paths.log_dir}/pgbackrest",
            lock_path=f"{self.paths.state_dir}/pgbackrest-lock",
            spool_path=f"{self.paths.state_dir}/pgbackrest-spool",
            ca_file=ca_file,
            tls=tls,
            peers=peers,
            features=pgbackrest.detect_features(user=processes.db_user()),
        )
        return pgbackrest.render_config(cfg)

    def apply_config(self, config: WorkloadConfig) -> None:
        facts = self._facts()
        pgbackrest.write_config(
            self.render_pgbackrest(config, facts),
            self.paths.pgbackrest_config,
            processes.db_user(),
            mode=0o640,
        )
        if facts.passwords is None:
            log.info("Patroni configuration waits for the leader's passwords")
            return
        rendered = with_raft_dcs(
            patroni.render_config(self._member(facts), config), facts, self.paths
        )
        changed = self._write(
            self.paths.patroni_config, yaml.safe_dump(rendered, sort_keys=False), 0o600
        )
        self._write_units()
        if changed and self._is_active(PATRONI_SERVICE):
            try:
                self._client().reload()
            except Exception as exc:  # noqa: BLE001 - systemd reload is the fallback
                log.warning("Patroni REST reload failed (%s); reloading through systemd", exc)
                self._systemctl("reload", PATRONI_SERVICE)

    # --- pgBackRest TLS server -------------------------------------------------------

    def start_tls_server(self) -> bool:
        self._write_units()
        if self._facts().tls is None:
            return False
        return self._systemctl("restart", TLS_SERVER_SERVICE).ok

    def stop_tls_server(self) -> None:
        if self._is_active(TLS_SERVER_SERVICE):
            self._systemctl("stop", TLS_SERVER_SERVICE)

    # --- Raft membership -------------------------------------------------------------

    def forget_raft_member(self, address: str) -> bool:
        """Remove a departed unit from the Raft group (run on a remaining member)."""
        own = self._facts().address
        result = self._run(
            ["syncobj_admin", "-conn", f"{own}:{RAFT_PORT}", "-remove", f"{address}:{RAFT_PORT}"],
            timeout=60,
        )
        if not result.ok:
            log.warning("syncobj_admin -remove %s: %s", address, result.stderr.strip())
        return bool(result.ok)
