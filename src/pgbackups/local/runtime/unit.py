"""One unit of a local cluster: PostgreSQL under a Patroni we start and stop by PID."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pgbackups.adapters import postgres, processes
from pgbackups.adapters.files import config_owner, read_text
from pgbackups.adapters.patroni import PatroniClient, RestAuth
from pgbackups.core.host import TlsMaterial, WorkloadConfig
from pgbackups.local.errors import ProgramMissing, WriteFailed
from pgbackups.local.machinery import netns, programs
from pgbackups.local.machinery import ports as ports_mod
from pgbackups.local.machinery.paths import UnitPaths, ensure_dir, make_dirs_as
from pgbackups.local.machinery.state import ProcessRecord, UnitRecord
from pgbackups.local.runtime import patroni_preload
from pgbackups.local.runtime.dcs import EtcdDcs
from pgbackups.local.runtime.facts import ClusterFacts
from pgbackups.workload.layout import PeerLayout, UnitFacts, UnitLayout
from pgbackups.workload.workload import SUPERUSER, write_patroni_config

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# pgBackRest 2.45 checks DNS names only, and every unit is on this machine. A unit on a
# machine of its own is named by its address, which its certificate carries as an IP
# and as a DNS name (the name pgBackRest compares), see Cluster.issue_unit_tls.
TLS_SERVER_HOST = "localhost"
# Everything is on one machine: an I/O stall of 10 s means the peer is gone. pgBackRest
# retries a refused connection for about twice this, so the default 60 s would make a
# stopped TLS server or S3 server cost minutes per command.
IO_TIMEOUT_SECONDS = 10
DEFAULT_CONFIG = WorkloadConfig(s3=None, stanza=None, tls_server=False)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def stanza_name(cluster: _Named) -> str:
    """The cluster's stanza (the cluster or its facts: both have the name)."""
    return f"local.{cluster.name}"


# The cluster-state key of the PostgreSQL a restore starts on the restored data, until
# Patroni takes it over (workload.services.Service.RECOVERY).
RECOVERY_PREFIX = "postgresql-recovery:"


def recovery_key(unit: Unit) -> str:
    return RECOVERY_PREFIX + unit.name


def tls_server_address(unit: Unit) -> str:
    return f"{unit.tls_server_host}:{unit.pgbackrest_port}"


class Unit:
    """A unit by name (``main/0``). Reads its process record from the cluster state
    each time, so that a Unit object stays valid while other commands run."""

    def __init__(self, cluster: ClusterFacts, name: str, record: UnitRecord) -> None:
        self.cluster = cluster
        self.name = name
        self.index = record.index
        self.pg_port = record.pg_port
        self.rest_port = record.rest_port
        self.pgbackrest_port = record.pgbackrest_port
        self.machine = netns.unit_machine(record.index)
        network = cluster.network()
        # Its own machine's address, or the loopback every unit shares.
        self.host = network.address(self.machine) if network else HOST
        self.on_machine = network is not None
        self.tls_server_host = self.host if network else TLS_SERVER_HOST
        self.paths: UnitPaths = cluster.paths.unit(record.index)

    def __repr__(self) -> str:
        return f"Unit({self.name!r}, pg_port={self.pg_port}, rest_port={self.rest_port})"

    # --- static facts -----------------------------------------------------

    @property
    def member_name(self) -> str:
        """Patroni's member name (no ``/``: it becomes an etcd key)."""
        return f"{self.cluster.name}-{self.index}"

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def pgbackrest_config(self) -> Path:
        """Reserved for pgbackrest.conf; rendering it is the pgBackRest adapter's job."""
        return self.paths.pgbackrest_config

    @property
    def socket_dir(self) -> Path:
        return self.paths.socket_dir

    @property
    def log_file(self) -> Path:
        return self.paths.patroni_log

    def client(self, timeout: float = 5.0) -> PatroniClient:
        """Patroni's REST API of this unit; writes authenticate with the cluster's password.
        Without the passwords file (a purged or half-made cluster) reads still work, so
        that such a cluster can still be looked at and stopped; a write is then refused."""
        try:
            auth: RestAuth | None = RestAuth.of(self.cluster.passwords())
        except FileNotFoundError:
            auth = None
        return PatroniClient(self.host, self.rest_port, timeout=timeout, auth=auth)

    def tls(self) -> TlsMaterial | None:
        """This unit's certificate, key and the cluster CA, when it has them."""
        if self.paths.tls_cert.is_file() and self.paths.tls_key.is_file():
            return TlsMaterial(
                ca_file=str(self.cluster.ca_file),
                cert_file=str(self.paths.tls_cert),
                key_file=str(self.paths.tls_key),
            )
        return None

    def layout(self) -> UnitLayout:
        paths = self.paths
        return UnitLayout(
            unit=self.name,
            scope=self.cluster.name,
            member=self.member_name,
            stanza=stanza_name(self.cluster),
            address=self.host,
            data_dir=str(self.data_dir),
            socket_dir=str(self.socket_dir),
            bin_dir=str(programs.pg_bin_dir()),
            patroni_config=str(paths.patroni_config),
            pgbackrest_config=str(paths.pgbackrest_config),
            pgpass=str(paths.pgpass),
            s3_ca_file=str(paths.s3_ca_file),
            pgbackrest_log_dir=str(paths.pgbackrest_log),
            pgbackrest_lock_dir=str(paths.pgbackrest_lock),
            pgbackrest_spool_dir=str(paths.pgbackrest_spool),
            patroni_log_dir=None,  # the spawned process's output is the log file
            pg_port=self.pg_port,
            rest_port=self.rest_port,
            tls_server_listen=self.host,
            tls_server_host=self.tls_server_host,
            tls_server_port=self.pgbackrest_port,
            io_timeout=IO_TIMEOUT_SECONDS,
            peers_share_machine=not self.on_machine,
        )

    def as_peer(self) -> PeerLayout:
        """This unit as another unit's pgBackRest reaches it (its certificate's common name
        is its member name)."""
        return PeerLayout(
            member=self.member_name,
            cert_name=self.member_name,
            address=self.host,
            tls_server_host=self.tls_server_host,
            tls_server_port=self.pgbackrest_port,
            data_dir=str(self.data_dir),
            pg_port=self.pg_port,
            socket_dir=str(self.socket_dir),
        )

    def facts(self) -> UnitFacts:
        tls = self.tls() if self.cluster.tls_enabled else None
        return UnitFacts(
            layout=self.layout(),
            peers=tuple(
                Unit(self.cluster, name, record).as_peer()
                for name, record in self.cluster.state().sorted_units()
                if name != self.name
            ),
            tls=tls,
            passwords=self.cluster.passwords(),
            # The cluster's CA is the cluster's alone (its key is the invoking user's, 0600,
            # and signs only this cluster's units and its S3 server, whose certificate is
            # for servers only): its units' certificates are the TLS servers' identity.
            backup_tls=tls,
        )

    def dcs(self) -> EtcdDcs:
        return EtcdDcs(self.cluster.etcd_endpoint, self.cluster.etcd_tls)

    # --- configuration ----------------------------------------------------

    def prepare(self) -> None:
        """Create the unit's directories: root's (configuration, certificates; the
        database user reads them through its group) and the database user's (data, logs,
        socket, pgBackRest's), see :mod:`pgbackups.local.machinery.paths`."""
        db = self.cluster.db_user
        ensure_dir(self.cluster.paths.units_dir, mode=0o755)
        ensure_dir(self.paths.root, mode=0o750, owner=config_owner(db))
        ensure_dir(self.paths.tls_dir, mode=0o750, owner=config_owner(db))
        for d in (
            self.paths.postgres_dir,
            self.paths.log_dir,
            self.paths.socket_dir,
            self.paths.pgbackrest_dir,
        ):
            ensure_dir(d, mode=0o700, owner=db)
        inner = (self.paths.pgbackrest_log, self.paths.pgbackrest_lock, self.paths.pgbackrest_spool)
        if not all(d.is_dir() for d in inner):
            make_dirs_as(db, inner)

    def write_config(self, config: WorkloadConfig) -> None:
        """Render patroni.yml (0600, db user: it holds passwords). No reload: the
        workload's apply_config reloads a running Patroni."""
        self.prepare()
        write_patroni_config(self.facts(), self.dcs(), config, self.cluster.db_user)

    # --- process ----------------------------------------------------------

    def process(self) -> ProcessRecord | None:
        record = self.cluster.state().units.get(self.name)
        return record.process if record else None

    def is_running(self) -> bool:
        """Our Patroni is alive (the recorded PID, with its recorded start time)."""
        proc = self.process()
        return proc is not None and proc.is_ours()

    def _record(self, proc: ProcessRecord | None) -> None:
        with self.cluster.store.transaction() as state:
            if self.name in state.units:
                state.units[self.name].process = proc

    def start(self, config: WorkloadConfig | None = None) -> int:
        """Spawn Patroni as the database user and record its PID. ``config`` renders
        patroni.yml first; without it an existing patroni.yml is kept as it is."""
        if self.is_running():
            proc = self.process()
            assert proc is not None
            return proc.pid
        self.prepare()
        if config is not None or not self.paths.patroni_config.exists():
            self.write_config(config or DEFAULT_CONFIG)
        restored = self._restored_postmaster()
        self._stop_orphan_postmaster(spare=restored)
        # The restored PostgreSQL holds its port: Patroni takes it over as it runs.
        ports = [(self.rest_port, "Patroni REST")]
        if restored is None or restored != self.postmaster_pid():
            ports.insert(0, (self.pg_port, "PostgreSQL"))
        # On its machine: Patroni, PostgreSQL and what they run (archive_command's
        # pgBackRest) live in the machine's network namespace.
        with self.cluster.inside(self.machine):
            for port, what in ports:
                ports_mod.require_free(port, f"{self.name} {what}", self.host)
            preloaded = self._take_preloaded()
            if preloaded is not None:
                self._record(preloaded)
                log.info("%s: patroni started, pid %d (preloaded)", self.name, preloaded.pid)
                return preloaded.pid
            pid = processes.spawn(
                [programs.find("patroni"), str(self.paths.patroni_config)],
                log_file=self.log_file,
                user=self.cluster.db_user,
            )
        self._record(ProcessRecord.of(pid))
        log.info("%s: patroni started, pid %d", self.name, pid)
        return pid

    def preload_patroni(self) -> None:
        """Start Patroni's interpreter ahead, its modules imported, waiting for
        :meth:`start` (patroni_preload says why). Best effort: a preload that cannot
        start is logged, and :meth:`start` spawns Patroni as usual."""
        if self.is_running() or self._preloaded() is not None:
            return
        try:
            script = programs.find("patroni")
            python = patroni_preload.interpreter_of(script)
            if python is None:
                log.info("%s: %s is not a Python script: Patroni not preloaded", self.name, script)
                return
            with self.cluster.inside(self.machine):
                pid = processes.spawn(
                    [python, "-c", patroni_preload.PRELOAD, str(self.paths.patroni_config)],
                    log_file=self.log_file,
                    user=self.cluster.db_user,
                )
        except (OSError, ProgramMissing) as exc:
            log.warning("%s: Patroni not preloaded: %s", self.name, exc)
            return
        try:
            self._record_preloaded(ProcessRecord.of(pid))
        except (OSError, WriteFailed) as exc:  # unrecorded, nothing would ever stop it
            processes.stop(pid, timeout=10)
            log.warning(
                "%s: Patroni not preloaded (its record was not written): %s", self.name, exc
            )
            return
        log.info(
            "%s: Patroni preloaded (pid %d) while the restored database recovers", self.name, pid
        )

    def _preloaded(self) -> ProcessRecord | None:
        """The preloaded Patroni's record while it runs (a dead one's is forgotten)."""
        record = self.cluster.service(patroni_preload.key(self.name))
        if record is not None and not record.is_ours():
            self._record_preloaded(None)
            return None
        return record

    def _record_preloaded(self, proc: ProcessRecord | None) -> None:
        self.cluster.record_service(patroni_preload.key(self.name), proc)

    def _take_preloaded(self) -> ProcessRecord | None:
        """The preloaded Patroni, told to start (its record moves to the unit's); None
        when there is none running."""
        record = self._preloaded()
        if record is None:
            return None
        if patroni_preload.release(record):
            self._record_preloaded(None)
            return record
        log.warning(
            "%s: the preloaded Patroni (pid %d) did not wait: stopped", self.name, record.pid
        )
        self._stop_preloaded()
        return None

    def _stop_preloaded(self) -> None:
        record = self._preloaded()
        if record is not None:
            processes.stop(record.pid, timeout=10)
            self._record_preloaded(None)

    def stop(self, timeout: float = 90.0) -> bool:
        """SIGTERM our Patroni (it stops PostgreSQL) and wait, then stop what its session
        still runs: a Patroni that died leaves its children there (a restore's pgBackRest
        and its workers), and they must not outlive it. A PID that now belongs to another
        process is never signalled. True when nothing of ours runs any more."""
        self._stop_preloaded()  # never told to start
        proc = self.process()
        ok = True
        reused = False
        if proc is not None:
            if proc.is_ours():
                ok = processes.stop(proc.pid, timeout=timeout)
            elif processes.is_alive(proc.pid):
                reused = True
                log.warning(
                    "%s: pid %d is another process now; not stopping it", self.name, proc.pid
                )
        # Before the session's rest: a postmaster gets SIGINT (fast shutdown), not the
        # SIGTERM that would wait for its clients to leave.
        self._stop_orphan_postmaster()
        if proc is not None and not reused:
            done, leftovers = processes.stop_session(proc.pid, proc.start_time, timeout=timeout)
            ok = ok and done
            for info in leftovers:
                log.warning("%s: stopped %s, left by its Patroni", self.name, info.describe())
        if ok:
            try:
                self._record(None)
            except WriteFailed as exc:  # harmless: a record is trusted with its start time
                log.warning("%s stopped, but its record stays: %s", self.name, exc)
        return ok

    def _restored_postmaster(self) -> int | None:
        """The PID of the PostgreSQL a restore started on the restored data (recorded by
        UnitServices.start_recovery) while it still runs: Patroni takes it over."""
        record = self.cluster.service(recovery_key(self))
        return record.pid if record is not None and record.is_ours() else None

    def _stop_orphan_postmaster(self, spare: int | None = None) -> None:
        """A postmaster left behind by a Patroni that died (PostgreSQL is detached).
        Identified by its postmaster.pid and a command line naming our data dir.
        ``spare``: the restored PostgreSQL Patroni is started to take over."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        if pid == spare:
            log.info("%s: Patroni takes over the restored PostgreSQL (pid %d)", self.name, pid)
            return
        log.warning("%s: stopping orphan postmaster %d", self.name, pid)
        processes.stop(pid, timeout=60, sig=signal.SIGINT)

    def postmaster_pid(self) -> int | None:
        try:
            # The database user's file: read without following a link or blocking on a FIFO.
            text = read_text(self.data_dir / "postmaster.pid")
            pid = int((text or "").splitlines()[0].strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if str(self.data_dir).encode() in cmdline and processes.is_alive(pid):
            return pid
        return None

    # --- SQL ----------------------------------------------------------------

    def connect(self, dbname: str = "postgres", timeout: int = 5) -> postgres.Connection:
        """A superuser connection over the unix socket: pg_hba lets the database OS user
        and root in by peer (no password); the socket directory is theirs alone too."""
        return postgres.connect(
            str(self.socket_dir), self.pg_port, SUPERUSER, dbname, connect_timeout=timeout
        )

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql.encode(), params)
            return cur.fetchall() if cur.description else []

    def accepts_writes(self) -> bool:
        import psycopg  # on first use (postgres.py says why)

        try:
            rows = self.query("select pg_is_in_recovery(), txid_current()")
        except psycopg.Error:
            return False
        return bool(rows) and rows[0][0] is False

    def is_streaming(self) -> bool:
        """A replica whose WAL receiver streams from the primary."""
        import psycopg  # on first use (postgres.py says why)

        try:
            rows = self.query("select status from pg_stat_wal_receiver")
        except psycopg.Error:
            return False
        return bool(rows) and rows[0][0] == "streaming"

    def client_args(self) -> list[str]:
        """libpq client options (psql, pgbench, barman-cloud…): the superuser over the
        unix socket."""
        return ["-h", str(self.socket_dir), "-p", str(self.pg_port), "-U", SUPERUSER]

    def psql_argv(self, args: Sequence[str] = ()) -> list[str]:
        return [str(programs.psql()), *self.client_args(), "-d", "postgres", *args]

    def exec_psql(self, args: Sequence[str] = ()) -> None:
        """Replace this process with psql (interactive use)."""
        argv = self.psql_argv(args)
        os.execv(argv[0], argv)  # noqa: S606 - argv is ours plus the user's own psql args
