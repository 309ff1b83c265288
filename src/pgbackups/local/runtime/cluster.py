"""A local cluster: etcd, an S3 server and N units, started and stopped by PID.

Python API (the local host builds on it)::

    cluster = up("main", units=2, tls=True)     # or Cluster.load("main")
    cluster.units(); cluster.unit("main/1"); cluster.unit("1")
    cluster.primary(); cluster.leader; cluster.set_leader("main/1")
    cluster.s3() -> S3Endpoint (endpoint, port, bucket, keys, ca_file)
    cluster.etcd_endpoint; cluster.ca_file; cluster.issue_unit_tls(unit)
    cluster.get_status(unit) / set_status(unit, status, message)
    cluster.add_unit(); cluster.remove_unit("main/1"); cluster.switchover("main/1")
    down("main", purge=False)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgbackups.adapters import files, processes
from pgbackups.adapters.files import config_owner
from pgbackups.adapters.patroni import PatroniPasswords, PatroniUnavailable
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import TlsMaterial, WorkloadConfig
from pgbackups.local.errors import (
    ClusterNotFound,
    PgbackupsError,
    StartError,
    UnitNotFound,
    UsageError,
    WriteFailed,
)
from pgbackups.local.machinery import etcd as etcd_mod
from pgbackups.local.machinery import logfiles, netns, programs, s3server, tls
from pgbackups.local.machinery import ports as ports_mod
from pgbackups.local.machinery.paths import (
    DEFAULT_NAME,
    ClusterPaths,
    check_home,
    check_traversable,
    clusters_dir,
    ensure_dir,
    make_dirs_as,
    make_home,
    pgbackups_home,
    validate_name,
    write_file,
)
from pgbackups.local.machinery.state import ClusterState, ProcessRecord, StateStore, UnitRecord
from pgbackups.local.progress import Progress
from pgbackups.local.runtime.facts import ClusterFacts
from pgbackups.local.runtime.unit import RECOVERY_PREFIX, Unit, recovery_key

log = logging.getLogger(__name__)

ETCD = "etcd"
S3 = "s3"
S3_REGION = "us-east-1"
# The agent (local/runtime/agent.py): its key among the recorded processes, how often it
# delivers update-status, and how long a command that finds the lock taken looks for
# the agent's busy file before it says another command holds the lock.
AGENT = "agent"
AGENT_INTERVAL_SECONDS = 15.0
AGENT_GRACE_SECONDS = 1.0
PRIMARY_TIMEOUT = 120.0
REPLICA_TIMEOUT = 180.0
START_FAILED_PREFIX = "failed to start"
TLS_SERVER_PREFIX = "pgbackrest-server:"
# The cluster's generated passwords (secrets/passwords.json), one per key.
PASSWORD_KEYS = ("superuser", "replication", "rewind", "rest_api")


@dataclass(frozen=True)
class S3Endpoint:
    """The cluster's own S3 server, as a client reaches it."""

    # https://localhost:PORT (a name: pgBackRest 2.45 ignores IP SANs), or on machines
    # https://ADDRESS:PORT (the certificate carries the address as a DNS name too)
    endpoint: str
    host: str
    port: int
    bucket: str
    region: str
    access_key: str
    secret_key: str = field(repr=False)
    ca_file: str = ""
    uri_style: str = "path"

    def parameters(self) -> dict[str, str]:
        """The S3 settings map that points at this server (keys: docs/behaviour/world.md)."""
        return {
            "bucket": self.bucket,
            "access-key": self.access_key,
            "secret-key": self.secret_key,
            "endpoint": self.endpoint,
            "region": self.region,
            "s3-uri-style": self.uri_style,
            "tls-ca-chain": json.dumps([Path(self.ca_file).read_text()]),
        }


def tls_server_key(unit: Unit) -> str:
    """The cluster-state key under which a unit's pgBackRest TLS server PID is recorded
    (here rather than in workload.py, so that remove_unit can stop it)."""
    return TLS_SERVER_PREFIX + unit.name


def list_clusters(home: Path | None = None) -> list[str]:
    root = clusters_dir(check_home(home) if home else pgbackups_home())
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())


class Cluster:
    def __init__(self, name: str, home: Path | None = None) -> None:
        self.name = validate_name(name)
        self.home = check_home(home) if home else pgbackups_home()
        self.paths = ClusterPaths(self.home, self.name)
        self.store = StateStore(self.paths.state_file, self.paths.lock_file)
        self.db_user: OsUser = processes.db_user()
        # What each of its units is given of it (a unit never holds the cluster).
        self.facts = ClusterFacts(self.name, self.paths, self.store, self.db_user)

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, home={str(self.home)!r})"

    @classmethod
    def load(cls, name: str = DEFAULT_NAME, home: Path | None = None) -> Cluster:
        cluster = cls(name, home)
        if not cluster.store.exists():
            others = list_clusters(cluster.home)
            known = f"; clusters here: {', '.join(others)}" if others else ""
            flag = "" if name == DEFAULT_NAME else f" --name {name}"
            raise ClusterNotFound(
                f"no cluster named {name!r} (in {cluster.home}){known}; "
                f"create it with: pgbackups up{flag}"
            )
        return cluster

    def exists(self) -> bool:
        return self.store.exists()

    def state(self) -> ClusterState:
        return self.facts.state()

    # --- units ----------------------------------------------------------------

    def units(self) -> list[Unit]:
        return [Unit(self.facts, n, r) for n, r in self.state().sorted_units()]

    def unit_name(self, ref: str) -> str:
        """``main/1`` or a bare ``1`` -> ``main/1``."""
        return f"{self.name}/{ref}" if ref.isdigit() else ref

    def unit(self, ref: str) -> Unit:
        name = self.unit_name(ref)
        state = self.state()
        record = state.units.get(name)
        if record is None:
            known = ", ".join(n for n, _ in state.sorted_units()) or "none"
            raise UnitNotFound(f"unknown unit {ref!r} in cluster {self.name} (units: {known})")
        return Unit(self.facts, name, record)

    def primary(self) -> Unit | None:
        """The unit Patroni runs as primary now (asked over REST), None if none answers."""
        with self.facts.control():
            for unit in self.units():
                if not unit.is_running():
                    continue
                with contextlib.suppress(PatroniUnavailable):
                    if unit.client(timeout=3).is_primary():
                        return unit
        return None

    # --- leadership and statuses ------------------------------------------------

    @property
    def leader(self) -> str:
        return self.state().leader

    def set_leader(self, unit_ref: str) -> None:
        name = self.unit(unit_ref).name
        with self.store.transaction() as state:
            state.leader = name

    def get_status(self, unit_ref: str) -> tuple[str, str]:
        name = self.unit_name(unit_ref)
        entry = self.state().statuses.get(name, {})
        return entry.get("status", "active"), entry.get("message", "")

    def set_status(self, unit_ref: str, status: str, message: str = "") -> None:
        name = self.unit_name(unit_ref)
        with self.store.transaction() as state:
            state.statuses[name] = {"status": status, "message": message}

    # --- secrets, S3, etcd, TLS ---------------------------------------------------

    def passwords(self) -> PatroniPasswords:
        return self.facts.passwords()

    def s3_host(self, state: ClusterState | None = None) -> str:
        """The S3 server's name in its URL: ``localhost``, or the S3 machine's address."""
        state = state or self.state()
        return self.facts.address(netns.S3, state) if state.machines else "localhost"

    def s3(self) -> S3Endpoint:
        state = self.state()
        host = self.s3_host(state)
        return S3Endpoint(
            endpoint=f"https://{host}:{state.s3_port}",
            host=host,
            port=state.s3_port,
            bucket=state.bucket,
            region=S3_REGION,
            access_key=self.paths.s3_access_key_file.read_text().strip(),
            secret_key=self.paths.s3_secret_key_file.read_text().strip(),
            ca_file=str(self.paths.ca_cert),
        )

    def s3_credentials(self) -> s3server.S3Credentials:
        s3 = self.s3()
        return s3server.S3Credentials(s3.access_key, s3.secret_key)

    @property
    def etcd_endpoint(self) -> str:
        return self.facts.etcd_endpoint

    @property
    def ca_file(self) -> Path:
        return self.facts.ca_file

    @property
    def tls_enabled(self) -> bool:
        return self.facts.tls_enabled

    def set_tls_flag(self, enabled: bool) -> None:
        with self.store.transaction() as state:
            state.tls = enabled

    def issue_unit_tls(self, unit: Unit) -> TlsMaterial:
        """Certificate + key for a unit (CN ``<cluster>-<i>``, SAN localhost/127.0.0.1, or on
        machines its address as an IP and as a DNS name: pgBackRest 2.45 compares the host
        it dials with DNS names only; serverAuth + clientAuth), key 0640 root:db."""
        unit.prepare()
        dns_names, ip_addresses = _names_for(unit.host if unit.on_machine else None)
        tls.issue_cert(
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            ca_cert=self.paths.ca_cert,
            ca_key=self.paths.ca_key,
            cert=unit.paths.tls_cert,
            key=unit.paths.tls_key,
            common_name=unit.member_name,
            client_auth=True,
            owner=config_owner(self.db_user),
        )
        material = unit.tls()
        assert material is not None
        return material

    def remove_unit_tls(self, unit: Unit) -> None:
        tls.remove_cert(unit.paths.tls_cert, unit.paths.tls_key)

    # --- processes -------------------------------------------------------------------

    def service(self, key: str) -> ProcessRecord | None:
        """The process recorded under ``key`` (ClusterFacts.service)."""
        return self.facts.service(key)

    def service_running(self, key: str) -> bool:
        proc = self.service(key)
        return proc is not None and proc.is_ours()

    def record_service(self, key: str, proc: ProcessRecord | None) -> None:
        self.facts.record_service(key, proc)

    def running_parts(self) -> dict[str, bool]:
        parts = {ETCD: self.service_running(ETCD), S3: self.service_running(S3)}
        for unit in self.units():
            parts[unit.name] = unit.is_running()
        return parts

    def is_running(self) -> bool:
        return all(self.running_parts().values())

    def any_running(self) -> bool:
        return any(self.running_parts().values())

    @contextlib.contextmanager
    def operation(self, what: str, *, wait_for_agent: bool = True) -> Iterator[None]:
        """One changing command at a time per cluster (``status`` does not take it).

        A command that finds the lock held by the cluster's agent (its update-status pass,
        perhaps a scheduled backup: ``agent.busy`` exists) waits for it rather than fail.
        """
        make_home(self.home)
        ensure_dir(clusters_dir(self.home))
        ensure_dir(self.paths.root)
        # Root's own directory (ensure_dir checked it): the lock file cannot be a link
        # the database user planted; O_NOFOLLOW says so once more.
        fd = os.open(self.paths.op_lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not (wait_for_agent and self._wait_for_agent(fd, what)):
                    raise PgbackupsError(
                        f"another pgbackups command is changing cluster {self.name}; "
                        f"{what} again when it has finished"
                    ) from exc
            yield
        finally:
            os.close(fd)

    def _wait_for_agent(self, fd: int, what: str) -> bool:
        """Take the lock once the agent's pass ends; False when someone else holds it.
        The agent writes ``agent.busy`` just after it took the lock: a short grace covers
        that moment."""
        grace = time.monotonic() + AGENT_GRACE_SECONDS
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            busy = self.paths.agent_busy.exists()
            if not busy and time.monotonic() > grace:
                return False
            if busy and not said:
                log.warning("%s waits for the cluster's agent (update-status) to finish", what)
                said = True
            time.sleep(0.2)

    # --- the agent --------------------------------------------------------------------

    def start_agent(self, interval: float = AGENT_INTERVAL_SECONDS) -> int:
        """Start the cluster's agent (``pgbackups agent``: update-status every ``interval``
        seconds, scheduled backups; local/runtime/agent.py) unless it runs; its PID. It
        runs as ourselves: it changes root's state files like any command."""
        running = self.service(AGENT)
        if running is not None and running.is_ours():
            return running.pid
        argv = [sys.executable, "-m", "pgbackups", "agent", "--name", self.name,
                "--interval", f"{interval:g}"]  # fmt: skip
        # Where the cluster lives and nothing secret: the agent reads the rest from files.
        env = {"PGBACKUPS_HOME": str(self.home)}
        pid = processes.spawn(argv, log_file=self.paths.agent_log, env=env)
        self.record_service(AGENT, ProcessRecord.of(pid))
        return pid

    # --- creation -------------------------------------------------------------------

    def _create(self, units: int, tls_on: bool, machines: bool = False) -> None:
        """Allocate ports, write the state, secrets, CA and certificates."""
        owner = self.db_user
        with ports_mod.allocation_lock(self.home):
            base = ports_mod.allocate_block(self.home, units)
            ensure_dir(self.paths.root)
            etcd_client, etcd_peer, s3_port = ports_mod.shared_ports(base)
            unit_records = {}
            for i in range(units):
                pg, rest, pgbr = ports_mod.unit_ports(base, i)
                unit_records[f"{self.name}/{i}"] = UnitRecord(i, pg, rest, pgbr)
            self.store.create(
                ClusterState(
                    name=self.name,
                    uuid=str(uuid.uuid4()),
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                    base_port=base,
                    etcd_client_port=etcd_client,
                    etcd_peer_port=etcd_peer,
                    s3_port=s3_port,
                    bucket=s3server.DEFAULT_BUCKET,
                    tls=tls_on,
                    leader=f"{self.name}/0",
                    units=unit_records,
                    next_index=units,
                    machines=machines,
                )
            )
        # Only root reads the secrets (it renders them into the configuration and the
        # S3 server's environment): the database user neither owns nor reads them.
        ensure_dir(self.paths.secrets_dir, mode=0o700)
        write_file(
            self.paths.passwords_file,
            json.dumps({key: secrets.token_urlsafe(24) for key in PASSWORD_KEYS}),
        )
        creds = s3server.S3Credentials.generate()
        write_file(self.paths.s3_access_key_file, creds.access_key + "\n")
        write_file(self.paths.s3_secret_key_file, creds.secret_key + "\n")
        ensure_dir(self.paths.tls_dir, mode=0o755)
        tls.create_ca(self.paths.ca_cert, self.paths.ca_key, f"pgbackups {self.name} CA")
        s3_host = self.facts.address(netns.S3) if machines else None
        dns_names, ip_addresses = _names_for(s3_host)
        tls.issue_cert(
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            ca_cert=self.paths.ca_cert,
            ca_key=self.paths.ca_key,
            cert=self.paths.s3_cert,
            key=self.paths.s3_key,
            common_name=s3_host or "localhost",
            owner=config_owner(owner),  # rclone reads the key as the database user
        )
        self._issue_etcd_certs()
        ensure_dir(self.paths.etcd_dir, mode=0o700, owner=owner)
        ensure_dir(self.paths.s3_dir, mode=0o700, owner=owner)
        self._make_s3_dirs(s3server.DEFAULT_BUCKET)
        for unit in self.units():
            unit.prepare()
            if tls_on:
                self.issue_unit_tls(unit)

    def _tail(self, log_file: Path, lines: int = 12) -> str:
        """The end of a daemon's log (the database user's file: no link followed)."""
        owner = self.db_user.uid if os.geteuid() == 0 else None
        text = logfiles.tail(log_file, lines, self.paths.root, owner)
        if text is None:
            return f"no log at {log_file}"
        body = "\n".join("    " + line for line in text)
        return f"last lines of {log_file}:\n{body}"

    def _make_s3_dirs(self, bucket: str) -> None:
        """The S3 server's folders inside its own (the database user's) folder: made by
        that user, so root walks no name it controls."""
        paths = self.paths
        make_dirs_as(self.db_user, [paths.s3_data, paths.s3_data / bucket, paths.s3_cache])

    # --- start -------------------------------------------------------------------------

    def _start_etcd(self, progress: Progress) -> None:
        state = self.state()
        host = self.facts.address(netns.DCS, state)
        with self.facts.inside(netns.DCS):
            for port in (state.etcd_client_port, state.etcd_peer_port):
                ports_mod.require_free(port, f"etcd of {self.name}", host)
            pid = processes.spawn(
                etcd_mod.argv(
                    programs.find("etcd"),
                    name=self.name,
                    data_dir=self.paths.etcd_data,
                    client_port=state.etcd_client_port,
                    peer_port=state.etcd_peer_port,
                    tls=self.facts.etcd_tls,
                    host=host,
                ),
                log_file=self.paths.etcd_log,
                user=self.db_user,
            )
        self.record_service(ETCD, ProcessRecord.of(pid))
        progress.wait(
            f"etcd on {etcd_mod.client_url(state.etcd_client_port, host)} (pid {pid})",
            lambda: etcd_mod.is_healthy(state.etcd_client_port, self.facts.etcd_tls, host=host),
            timeout=30,
            check=lambda: self._check_service(ETCD, "etcd", self.paths.etcd_log),
        )

    def _start_s3(self, progress: Progress, *, behind_relay: bool = False) -> None:
        state = self.state()
        host = self.facts.address(netns.S3, state)
        if behind_relay:
            # The S3 machine's own loopback: only a relay on that machine reaches it.
            host = etcd_mod.LOOPBACK
        name = self.s3().host
        rclone = programs.install_rclone(self.home)
        self._make_s3_dirs(state.bucket)
        self._report_s3_cache(progress)
        with self.facts.inside(netns.S3):
            ports_mod.require_free(state.s3_port, f"S3 of {self.name}", host)
            pid = processes.spawn(
                s3server.argv(
                    rclone,
                    data_dir=self.paths.s3_data,
                    port=state.s3_port,
                    cert=self.paths.s3_cert,
                    key=self.paths.s3_key,
                    cache_dir=self.paths.s3_cache,
                    host=host,
                ),
                log_file=self.paths.s3_log,
                user=self.db_user,
                env=s3server.env(self.s3_credentials()),
            )
        self.record_service(S3, ProcessRecord.of(pid))

        def ready() -> bool:
            with self.facts.inside(netns.S3) if behind_relay else contextlib.nullcontext():
                return s3server.is_ready(
                    state.s3_port, self.paths.ca_cert, host=host, server_name=name
                )

        progress.wait(
            f"S3 server on https://{name}:{state.s3_port} (pid {pid})",
            ready,
            timeout=30,
            check=lambda: self._check_service(S3, "S3 server (rclone)", self.paths.s3_log),
        )

    def _report_s3_cache(self, progress: Progress) -> None:
        """Say so when an older pgbackups' write-back cache still holds files.

        Such a cache may hold the only copy of an object that rclone acknowledged and
        never wrote to the data directory (docs/reliability.md), so it is never deleted
        here: the server now runs without that cache and would not read it either, and
        only the user can tell whether a file there is newer than the data directory's.
        """
        leftovers = s3server.cache_leftovers(self.paths.s3_cache)
        if leftovers:
            message = (
                f"S3: {len(leftovers)} file(s) remain in the old rclone write-back cache "
                f"{self.paths.s3_cache / 'vfs'}; they are not served. Compare them with "
                f"{self.paths.s3_data} and delete that directory once nothing there is "
                "missing from the data directory"
            )
            if progress.quiet:
                log.warning("%s", message)
            else:  # the CLI prints warnings too: once is enough
                progress.say(message)

    def _check_service(self, key: str, what: str, log_file: Path) -> None:
        proc = self.service(key)
        if proc is not None and not proc.is_ours():
            raise StartError(f"{what} exited during start; {self._tail(log_file)}")

    def _check_unit(self, unit: Unit) -> None:
        proc = unit.process()
        if proc is not None and not proc.is_ours():
            raise StartError(
                f"unit {unit.name}: patroni exited during start; {self._tail(unit.log_file)}"
            )

    def _is_primary(self, unit: Unit) -> bool:
        try:
            if not unit.client(timeout=2).is_primary():
                return False
        except PatroniUnavailable:
            return False
        return unit.accepts_writes()

    def _wait_primary(self, candidates: Sequence[Unit], progress: Progress) -> Unit:
        found: list[Unit] = []

        def ready() -> bool:
            found[:] = [u for u in candidates if self._is_primary(u)]
            return bool(found)

        def check() -> None:
            alive = [u for u in candidates if u.process() is None or u.is_running()]
            if not alive:
                self._check_unit(candidates[0])

        what = (
            f"{candidates[0].name} to become primary"
            if len(candidates) == 1
            else "a primary that accepts writes"
        )
        progress.wait(what, ready, timeout=PRIMARY_TIMEOUT, check=check)
        return found[0]

    def _wait_replicas(self, replicas: Sequence[Unit], progress: Progress) -> list[str]:
        """Wait for each replica to stream. Returns the failures (one line each) and marks
        those units with a start-failure status, so that ``status`` shows them."""
        failures: list[str] = []
        for unit in replicas:
            try:
                progress.wait(
                    f"{unit.name} to stream from the primary",
                    unit.is_streaming,
                    timeout=REPLICA_TIMEOUT,
                    check=lambda u=unit: self._check_unit(u),  # type: ignore[misc]
                )
                self._clear_start_failure(unit)
            except StartError as exc:
                failures.append(str(exc))
                self.set_status(unit.name, "blocked", f"{START_FAILED_PREFIX}: see {unit.log_file}")
        return failures

    def _clear_start_failure(self, unit: Unit) -> None:
        _status, message = self.get_status(unit.name)
        if message.startswith(START_FAILED_PREFIX):
            with self.store.transaction() as state:
                state.statuses.pop(unit.name, None)

    def _complete_secrets(self) -> None:
        """Add what a cluster made by an older pgbackups lacks: a password (Patroni's REST
        API got one later) and etcd's certificates."""
        data = json.loads(self.paths.passwords_file.read_text())
        missing = [key for key in PASSWORD_KEYS if not data.get(key)]
        if missing:
            data.update({key: secrets.token_urlsafe(24) for key in missing})
            write_file(self.paths.passwords_file, json.dumps(data), owner=self.db_user)
            log.info("%s: generated the missing passwords %s", self.name, ", ".join(missing))
        if not (self.paths.etcd_cert.is_file() and self.paths.etcd_client_cert.is_file()):
            self._issue_etcd_certs()

    def _issue_etcd_certs(self) -> None:
        etcd_mod.issue_certs(
            self.facts.etcd_tls,
            self.paths.ca_key,
            client_name=f"{self.name}-etcd-client",
            owner=self.db_user,
            host=self.facts.address(netns.DCS),
        )

    # --- machines ------------------------------------------------------------------------

    def _ensure_network(self, progress: Progress) -> None:
        """On machines: the cluster's network with a machine for etcd, S3 and each unit.
        A network that a killed run left while nothing of the cluster runs is made anew."""
        network = self.facts.network()
        if network is None:
            return
        problem = netns.available()
        if problem is not None:
            raise PgbackupsError(f"cluster {self.name} runs its parts as machines, but {problem}")
        if netns.exists(network) and not self.any_running():
            removed = netns.destroy(network)
            progress.say(f"removed the network a stopped run left: {', '.join(removed)}")
        machines = [netns.DCS, netns.S3, *(u.machine for u in self.units())]
        netns.create(network, machines, home=str(self.home), cluster=self.name)
        progress.say(f"network {network.subnet}: " + ", ".join(
            f"{m} {network.address(m)}" for m in machines
        ))  # fmt: skip

    def _destroy_network(self, progress: Progress) -> None:
        network = self.facts.network()
        if network is not None and netns.available() is None:
            removed = netns.destroy(network)
            if removed:
                progress.say(f"removed network {network.subnet} ({len(removed)} namespaces)")

    def _machines_network(self) -> netns.Network:
        network = self.facts.network()
        if network is None:
            raise UsageError(f"cluster {self.name} runs on loopback: it has no network to break")
        return network

    def cut(self, machine: str) -> None:
        """Fault injection (tests): take ``machine``'s cable out (``u0``, ``s3``, ``dcs``)."""
        netns.cut(self._machines_network(), machine)

    def heal(self, machine: str) -> None:
        """Put ``machine``'s cable back."""
        netns.heal(self._machines_network(), machine)

    def shape(
        self, machine: str, *, rate: str | None, delay_ms: float = 0, burst: str = "32kbit"
    ) -> None:
        """A network profile on ``machine``'s link (``unshape`` removes it)."""
        netns.shape(self._machines_network(), machine, rate=rate, delay_ms=delay_ms, burst=burst)

    def unshape(self, machine: str) -> None:
        netns.unshape(self._machines_network(), machine)

    def restart_s3(self, *, behind_relay: bool, progress: Progress | None = None) -> None:
        """Restart the S3 server on machines: on the S3 machine's loopback when
        ``behind_relay`` (the benchmark's link emulator then listens on its address and
        port: benchmarks/linkemu.py), else on its address as ``up`` starts it."""
        self._machines_network()
        progress = progress or Progress(quiet=True)
        self.stop_service(S3, progress)
        self._start_s3(progress, behind_relay=behind_relay)

    def network_up(self) -> bool:
        """Loopback, or the cluster's network exists: its machines can be talked to."""
        network = self.facts.network()
        return network is None or netns.exists(network)

    def start(self, progress: Progress | None = None, *, fresh: bool = False) -> None:
        """Start whatever of this cluster is not running, and wait until the primary
        accepts writes and every replica streams. On a failure of etcd, S3 or every
        unit, what this call started is stopped again; a replica that fails is left as
        ``status`` shows it."""
        progress = progress or Progress(quiet=True)
        self._ensure_network(progress)
        with self.facts.control():
            self._start(progress, fresh=fresh)

    def _start(self, progress: Progress, *, fresh: bool) -> None:
        started: list[str] = []
        self._complete_secrets()
        try:
            if not self.service_running(ETCD):
                started.append(ETCD)
                self._start_etcd(progress)
            if not self.service_running(S3):
                started.append(S3)
                self._start_s3(progress)
            units = self.units()
            if not units:
                raise PgbackupsError(f"cluster {self.name} has no units")
            stopped = [u for u in units if not u.is_running()]
            for unit in stopped:
                # A postmaster left by this unit's dead Patroni may hold its ports:
                # unit.start() stops it first, so they are not checked then.
                if unit.postmaster_pid() is not None:
                    continue
                for port, what in ((unit.pg_port, "PostgreSQL"), (unit.rest_port, "Patroni REST")):
                    ports_mod.require_free(port, f"{unit.name} {what}")
            if fresh:
                # Unit 0 bootstraps alone, so that it becomes the primary; then the rest.
                first = units[0]
                started.append(first.name)
                first.start()
                progress.say(f"{first.name}: patroni started (pid {_pid(first)})")
                primary = self._wait_primary([first], progress)
                with self.store.transaction() as state:
                    state.bootstrapped = True
                rest = units[1:]
            else:
                running = [u for u in units if u not in stopped]
                for unit in stopped:
                    started.append(unit.name)
                    unit.start()
                    progress.say(f"{unit.name}: patroni started (pid {_pid(unit)})")
                primary = self._wait_primary(running + stopped, progress)
                rest = []
            for unit in rest:
                started.append(unit.name)
                unit.start()
                progress.say(f"{unit.name}: patroni started (pid {_pid(unit)})")
            self._clear_start_failure(primary)
        except (PgbackupsError, OSError, KeyboardInterrupt):
            progress.say("start failed; stopping what this command started")
            self._stop_parts(started, progress)
            raise
        failures = self._wait_replicas(
            [u for u in self.units() if u.name != primary.name], progress
        )
        if failures:
            raise StartError(
                "; ".join(failures)
                + f" -- the other units are up (see pgbackups status --name {self.name})"
            )

    # --- stop ------------------------------------------------------------------------

    def _stop_parts(self, names: Sequence[str], progress: Progress) -> None:
        units = {u.name: u for u in self.units()}
        for name in reversed(names):
            if name in units:
                units[name].stop()
            else:
                self.stop_service(name, progress)

    def stop_service(
        self, key: str, progress: Progress | None = None, *, sig: int = signal.SIGTERM
    ) -> None:
        """Stop the process recorded under ``key`` if it is still ours; forget the record."""
        progress = progress or Progress(quiet=True)
        proc = self.service(key)
        if proc is None:
            return
        if proc.is_ours():
            processes.stop(proc.pid, timeout=30, sig=sig)
            progress.say(f"stopped {key} (pid {proc.pid})")
        elif processes.is_alive(proc.pid):
            log.warning("%s: pid %d belongs to another process now; not stopping it", key, proc.pid)
            forget_record(lambda: self.record_service(key, None), key)
            return
        # What the daemon started and left in its session (a TLS server's workers).
        _ok, leftovers = processes.stop_session(proc.pid, proc.start_time)
        for info in leftovers:
            progress.say(f"stopped {info.describe()}, left by {key}")
        forget_record(lambda: self.record_service(key, None), key)

    def stop_recovery(self, unit: Unit, progress: Progress | None = None) -> None:
        """Stop the PostgreSQL a restore started on ``unit``'s restored data
        (UnitServices.start_recovery) if it still runs, and forget its record."""
        self._stop_postmaster(recovery_key(unit), progress)

    def _stop_postmaster(self, key: str, progress: Progress | None) -> None:
        # SIGINT: a fast shutdown. SIGTERM is PostgreSQL's smart shutdown, which waits for
        # every client to leave; Patroni, once it took the restored PostgreSQL over, never
        # does, and `down` waited 30 s and then SIGKILLed the primary.
        self.stop_service(key, progress, sig=signal.SIGINT)

    def stop(self, progress: Progress | None = None) -> None:
        """Stop every process this cluster started, by PID: replicas, the primary, S3, etcd."""
        progress = progress or Progress(quiet=True)
        units = self.units()
        # Without its network (a killed run's, already gone) no primary can be asked.
        primary = self.primary() if self.network_up() else None
        replicas = [u for u in units if primary is None or u.name != primary.name]

        def stop_unit(unit: Unit) -> None:
            pid = _pid(unit)
            if unit.stop():
                if pid:
                    progress.say(f"stopped {unit.name} (pid {pid})")
            else:
                progress.say(f"{unit.name} (pid {pid}) did not stop")

        # Other daemons recorded for this cluster (the pgBackRest TLS servers) go first;
        # a restore's PostgreSQL after the units: once Patroni took it over, Patroni stops
        # it (stop_recovery).
        recoveries = [k for k in self.state().processes if k.startswith(RECOVERY_PREFIX)]
        for key in sorted(self.state().processes):
            if key not in (ETCD, S3) and key not in recoveries:
                self.stop_service(key, progress)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(stop_unit, replicas))
        if primary is not None:
            stop_unit(primary)
        for key in recoveries:
            self._stop_postmaster(key, progress)
        self.stop_service(S3, progress)
        self.stop_service(ETCD, progress)
        self.stop_leftovers(progress)
        self._destroy_network(progress)

    def stop_leftovers(self, progress: Progress | None = None) -> list[processes.ProcessInfo]:
        """Stop every process still using this cluster's directories once its recorded
        processes are stopped: an orphan of a daemon that died, or a pgBackRest worker
        that left its session. Returns what was stopped.

        A process with a controlling terminal was started by a person (a shell or a
        ``tail`` in a log directory), never by the cluster, whose daemons run in
        sessions of their own: it is named and left alone.
        """
        progress = progress or Progress(quiet=True)
        ancestors = _ancestors()
        found = [p for p in processes.processes_using(self.paths.root) if p.pid not in ancestors]
        for info in found:
            if info.has_terminal:
                progress.say(f"left alone (it has a terminal): {info.describe()}")
        stopped = processes.stop_processes([p for p in found if not p.has_terminal])
        for info in stopped:
            progress.say(f"stopped {info.describe()}, still running after the cluster stopped")
            log.warning("cluster %s: stopped leftover %s", self.name, info.describe())
        return stopped

    def purge_listing(self) -> list[str]:
        """What :meth:`purge` deletes, one line each, indented as ``down --purge`` prints it."""
        return [
            f"  {self.paths.root}",
            *(f"    {u.name} data: {u.data_dir}" for u in self.units()),
            f"    S3 data: {self.paths.s3_data}",
            f"    etcd data: {self.paths.etcd_data}",
            f"    CA, certificates, keys, passwords: {self.paths.tls_dir},"
            f" {self.paths.secrets_dir}",
        ]

    def purge(self, progress: Progress | None = None) -> list[str]:
        """Stop everything and delete the cluster's directory; returns what was removed."""
        progress = progress or Progress(quiet=True)
        self.stop(progress)
        removed = self.purge_listing()
        files.remove_tree(self.paths.root)  # follows no link of the database user's
        return removed

    # --- membership ------------------------------------------------------------------

    def add_unit(
        self,
        progress: Progress | None = None,
        config: WorkloadConfig | None = None,
        announce: Callable[[str], object] | None = None,
    ) -> Unit:
        """A new unit (next number) that joins as a replica; waits until it streams.
        ``announce(name)`` runs once the unit is in the state and before it starts: what
        Juju's peer-relation-joined is to the other units (on machines their pg_hba must
        admit the new unit's address before it can copy the primary)."""
        progress = progress or Progress(quiet=True)
        with self.facts.control():
            return self._add_unit(progress, config, announce)

    def _add_unit(
        self,
        progress: Progress,
        config: WorkloadConfig | None,
        announce: Callable[[str], object] | None,
    ) -> Unit:
        if self.primary() is None:
            raise PgbackupsError(
                f"cluster {self.name} has no running primary; run `pgbackups up` first"
            )
        with self.store.transaction() as state:
            used = {
                (r.pg_port - state.base_port - ports_mod.UNIT_OFFSET) // ports_mod.PORTS_PER_UNIT
                for r in state.units.values()
            }
            slot = next((s for s in range(ports_mod.MAX_UNITS) if s not in used), None)
            if slot is None:
                raise PgbackupsError(f"a local cluster has at most {ports_mod.MAX_UNITS} units")
            index = state.next_index
            pg, rest, pgbr = ports_mod.unit_ports(state.base_port, slot)
            if not state.machines:  # a new machine has every port free
                for port in (pg, rest):
                    ports_mod.require_free(port, "for a new unit")
            name = f"{self.name}/{index}"
            state.units[name] = UnitRecord(index, pg, rest, pgbr)
            state.next_index = index + 1
        unit = self.unit(name)
        network = self.facts.network()
        if network is not None:
            netns.add_machine(network, unit.machine)
        # Left over from an old unit with this number (no link below it is followed).
        files.remove_tree(unit.paths.root, missing_ok=True)
        unit.prepare()
        if self.tls_enabled:
            self.issue_unit_tls(unit)
        try:
            if announce is not None:
                announce(unit.name)
            unit.start(config)
        except PgbackupsError:
            self._forget_unit(unit)
            self._remove_machine(unit)
            raise
        progress.say(f"{unit.name}: patroni started (pid {_pid(unit)})")
        failures = self._wait_replicas([unit], progress)
        if failures:
            raise StartError(failures[0])
        return unit

    def _forget_unit(self, unit: Unit) -> None:
        with self.store.transaction() as state:
            state.units.pop(unit.name, None)
            state.statuses.pop(unit.name, None)
            if state.leader == unit.name:
                remaining = state.sorted_units()
                state.leader = remaining[0][0] if remaining else ""

    def _remove_machine(self, unit: Unit) -> None:
        network = self.facts.network()
        if network is not None:
            netns.remove_machine(network, unit.machine)

    def remove_unit(self, ref: str, progress: Progress | None = None) -> None:
        """Stop a unit (switching the primary role away first) and delete its files."""
        progress = progress or Progress(quiet=True)
        with self.facts.control():
            self._remove_unit(ref, progress)

    def _remove_unit(self, ref: str, progress: Progress) -> None:
        unit = self.unit(ref)
        others = [u for u in self.units() if u.name != unit.name]
        if not others:
            raise PgbackupsError(f"{unit.name} is the last unit; use `pgbackups down --purge`")
        primary = self.primary()
        if primary is not None and primary.name == unit.name:
            target = next((u for u in others if u.is_running()), None)
            if target is not None:
                self.switchover(target.name, progress)
        pid = _pid(unit)
        self.stop_service(tls_server_key(unit), progress)  # the unit's own TLS server
        if not unit.stop():
            raise PgbackupsError(f"{unit.name} (pid {pid}) did not stop; not removing it")
        progress.say(f"stopped {unit.name}" + (f" (pid {pid})" if pid else ""))
        self.stop_recovery(unit, progress)  # its record, or a restore's PostgreSQL left
        self._forget_unit(unit)
        self._remove_machine(unit)
        with contextlib.suppress(OSError):  # no link below it is followed
            files.remove_tree(unit.paths.root)
        progress.say(f"removed {unit.name} and {unit.paths.root}")

    def switchover(self, ref: str, progress: Progress | None = None) -> None:
        """Make ``ref`` the primary (Patroni switchover) and wait until the others stream."""
        progress = progress or Progress(quiet=True)
        with self.facts.control():
            self._switchover(ref, progress)

    def _switchover(self, ref: str, progress: Progress) -> None:
        target = self.unit(ref)
        primary = self.primary()
        if primary is None:
            raise PgbackupsError(f"cluster {self.name} has no running primary")
        if primary.name == target.name:
            raise PgbackupsError(f"{target.name} is already the primary")
        if not target.is_running():
            raise PgbackupsError(f"{target.name} is not running")
        progress.say(f"switchover {primary.name} -> {target.name}")
        try:
            primary.client(timeout=90).switchover(primary.member_name, target.member_name)
        except PatroniUnavailable as exc:
            raise PgbackupsError(f"switchover to {target.name} failed: {exc}") from exc
        self._wait_primary([target], progress)
        failures = self._wait_replicas(
            [u for u in self.units() if u.name != target.name and u.is_running()], progress
        )
        if failures:
            raise StartError("; ".join(failures))


def forget_record(forget: Callable[[], None], what: str) -> None:
    """Forget a stopped process's record, if the state can be written. On a full disk it
    stays: harmless (a record is trusted only with its start time, so a dead or reused PID
    is never taken for ours), and it must not stop ``down --purge`` from freeing space."""
    try:
        forget()
    except WriteFailed as exc:
        log.warning("%s stopped, but its record stays: %s", what, exc)


def _ancestors() -> set[int]:
    """This process and its parents: never stopped for sitting in a cluster directory."""
    found = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        info = processes.process_info(pid)
        if info is None:
            break
        pid = info.ppid
    return found


def _names_for(address: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A certificate's names: ``localhost``/127.0.0.1 on loopback; on a machine its
    address, as an IP (what Python and libpq compare) and as a DNS name (what pgBackRest
    2.45 compares: it does not read IP names)."""
    if address is None:
        return ("localhost",), ("127.0.0.1",)
    return (address,), (address,)


def network_in_use(record: netns.NetworkRecord) -> bool:
    """A network is in use while the command that made it runs (an ``up`` whose servers
    have not started yet) or while any process runs in one of its namespaces, whoever's
    it is (another home's cluster, another tool's machines). Anything else is what a
    killed run left: nothing runs there, and a cluster's ``up`` makes its network anew."""
    return record.creator_alive() or bool(netns.network_pids(netns.network_of(record.net_id)))


def network_leftovers() -> list[str]:
    """The namespaces :func:`sweep_networks` would remove now (none without root)."""
    return netns.leftovers(network_in_use) if netns.available() is None else []


def sweep_networks(progress: Progress | None = None) -> list[str]:
    """Remove the networks (and stray namespaces) that killed runs left; as root only."""
    if netns.available() is not None:
        return []
    removed = netns.sweep(network_in_use)
    if removed and progress is not None:
        progress.say(f"removed network namespaces a killed run left: {', '.join(removed)}")
    return removed


def _pid(unit: Unit) -> int | None:
    proc = unit.process()
    return proc.pid if proc else None


# --- module-level commands ------------------------------------------------------------


def up(
    name: str = DEFAULT_NAME,
    *,
    units: int | None = None,
    tls: bool | None = None,
    machines: bool | None = None,
    home: Path | None = None,
    progress: Progress | None = None,
    agent: bool = True,
) -> Cluster:
    """Create (or restart) cluster ``name`` and return it once the primary accepts writes
    and every replica streams; then start its agent (unless ``agent`` is False: the
    benchmarks time commands that would otherwise wait for its passes). ``machines``: each
    unit, S3 and etcd on a machine of its own (a network namespace); None:
    :func:`machines_by_default`."""
    progress = progress or Progress(quiet=True)
    cluster = Cluster(name, home)
    if units is not None and not 1 <= units <= ports_mod.MAX_UNITS:
        raise UsageError(f"--units must be between 1 and {ports_mod.MAX_UNITS} (got {units})")
    programs.check_all()
    check_traversable(cluster.home, cluster.db_user)
    with cluster.operation("up"):
        if cluster.exists():
            state = cluster.state()
            if units is not None and units != len(state.units):
                raise UsageError(
                    f"cluster {name} exists with {len(state.units)} unit(s); "
                    "use add-unit/remove-unit to change that"
                )
            if tls is not None and tls != state.tls:
                raise UsageError(f"cluster {name} exists with tls={'on' if state.tls else 'off'}")
            if machines is not None and machines != state.machines:
                raise UsageError(
                    f"cluster {name} exists with its units "
                    + ("as machines" if state.machines else "on loopback")
                )
            sweep_networks(progress)
            if cluster.is_running():
                raise PgbackupsError(
                    f"cluster {name} is already running (pgbackups status --name {name})"
                )
            progress.say(
                f"starting cluster {name} ({len(state.units)} unit(s)) from {cluster.paths.root}"
            )
            # A cluster whose first start failed before unit 0 bootstrapped starts as new.
            cluster.start(progress, fresh=not state.bootstrapped)
        else:
            n = units if units is not None else 1
            on_machines = machines_by_default() if machines is None else machines
            if on_machines:
                problem = netns.available()
                if problem is not None:
                    raise UsageError(f"--machines: {problem}")
                sweep_networks(progress)
            progress.say(
                f"creating cluster {name} with {n} unit(s)"
                + (" as machines" if on_machines else "")
                + f" in {cluster.paths.root}"
            )
            cluster._create(n, bool(tls), on_machines)
            cluster.start(progress, fresh=True)
        if agent:
            pid = cluster.start_agent()
            progress.say(f"agent: update-status every {AGENT_INTERVAL_SECONDS:g}s (pid {pid})")
    return cluster


def down(
    name: str = DEFAULT_NAME,
    *,
    purge: bool = False,
    home: Path | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Stop the cluster's processes (by PID). With ``purge``, delete everything of it
    (returns the list of what was removed)."""
    progress = progress or Progress(quiet=True)
    cluster = Cluster.load(name, home)
    with cluster.operation("down"):
        sweep_networks(progress)
        if purge:
            return cluster.purge(progress)
        cluster.stop(progress)
    return []


# Set to "0" to keep the loopback default as root (PGBACKUPS_MACHINES=1 asks for machines).
MACHINES_ENV = "PGBACKUPS_MACHINES"


def machines_by_default() -> bool:
    """Whether a new cluster's parts are machines when ``up`` is not told: see README
    ("Units as machines") for why. ``PGBACKUPS_MACHINES=0|1`` overrides."""
    wanted = os.environ.get(MACHINES_ENV, "")
    if wanted in ("0", "1"):
        return wanted == "1"
    return DEFAULT_MACHINES and netns.available() is None


# The default for root (namespaces need root); see machines_by_default.
DEFAULT_MACHINES = False
