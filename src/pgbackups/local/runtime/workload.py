"""The workload of one local unit, as the core sees it (``host.Workload``).

PostgreSQL runs under a Patroni we start and stop by PID; the pgBackRest TLS server is a
daemon we start and stop by PID too. Configuration is rendered by the adapters
(:mod:`pgbackups.adapters.patroni`, :mod:`pgbackups.adapters.pgbackrest`); this module
only supplies the topology of the local cluster: paths, ports, certificates, the other units.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pgbackups.adapters import patroni, pgbackrest, postgres, processes
from pgbackups.adapters.patroni import PatroniUnavailable
from pgbackups.core.host import WorkloadConfig, WorkloadUnavailable
from pgbackups.local.machinery import programs
from pgbackups.local.machinery.state import ProcessRecord
from pgbackups.local.runtime.cluster import Cluster, tls_server_key
from pgbackups.local.runtime.unit import Unit

log = logging.getLogger(__name__)

# Everything is on loopback: an I/O stall of 10 s means the peer is gone. pgBackRest
# retries a refused connection for about twice this, so the default 60 s would make a
# stopped TLS server or S3 server cost minutes per command.
IO_TIMEOUT_SECONDS = 10
MOVED_ASIDE_MARK = ".before-restore-"
TAGS_TIMEOUT_SECONDS = 20.0  # several Patroni loops (loop_wait is 3 s)


def stanza_name(cluster: Cluster) -> str:
    return f"local.{cluster.name}"


def tls_server_address(unit: Unit) -> str:
    """``localhost:PORT``: pgBackRest 2.45 checks DNS names only, and every unit is local."""
    return f"localhost:{unit.pgbackrest_port}"


class LocalWorkload:
    def __init__(self, cluster: Cluster, unit: Unit) -> None:
        self.cluster = cluster
        self.unit = unit

    # --- Patroni and PostgreSQL facts ---------------------------------------------

    def is_cluster_initialised(self) -> bool:
        return self.cluster.state().bootstrapped

    def is_primary(self) -> bool:
        if not self.unit.is_running():
            raise WorkloadUnavailable(f"{self.unit.name}: Patroni is not running")
        return self.unit.client(timeout=5).is_primary()

    def is_member_running(self) -> bool:
        if not self.unit.is_running():
            return False
        try:
            return self.unit.client(timeout=5).is_running()
        except PatroniUnavailable:
            return False

    def member_state(self) -> str | None:
        if not self.unit.is_running():
            return None
        try:
            return self.unit.client(timeout=5).member().state
        except PatroniUnavailable:
            return None

    def primary_address(self) -> str | None:
        primary = self.cluster.primary()
        return tls_server_address(primary) if primary is not None else None

    def system_identifier(self) -> int | None:
        return postgres.system_identifier(
            str(self.unit.data_dir),
            user=self.cluster.db_user,
            bin_dir=str(programs.pg_bin_dir()),
        )

    def current_timeline(self) -> int | None:
        try:
            with self.unit.connect() as conn:
                return postgres.current_timeline(conn)
        except psycopg.Error as exc:
            log.debug("%s: timeline not readable: %s", self.unit.name, exc)
            return None

    # --- database process ------------------------------------------------------------

    def stop_database(self) -> bool:
        return self.unit.stop()

    def start_database(self) -> bool:
        try:
            self.unit.start()
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported as False
            log.error("%s: could not start Patroni: %s", self.unit.name, exc)
            return False
        return self.unit.is_running()

    def remove_dcs_state(self) -> bool:
        result = patroni.remove_dcs_state(
            str(self.unit.paths.patroni_config), self.cluster.name, user=self.cluster.db_user
        )
        if not result.ok:
            log.error(
                "%s: patronictl remove failed: %s",
                self.unit.name,
                (result.stderr or result.stdout).strip()[-500:],
            )
        return result.ok

    def move_data_aside(self) -> str | None:
        """Rename the data directory beside itself; nothing is deleted here.

        "" when there is no data directory: after a failed bootstrap (an unreachable PITR
        target) Patroni renamed it to ``<data>.failed`` itself, and the data from before
        the first restore is already aside.
        """
        data = self.unit.data_dir
        if not data.exists():
            log.info("%s: no data directory at %s: nothing to move aside", self.unit.name, data)
            return ""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved = data.with_name(f"{data.name}{MOVED_ASIDE_MARK}{stamp}")
        try:
            data.rename(moved)
        except OSError as exc:
            log.error("%s: could not move %s aside: %s", self.unit.name, data, exc)
            return None
        log.info("%s: moved %s aside to %s", self.unit.name, data, moved)
        return str(moved)

    def move_data_back(self, moved_path: str) -> bool:
        """Rename a moved-aside copy back to the data directory. Whatever a failed restore
        left there is renamed aside too (``<data>.failed-restore-<stamp>``), not deleted."""
        moved = Path(moved_path)
        data = self.unit.data_dir
        if not self._is_moved_aside_copy(moved) or not moved.is_dir():
            log.error("%s: %s is not a moved-aside data directory", self.unit.name, moved)
            return False
        try:
            if data.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                data.rename(data.with_name(f"{data.name}.failed-restore-{stamp}"))
            moved.rename(data)
        except OSError as exc:
            log.error("%s: could not move %s back: %s", self.unit.name, moved, exc)
            return False
        log.info("%s: moved %s back to %s", self.unit.name, moved, data)
        return True

    def _is_moved_aside_copy(self, path: Path) -> bool:
        data = self.unit.data_dir
        return path.parent == data.parent and path.name.startswith(data.name + MOVED_ASIDE_MARK)

    def remove_moved_data(self, moved_path: str) -> None:
        """Delete a directory this workload moved aside (and nothing else)."""
        moved = Path(moved_path)
        if not self._is_moved_aside_copy(moved):
            log.error("%s: refusing to delete %s: not a moved-aside copy", self.unit.name, moved)
            return
        shutil.rmtree(moved, ignore_errors=True)
        log.info("%s: removed the old data directory %s", self.unit.name, moved)

    def bootstrap_failed(self) -> bool:
        """Patroni exits when its bootstrap fails (e.g. an unreachable PITR target): it
        logs ``Failed to bootstrap cluster``, renames the data directory to
        ``<data>.failed`` and raises PatroniFatalException. Our Patroni was started
        (its PID is recorded) and is no longer running."""
        return self.unit.process() is not None and not self.unit.is_running()

    # --- configuration ------------------------------------------------------------------

    def pgbackrest_config(self, config: WorkloadConfig) -> pgbackrest.PgBackRestConfig:
        unit, paths, user = self.unit, self.unit.paths, self.cluster.db_user
        ca_file: str | None = None
        if config.s3 is not None and config.s3.tls_ca_chain:
            ca_path = paths.pgbackrest_dir / "s3-ca-chain.pem"
            pgbackrest.write_ca_chain(config.s3, ca_path, owner=user)
            ca_file = str(ca_path)
        tls_server = None
        peers: tuple[pgbackrest.PeerHost, ...] = ()
        local_peers: tuple[pgbackrest.LocalPeer, ...] = ()
        material = unit.tls()
        others = [u for u in self.cluster.units() if u.name != unit.name]
        if config.tls_server and material is not None:
            tls_server = pgbackrest.TlsServerConfig(
                address="127.0.0.1",
                port=unit.pgbackrest_port,
                cert_file=material.cert_file,
                key_file=material.key_file,
                ca_file=material.ca_file,
                allowed_clients=tuple(u.member_name for u in others),
            )
            peers = tuple(
                pgbackrest.PeerHost(
                    host="localhost",
                    port=u.pgbackrest_port,
                    pg_path=str(u.data_dir),
                    pg_port=u.pg_port,
                    pg_socket_path=str(u.socket_dir),
                )
                for u in others
            )
        else:
            # Without TLS servers the other units are still on this machine: pgBackRest
            # reaches them directly, so a leader that is a replica can find the primary
            # for stanza-create and check. (Backups from a replica still need TLS: SPEC §3.)
            local_peers = tuple(
                pgbackrest.LocalPeer(str(u.data_dir), u.pg_port, str(u.socket_dir)) for u in others
            )
        return pgbackrest.PgBackRestConfig(
            stanza=stanza_name(self.cluster),
            pg_path=str(unit.data_dir),
            s3=config.s3,
            pg_port=unit.pg_port,
            pg_socket_path=str(unit.socket_dir),
            log_path=str(paths.pgbackrest_log),
            lock_path=str(paths.pgbackrest_lock),
            spool_path=str(paths.pgbackrest_spool),
            ca_file=ca_file,
            io_timeout=IO_TIMEOUT_SECONDS,
            tls=tls_server,
            peers=peers,
            local_peers=local_peers,
            features=pgbackrest.detect_features(),
        )

    def apply_config(self, config: WorkloadConfig) -> None:
        self.unit.prepare()
        text = pgbackrest.render_config(self.pgbackrest_config(config))
        pgbackrest.write_config(text, self.unit.pgbackrest_config, owner=self.cluster.db_user)
        # Compared with what Patroni and a client see now, not with what was last asked:
        # a killed command may have left either half applied.
        tags_change = self._creating_backup_tag() not in (None, config.creating_backup)
        clients_change = self._accepts_tcp_clients() not in (None, config.connectivity)
        self.unit.apply_config(config)
        if tags_change:
            self._wait_for_tags(config.creating_backup)
        if clients_change:
            self._wait_for_clients(accepted=config.connectivity)

    def _accepts_tcp_clients(self) -> bool | None:
        """What a TCP client sees now: True accepted, False rejected by pg_hba, None other."""
        if not self.unit.is_running():
            return None
        try:
            with psycopg.connect(
                host=self.unit.host,
                port=self.unit.pg_port,
                user="postgres",
                password=self.cluster.passwords().superuser,
                dbname="postgres",
                connect_timeout=3,
            ):
                return True
        except psycopg.OperationalError as exc:
            return False if "pg_hba.conf rejects" in str(exc) else None

    def _wait_for_clients(self, *, accepted: bool) -> None:
        """PostgreSQL reloads pg_hba a moment after Patroni publishes the tags: wait until a
        client sees the intended state, so that a command never returns before it holds."""
        if _poll(lambda: self._accepts_tcp_clients() is accepted, TAGS_TIMEOUT_SECONDS, 0.2):
            return
        log.warning(
            "%s: TCP clients still not %s", self.unit.name, "accepted" if accepted else "rejected"
        )

    def _creating_backup_tag(self) -> bool | None:
        """Whether Patroni publishes this member as hidden (nofailover), None if unknown."""
        if not self.unit.is_running():
            return None
        try:
            members = self.unit.client(timeout=5).cluster()
        except PatroniUnavailable:
            return None
        me = next((m for m in members if m.name == self.unit.member_name), None)
        return None if me is None else bool(me.tags.get("nofailover"))

    def _wait_for_tags(self, hidden: bool) -> None:
        """A reload takes effect on Patroni's next loop. Hiding a replica for a backup (tags
        and pg_hba) must be in force before the backup starts, and lifted before the action
        returns: Patroni publishes the tags after writing pg_hba in the same reload."""
        if _poll(lambda: self._creating_backup_tag() == hidden, TAGS_TIMEOUT_SECONDS, 0.3):
            return
        log.warning(
            "%s: Patroni did not publish nofailover=%s within %ss",
            self.unit.name,
            hidden,
            TAGS_TIMEOUT_SECONDS,
        )

    # --- pgBackRest TLS server ------------------------------------------------------------

    def start_tls_server(self) -> bool:
        """(Re)start: the server reads its certificates and peers only when it starts."""
        self.stop_tls_server()
        tool = pgbackrest.PgBackRest(
            self.unit.pgbackrest_config, stanza_name(self.cluster), user=self.cluster.db_user
        )
        log_file = self.unit.paths.pgbackrest_log / "tls-server.log"
        pid = tool.start_server(log_file)
        self.cluster.record_service(tls_server_key(self.unit), ProcessRecord.of(pid))
        for _ in range(50):
            if tool.server_ping(tls_server_address(self.unit)):
                log.info("%s: pgBackRest TLS server up (pid %d)", self.unit.name, pid)
                return True
            if not processes.is_alive(pid):
                break
            time.sleep(0.2)
        log.error("%s: the pgBackRest TLS server did not come up; see %s", self.unit.name, log_file)
        return False

    def stop_tls_server(self) -> None:
        self.cluster.stop_service(tls_server_key(self.unit))


def _poll(pred: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Ask ``pred`` every ``interval`` seconds until it holds (True) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
