"""PostgreSQL under Patroni, and the pgBackRest TLS server, on a Juju machine.

``MachineWorkload`` is the shared :class:`pgbackups.workload.workload.UnitWorkload` with
this machine's parts: packages from the machine's own archive (``postgresql-<version>``
for the version its system ships, read from ``/etc/os-release``: :data:`POSTGRESQL_BY_SYSTEM`;
``patroni``, ``python3-pysyncobj``, ``pgbackrest``), fixed paths and ports
(:class:`MachinePaths`), systemd units (:mod:`systemd_services`) and Patroni's Raft as the DCS
(:mod:`raft_dcs`), whose member runs as a service of its own beside Patroni. The
configuration files are rendered by the shared workload through the core's adapters;
this module adds only what is specific to a Juju machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgbackups.adapters import files, processes
from pgbackups.adapters.patroni import PatroniPasswords, PatroniUnavailable
from pgbackups.core.host import CommandResult, Peer, TlsMaterial, WorkloadConfig, WorkloadError
from pgbackups.workload.layout import PeerLayout, UnitFacts, UnitLayout
from pgbackups.workload.services import Service
from pgbackups.workload.workload import UnitWorkload
from raft_dcs import RaftDcs
from systemd_services import SystemdServices

log = logging.getLogger(__name__)

# The PostgreSQL each supported system ships in its own archive, by /etc/os-release's
# (ID, VERSION_ID): the charm installs that one, never a version from another archive.
POSTGRESQL_BY_SYSTEM = {
    ("ubuntu", "24.04"): "16",
    ("ubuntu", "22.04"): "14",
    ("debian", "12"): "15",
}
OS_RELEASE = "/etc/os-release"


def read_os_release(path: str | None = None) -> dict[str, str]:
    """``/etc/os-release`` as a map (quotes removed); empty when it cannot be read."""
    try:
        text = Path(path or OS_RELEASE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def postgresql_version(release: dict[str, str]) -> str:
    """The PostgreSQL major version this system ships ("" for a system we do not know)."""
    return POSTGRESQL_BY_SYSTEM.get((release.get("ID", ""), release.get("VERSION_ID", "")), "")


def system_postgresql_version() -> str:
    return postgresql_version(read_os_release())


def unsupported_system(release: dict[str, str]) -> str | None:
    """Why the charm cannot install on this system (None: it can)."""
    if postgresql_version(release):
        return None
    name = release.get("PRETTY_NAME") or (
        f"{release.get('ID', '?')} {release.get('VERSION_ID', '?')}".strip()
    )
    supported = ", ".join(f"{os} {v}" for os, v in POSTGRESQL_BY_SYSTEM)
    return f"unsupported system {name or 'unknown'} (supported: {supported})"


def apt_packages(pg_version: str) -> tuple[str, ...]:
    return (
        f"postgresql-{pg_version}",
        f"postgresql-client-{pg_version}",
        "patroni",
        "python3-pysyncobj",  # Patroni's Raft DCS
        "pgbackrest",
        "openssl",
    )


# apt-get waits this long for the dpkg lock (cloud-init or unattended-upgrades may hold it
# on a fresh machine) instead of failing at once.
APT_LOCK_TIMEOUT = 600
APT = ("apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}")
PG_PORT = 5432
REST_PORT = 8008
TLS_SERVER_PORT = 8432
SWITCHOVER_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class MachinePaths:
    """Where a unit keeps its files, and whose they are (docs/security.md, "Files and
    privileges"): root's ``etc_dir`` (configuration, 0750 root:postgres), ``state_dir``
    (0755) with root's ``tls_dir`` (0750 root:postgres) and the database user's own
    folders in it (``raft_dir``, ``patroni_dir``, pgBackRest's lock and spool), and the
    database user's ``log_dir``. Root never writes in a folder of the database user's."""

    # The version this machine's system ships ("" on a system the charm does not
    # support: the install hook refuses before anything uses it).
    pg_version: str = field(default_factory=system_postgresql_version)
    state_dir: str = "/var/lib/pgbackups"
    etc_dir: str = "/etc/pgbackups"
    log_dir: str = "/var/log/pgbackups"
    systemd_dir: str = "/etc/systemd/system"
    # Debian's shared socket directory: every local user can reach the socket, so it
    # must not be what lets them in. pg_hba (adapters/patroni.py) lets the superuser in
    # over it by peer for postgres (and root) only, and anyone else by password.
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
    def raft_config(self) -> str:
        """This unit's Raft member's (``patroni_raft_controller``) configuration."""
        return f"{self.etc_dir}/raft.yaml"

    @property
    def raft_dir(self) -> str:
        return f"{self.state_dir}/raft"

    @property
    def tls_dir(self) -> str:
        return f"{self.state_dir}/tls"

    @property
    def backup_tls_dir(self) -> str:
        """This unit's pgBackRest TLS key and certificates (from the application's CA)."""
        return f"{self.state_dir}/pgbackrest-tls"

    @property
    def patroni_dir(self) -> str:
        """The database user's: Patroni writes its pgpass here."""
        return f"{self.state_dir}/patroni"

    @property
    def pgpass(self) -> str:
        return f"{self.patroni_dir}/pgpass"

    @property
    def pgbackrest_lock_dir(self) -> str:
        return f"{self.state_dir}/pgbackrest-lock"

    @property
    def pgbackrest_spool_dir(self) -> str:
        return f"{self.state_dir}/pgbackrest-spool"

    @property
    def pgbackrest_log_dir(self) -> str:
        return f"{self.log_dir}/pgbackrest"


def member_name(unit_name: str) -> str:
    """Patroni's member name of a unit (no ``/``: it becomes a DCS key)."""
    return unit_name.replace("/", "-")


def machine_facts(
    paths: MachinePaths,
    *,
    app: str,
    unit: str,
    address: str,
    peers: Sequence[Peer],
    tls: TlsMaterial | None,
    passwords: PatroniPasswords | None,
    stanza: str,
    backup_tls: TlsMaterial | None = None,
) -> UnitFacts:
    """This unit and its peers as the workload sees them. Every unit has the same paths
    and ports on its own machine, reached at its peer-relation address. A unit's
    pgBackRest certificate (from the application's CA: :mod:`backup_tls`) is named after
    its member name, which is what the peers' TLS servers admit."""
    layout = UnitLayout(
        unit=unit,
        scope=app,
        member=member_name(unit),
        stanza=stanza,
        address=address,
        data_dir=paths.data_dir,
        socket_dir=paths.socket_dir,
        bin_dir=paths.bin_dir,
        patroni_config=paths.patroni_config,
        pgbackrest_config=paths.pgbackrest_config,
        pgpass=paths.pgpass,
        s3_ca_file=f"{paths.etc_dir}/s3-ca-chain.pem",
        pgbackrest_log_dir=paths.pgbackrest_log_dir,
        pgbackrest_lock_dir=paths.pgbackrest_lock_dir,
        pgbackrest_spool_dir=paths.pgbackrest_spool_dir,
        patroni_log_dir=paths.log_dir,
        pg_port=PG_PORT,
        rest_port=REST_PORT,
        tls_server_listen=address,
        tls_server_host=address,
        tls_server_port=TLS_SERVER_PORT,
    )
    return UnitFacts(
        layout=layout,
        peers=tuple(
            PeerLayout(
                member=member_name(p.name),
                cert_name=member_name(p.name),
                address=p.address,
                tls_server_host=p.address,
                tls_server_port=TLS_SERVER_PORT,
                data_dir=paths.data_dir,
                pg_port=PG_PORT,
                socket_dir=paths.socket_dir,
            )
            for p in sorted(peers, key=lambda p: p.name)
        ),
        tls=tls,
        passwords=passwords,
        backup_tls=backup_tls,
    )


Runner = Callable[..., CommandResult]


class MachineWorkload(UnitWorkload):
    """The shared workload, plus what only a Juju machine does: install the packages."""

    def __init__(
        self,
        facts: Callable[[], UnitFacts],
        paths: MachinePaths | None = None,
        *,
        run: Runner = processes.run,
    ) -> None:
        self.paths = paths or MachinePaths()
        self._run = run
        self.systemd = SystemdServices(
            patroni_config=self.paths.patroni_config,
            pgbackrest_config=self.paths.pgbackrest_config,
            raft_config=self.paths.raft_config,
            systemd_dir=self.paths.systemd_dir,
            run=run,
        )
        self.raft = RaftDcs(self.paths.raft_dir, run=run)
        super().__init__(facts, self.systemd, self.raft)

    def start_tls_server(self) -> None:
        """(Re)start the pgBackRest TLS server, once there is a peer for it to admit:
        without one its configuration has no ``tls-server-auth`` and pgBackRest refuses
        to start (systemd would restart it every few seconds, to no end). That happens on
        a unit that learns of a new unit's certificates before it sees it join (seen in
        charm/tests/machines, at scale-up): the hook defers until it does."""
        facts = self._facts()
        if not facts.peers:
            raise WorkloadError(
                f"{facts.layout.unit}: the pgBackRest TLS server waits for a peer to admit"
            )
        super().start_tls_server()

    def make_dirs(self) -> None:
        """The unit's folders (see :class:`MachinePaths`): root's where root writes, the
        database user's where its programs write. Each is made and checked without
        following a link (``files.ensure_dir``); the one folder inside a folder of the
        database user's (pgBackRest's log folder) is made by that user."""
        paths = self.paths
        db = self.db_user
        # The charm once gave these three to the database user: root takes them back
        # (each one's own name is in a folder of root's, so that is safe).
        files.ensure_dir(paths.state_dir, 0o755, taken_from=db)
        files.ensure_dir(paths.etc_dir, 0o750, files.config_owner(db), taken_from=db)
        files.ensure_dir(paths.tls_dir, 0o750, files.config_owner(db), taken_from=db)
        for d in (
            paths.raft_dir,
            paths.patroni_dir,
            paths.pgbackrest_lock_dir,
            paths.pgbackrest_spool_dir,
        ):
            files.ensure_dir(d, 0o700, db)
        files.ensure_dir(paths.log_dir, 0o750, db)
        files.make_dirs_as(db, [paths.pgbackrest_log_dir], 0o750)

    def unsupported(self) -> str | None:
        """Why this machine cannot run the workload (an unknown system), or None."""
        if self.paths.pg_version:
            return None
        return unsupported_system(read_os_release()) or "unsupported system"

    def install(self) -> bool:
        """Install the packages, hold them at that version (a later apt upgrade must not
        restart the database under Patroni), and drop Debian's default cluster (Patroni
        owns the data). Idempotent: a failed install is run again from the start."""
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        packages = apt_packages(self.paths.pg_version)
        update = self._run([*APT, "update", "-q"], timeout=APT_LOCK_TIMEOUT + 600, env=env)
        if not update.ok:
            log.error("apt-get update failed: %s", update.stderr.strip()[-500:])
            return False
        result = self._run(
            [*APT, "install", "-y", "-q", "--no-install-recommends", *packages],
            timeout=APT_LOCK_TIMEOUT + 1200,
            env=env,
        )
        if not result.ok:
            log.error("apt-get install failed: %s", result.stderr.strip()[-500:])
            return False
        hold = self._run(["apt-mark", "hold", *packages], timeout=120)
        if not hold.ok:
            log.warning("the packages are not held: %s", hold.stderr.strip()[-300:])
        # Debian starts a "main" cluster on install; it would hold port 5432.
        self._run(["pg_dropcluster", "--stop", self.paths.pg_version, "main"], timeout=120)
        for unit in ("patroni.service", "etcd.service"):
            self._run(["systemctl", "disable", "--now", unit], timeout=60)
        try:
            self.make_dirs()
        except (WorkloadError, OSError) as exc:
            log.error("could not make the unit's folders: %s", exc)
            return False
        try:
            self.systemd.write_units()
        except WorkloadError as exc:
            log.error("%s", exc)
            return False
        return True

    def switch_over_away(self) -> str | None:
        """If this member is the primary, hand the primary role to a streaming replica
        (Patroni's ``POST /switchover``, with the REST password) and return its member
        name; None when this member is not the primary. Raises WorkloadError when it is
        the primary and no replica can take over, or Patroni refuses."""
        facts = self._facts()
        own = facts.layout.member
        client = self._client(facts)
        try:
            members = client.cluster()
        except PatroniUnavailable as exc:
            raise WorkloadError(f"{facts.layout.unit}: no switchover, Patroni: {exc}") from exc
        if not any(m.is_primary and m.name == own for m in members):
            return None
        # The replica closest to the primary: least lag first (unknown lag last).
        replicas = sorted(
            (m for m in members if m.is_streaming and m.name != own),
            key=lambda m: (m.lag is None, m.lag or 0, m.name),
        )
        if not replicas:
            raise WorkloadError(f"{facts.layout.unit}: no streaming replica to switch over to")
        candidate = replicas[0].name
        # Patroni answers a switchover once it is done (or failed): far longer than a read.
        client.timeout = SWITCHOVER_TIMEOUT_SECONDS
        try:
            client.switchover(own, candidate)
        except PatroniUnavailable as exc:
            raise WorkloadError(f"{facts.layout.unit}: switchover to {candidate}: {exc}") from exc
        log.info("switched the primary over from %s to %s", own, candidate)
        return candidate

    # --- the Raft member, apart from Patroni -------------------------------------------

    def write_raft_config(self, facts: UnitFacts) -> bool:
        """Write the Raft member's configuration; True if it changed. It holds the Raft
        password: 0640, root's with the database user's group. The member reads it only
        when it starts (a running member follows membership changes by itself)."""
        return files.write_if_changed(
            self.raft.member_config(facts),
            self.paths.raft_config,
            files.config_owner(self.db_user),
            0o640,
        )

    def start_raft(self) -> None:
        """Start this unit's Raft member if it does not run (with its configuration
        written first). Raises WorkloadError when it does not run afterwards."""
        facts = self._facts()
        self.write_raft_config(facts)
        self.systemd.start_raft()
        if not self.systemd.is_raft_running():
            raise WorkloadError(f"{facts.layout.unit}: the Raft member does not run")

    def apply_config(self, config: WorkloadConfig) -> None:
        super().apply_config(config)
        facts = self._facts()
        if facts.passwords is not None:  # as Patroni's YAML, it waits for the password
            self.write_raft_config(facts)

    def start_database(self) -> None:
        """The Raft member first (Patroni is only its client), then Patroni. A Patroni
        that runs already is left alone, and so is the member's start: a Patroni of an
        older charm revision runs the member inside itself, on the same port and files."""
        if not self.systemd.is_running(Service.PATRONI):
            self.start_raft()
        super().start_database()

    def stop_database(self) -> None:
        """Stop Patroni (and PostgreSQL); this unit's Raft member keeps running, so that
        the others keep a quorum (a restore's leader bootstraps while every other unit's
        Patroni is stopped). After a Patroni of an older charm revision, which ran the
        member inside itself, the member takes over its files here."""
        super().stop_database()
        self.start_raft()

    # --- leaving the cluster, and the DCS on Raft ------------------------------------

    def leave_cluster(self) -> None:
        """This unit is being removed. In this order, because each step needs the one
        before it:

        1. switch over, if this member is the primary (a replica takes the role while
           this Patroni still hands it over; a failure is logged, the unit goes anyway);
        2. stop Patroni here (PostgreSQL with it), then this unit's Raft member, so that
           nothing of this unit acts in the cluster any more (a removed member still
           running would call elections of its own);
        3. remove this member from the Raft group through a partner that still runs
           Raft (this one, stopped, serves nothing).

        Raises WorkloadError when Patroni does not stop or no partner removes it."""
        try:
            self.switch_over_away()
        except WorkloadError as exc:
            log.warning("leaving as the primary without a switchover: %s", exc)
        super().stop_database()  # Patroni only: this class's would keep the member
        self.systemd.stop_raft()
        facts = self._facts()
        partner = self.raft.leave(facts)
        if partner is not None:
            log.info("left the Raft group (removed through %s)", partner)

    def forget_dcs_member(self, address: str) -> None:
        """Remove a departed unit from Raft through this member, once it no longer runs
        Patroni: a leaving unit removes itself after its stop (:meth:`leave_cluster`);
        this is for one that went without its hooks. Raises WorkloadError while Patroni
        still lists the member as running."""
        try:
            members = self._client().cluster()
        except PatroniUnavailable as exc:
            log.info("Patroni's member list is unknown (%s); removing %s anyway", exc, address)
            members = []
        running = [m.name for m in members if m.host == address and m.state != "stopped"]
        if running:
            raise WorkloadError(
                f"{running[0]} at {address} still runs Patroni: it leaves Raft after its stop"
            )
        self.raft.forget_member(self._facts(), address)

    def remove_dcs_state(self) -> None:
        """Delete this cluster's keys so that the next start bootstraps (a restore).
        ``patronictl remove`` deletes them through the Raft members, which run on every
        unit whether Patroni runs or not. A unit without peers whose Patroni is stopped
        instead starts its one-member group afresh: it stops its member, deletes the
        member's files (as the database user: its folder) and starts it again; so a
        group that still counts units gone without their hooks (no quorum, nothing
        patronictl could do) is no obstacle to a restore."""
        facts = self._facts()
        patroni_runs = self.systemd.is_running(Service.PATRONI)
        if patroni_runs or facts.peers:
            if not patroni_runs:
                self.start_raft()  # a no-op while it runs
            super().remove_dcs_state()
            return
        self.systemd.stop_raft()
        result = self._run(
            [
                "find",
                self.paths.raft_dir,
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "-type",
                "f",
                "-name",
                self.raft.data_files(facts) + "*",
                "-delete",
            ],
            user=self.db_user,
            timeout=60,
        )
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"{facts.layout.unit}: the Raft state was not removed: {reason}")
        log.info("removed this unit's Raft state (Patroni stopped, no other member)")
        self.start_raft()

    def installed_version(self) -> str | None:
        """The installed PostgreSQL package's version (Juju's application version)."""
        package = f"postgresql-{self.paths.pg_version}"
        result = self._run(["dpkg-query", "-W", "-f=${Version}", package], timeout=60)
        if not result.ok:
            return None
        return result.stdout.strip() or None
