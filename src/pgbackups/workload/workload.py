"""``UnitWorkload``: :class:`pgbackups.core.host.Workload` for one unit, on any host.

Patroni runs PostgreSQL; the pgBackRest TLS server runs beside it. Both configuration
files are rendered by the adapters (:mod:`pgbackups.adapters.patroni`,
:mod:`pgbackups.adapters.pgbackrest`) from the unit's :class:`~.layout.UnitFacts`; the
host injects how services run (:class:`~.services.ServiceRunner`) and the DCS
(:class:`~.dcs.Dcs`). Failures follow the protocol's convention: queries answer None when
they cannot tell, actions raise :class:`~pgbackups.core.host.WorkloadError`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from pgbackups.adapters import patroni, pgbackrest, postgres, processes
from pgbackups.adapters.files import config_owner, read_text, write_if_changed
from pgbackups.adapters.patroni import PatroniUnavailable
from pgbackups.adapters.processes import OsUser
from pgbackups.core.archive_health import ArchiverStats
from pgbackups.core.host import (
    CommandResult,
    DiskSpace,
    Recovery,
    RestoreTarget,
    WorkloadConfig,
    WorkloadError,
)
from pgbackups.workload import moveaside
from pgbackups.workload.dcs import Dcs, with_dcs
from pgbackups.workload.layout import UnitFacts, UnitLayout
from pgbackups.workload.services import Service, ServiceRunner

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
REST_TIMEOUT_SECONDS = 5.0
# Several Patroni loops (loop_wait is 3 s): a reload takes effect on the next one.
TAGS_TIMEOUT_SECONDS = 20.0
LEADER_POLL_SECONDS = 0.05
TLS_SERVER_START_SECONDS = 20.0
# Patroni's member states after a bootstrap it gave up (it may also just exit).
FAILED_STATES = frozenset({"start failed", "bootstrap failed", "crashed"})
# GET /patroni of a member whose data directory holds no cluster Patroni can start (what a
# killed replica creation left): Patroni waits for a person to reinitialize it.
STALLED_ROLE, STALLED_STATE = "uninitialized", "stopped"
# The restore's own pgBackRest spool, in the unit's (the database user's) spool folder.
RESTORE_SPOOL = "restore"
# What PostgreSQL started on restored data logs (start_recovery), beside Patroni's log.
RECOVERY_LOG = "postgresql-recovery.log"
# What the background removal of the data from before a restore says (rm -rf: errors only).
REMOVAL_LOG = "remove-old-data.log"
# The files of the data directory that are Patroni's rendering for this unit, not the
# backup's: the restored PostgreSQL starts with them, as Patroni would start it.
CARRIED_CONFIG = ("postgresql.conf", "postgresql.base.conf", "pg_ident.conf")
# One option of the postmaster command line Patroni writes (postmaster.opts).
_POSTMASTER_OPTION = re.compile(r"--[a-z_-]+=[A-Za-z0-9_.,:/@+-]*")


# ---------------------------------------------------------------------------
# Rendering (pure but for the CA chain file)


def patroni_member(facts: UnitFacts, db_os_user: str = SUPERUSER) -> patroni.PatroniMember:
    """The Patroni adapter's view of this unit; the DCS section is the host's.
    ``db_os_user`` runs Patroni and pgBackRest: the socket lets it in by peer."""
    layout = facts.layout
    if facts.passwords is None:
        raise WorkloadError(f"{layout.unit}: the database passwords are not known yet")
    return patroni.PatroniMember(
        scope=layout.scope,
        name=layout.member,
        data_dir=layout.data_dir,
        host=layout.address,
        pg_port=layout.pg_port,
        rest_port=layout.rest_port,
        socket_dir=layout.socket_dir,
        etcd_hosts=(),
        passwords=facts.passwords,
        pgpass=layout.pgpass,
        pgbackrest_config=layout.pgbackrest_config,
        bin_dir=layout.bin_dir,
        log_dir=layout.patroni_log_dir,
        ssl=facts.tls,
        superuser=SUPERUSER,
        peer_addresses=tuple(p.address for p in facts.peers),
        db_os_user=db_os_user,
    )


def patroni_yaml(
    facts: UnitFacts, dcs: Dcs, config: WorkloadConfig, db_os_user: str = SUPERUSER
) -> str:
    rendered = patroni.render_config(patroni_member(facts, db_os_user), config)
    return yaml.safe_dump(with_dcs(rendered, dcs.patroni_section(facts)), sort_keys=False)


def write_patroni_config(
    facts: UnitFacts, dcs: Dcs, config: WorkloadConfig, db_user: OsUser
) -> bool:
    """Write Patroni's YAML; True if it changed. No reload. It holds passwords: 0640,
    root's with the database user's group (Patroni reads it, never changes it)."""
    text = patroni_yaml(facts, dcs, config, db_user.name)
    return write_if_changed(text, facts.layout.patroni_config, config_owner(db_user), 0o640)


def pgbackrest_config(
    facts: UnitFacts,
    config: WorkloadConfig,
    *,
    ca_file: str | None,
    features: pgbackrest.PgBackRestFeatures,
) -> pgbackrest.PgBackRestConfig:
    """``pgbackrest.conf`` for this unit. With the TLS server on, the peers are reached
    through theirs and ours lets in the peers' certificates; without it, peers on this
    machine are still reached directly (so that a leader that is a replica finds the
    primary for stanza-create and check; backups from a replica still need TLS)."""
    layout = facts.layout
    tls_server = None
    peers: tuple[pgbackrest.PeerHost, ...] = ()
    local_peers: tuple[pgbackrest.LocalPeer, ...] = ()
    if config.tls_server and facts.backup_tls is not None:
        tls_server = pgbackrest.TlsServerConfig(
            address=layout.tls_server_listen,
            port=layout.tls_server_port,
            cert_file=facts.backup_tls.cert_file,
            key_file=facts.backup_tls.key_file,
            ca_file=facts.backup_tls.ca_file,
            allowed_clients=tuple(p.cert_name for p in facts.peers),
        )
        peers = tuple(
            pgbackrest.PeerHost(
                host=p.tls_server_host,
                port=p.tls_server_port,
                pg_path=p.data_dir,
                pg_port=p.pg_port,
                pg_socket_path=p.socket_dir,
            )
            for p in facts.peers
        )
    elif layout.peers_share_machine:
        local_peers = tuple(
            pgbackrest.LocalPeer(p.data_dir, p.pg_port, p.socket_dir) for p in facts.peers
        )
    return pgbackrest.PgBackRestConfig(
        stanza=layout.stanza,
        pg_path=layout.data_dir,
        s3=config.s3,
        pg_port=layout.pg_port,
        pg_socket_path=layout.socket_dir,
        log_path=layout.pgbackrest_log_dir,
        lock_path=layout.pgbackrest_lock_dir,
        spool_path=layout.pgbackrest_spool_dir,
        ca_file=ca_file,
        io_timeout=layout.io_timeout,
        tls=tls_server,
        peers=peers,
        local_peers=local_peers,
        features=features,
        retention=config.retention,
    )


# ---------------------------------------------------------------------------
# The workload


class UnitWorkload:
    """``host.Workload`` built from what the host injects.

    ``cluster_initialised`` answers :meth:`is_cluster_initialised` when the host knows it
    better than Patroni does now (the local runtime records the first bootstrap); without
    it, a cluster is initialised while Patroni reports a primary.
    """

    def __init__(
        self,
        facts: Callable[[], UnitFacts],
        services: ServiceRunner,
        dcs: Dcs,
        *,
        db_user: OsUser | None = None,
        cluster_initialised: Callable[[], bool] | None = None,
    ) -> None:
        self._facts = facts
        self.services = services
        self.dcs = dcs
        self._db_user = db_user
        self._cluster_initialised = cluster_initialised

    @property
    def db_user(self) -> OsUser:
        """The OS user that owns the data (asked when first needed, not at construction)."""
        if self._db_user is None:
            self._db_user = processes.db_user()
        return self._db_user

    @property
    def layout(self) -> UnitLayout:
        return self._facts().layout

    def _client(self, facts: UnitFacts | None = None) -> patroni.PatroniClient:
        facts = facts or self._facts()
        layout = facts.layout
        auth = patroni.RestAuth.of(facts.passwords) if facts.passwords is not None else None
        return patroni.PatroniClient(
            layout.address or "127.0.0.1", layout.rest_port, timeout=REST_TIMEOUT_SECONDS, auth=auth
        )

    # --- Patroni and PostgreSQL facts ---------------------------------------------

    def is_cluster_initialised(self) -> bool | None:
        if self._cluster_initialised is not None:
            return self._cluster_initialised()
        try:
            return any(m.is_primary for m in self._client().cluster())
        except PatroniUnavailable as exc:
            log.debug("cluster initialisation unknown: %s", exc)
            return None

    def is_primary(self) -> bool | None:
        try:
            return self._client().is_primary()
        except PatroniUnavailable as exc:
            log.debug("role unknown: %s", exc)
            return None

    def is_member_running(self) -> bool | None:
        try:
            return self._client().is_running()
        except PatroniUnavailable:
            return None

    def member_state(self) -> str | None:
        try:
            return self._client().member().state or None
        except PatroniUnavailable:
            return None

    def primary_address(self) -> str | None:
        facts = self._facts()
        try:
            members = self._client(facts).cluster()
        except PatroniUnavailable:
            return None
        primary = next((m.name for m in members if m.is_primary), None)
        if primary is None:
            return None
        if primary == facts.layout.member:
            return facts.layout.tls_server_address
        peer = next((p for p in facts.peers if p.member == primary), None)
        if peer is None:
            log.info("the primary %s is not among the known peers yet", primary)
            return None
        return peer.tls_server_address

    def system_identifier(self) -> int | None:
        layout = self.layout
        return postgres.system_identifier(
            layout.data_dir, user=self.db_user, bin_dir=layout.bin_dir
        )

    def current_timeline(self) -> int | None:
        layout = self.layout
        return postgres.read_timeline(layout.socket_dir, layout.pg_port, SUPERUSER)

    def streaming_timeline(self) -> int | None:
        layout = self.layout
        return postgres.read_streaming_timeline(layout.socket_dir, layout.pg_port, SUPERUSER)

    def replica_creation_stalled(self) -> bool | None:
        try:
            member = self._client().member()
        except PatroniUnavailable:
            return None
        return member.role == STALLED_ROLE and member.state == STALLED_STATE

    def data_dir_users(self) -> list[str]:
        return [p.describe() for p in processes.processes_using(self.layout.data_dir)]

    def timeline_history(self, timeline: int) -> str | None:
        layout = self.layout
        return postgres.read_timeline_history(
            layout.socket_dir, layout.pg_port, timeline, SUPERUSER
        )

    def archiver_stats(self) -> ArchiverStats | None:
        layout = self.layout
        spool_out = f"{layout.pgbackrest_spool_dir}/archive/{layout.stanza}/out"
        return postgres.read_archiver_stats(layout.socket_dir, layout.pg_port, spool_out, SUPERUSER)

    def bootstrap_failed(self) -> bool | None:
        """Patroni exits when its bootstrap fails (an unreachable PITR target): it logs
        ``Failed to bootstrap cluster``, renames the data directory to ``<data>.failed``
        and raises PatroniFatalException; a supervisor that restarts it shows a failed
        member state instead."""
        if self.services.has_failed(Service.PATRONI):
            return True
        return self.member_state() in FAILED_STATES

    def is_database_service_running(self) -> bool | None:
        return self.services.is_running(Service.PATRONI)

    def data_disk(self) -> DiskSpace | None:
        """statvfs of the data directory's parent: the data directory itself may be gone
        (Patroni renames a failed bootstrap's to ``<data>.failed``), and what is moved
        aside lives beside it, on the same file system."""
        where = Path(self.layout.data_dir).parent
        try:
            st = os.statvfs(where)
        except OSError as exc:
            log.debug("no disk space of %s: %s", where, exc)
            return None
        return DiskSpace(str(where), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)

    # --- the database ---------------------------------------------------------------

    def stop_database(self) -> None:
        if self._alone_in_cluster():
            # Patroni 3.0.2 on SIGTERM first waits up to 0.5 s for its REST server to end,
            # asks PostgreSQL for the fast shutdown, then looks at pg_controldata once a
            # second until it says "shut down": 1 to 1.5 s of each stop on top of
            # PostgreSQL's own (docs/performance.md, "Where the seconds go"). Asked here
            # first, the same fast shutdown is under way or done when Patroni looks.
            # Only with no other member running: otherwise Patroni's own order stays (it
            # hands the leader key only to a replica that received the shutdown
            # checkpoint). Patroni exits without starting it again: SIGTERM follows at once.
            layout = self.layout
            postgres.request_fast_shutdown(
                layout.data_dir, user=self.db_user, bin_dir=layout.bin_dir
            )
        self.services.stop(Service.PATRONI)
        if self.services.is_running(Service.PATRONI):
            raise WorkloadError(f"{self.layout.unit}: Patroni still runs after its stop")
        if self.services.is_running(Service.RECOVERY):  # a restore's, never taken over
            self.services.stop(Service.RECOVERY)

    def _alone_in_cluster(self) -> bool:
        """Patroni runs this member and no other member of the cluster runs (False when
        Patroni cannot tell)."""
        if not self.services.is_running(Service.PATRONI):
            return False
        try:
            members = self._client().cluster()
        except (PatroniUnavailable, WorkloadError):
            return False
        me = self.layout.member
        others_running = [m for m in members if m.name != me and m.state != "stopped"]
        return any(m.name == me for m in members) and not others_running

    def start_database(self) -> None:
        # A restore's PostgreSQL that ended recovery is taken over as it runs (Patroni
        # 3.0.2 joins a running primary: an empty DCS, the data's system identifier).
        self.services.start(Service.PATRONI)
        if not self.services.is_running(Service.PATRONI):
            raise WorkloadError(f"{self.layout.unit}: Patroni does not run after its start")

    def recreate_replica(self) -> None:
        self._client().reinitialize()  # PatroniUnavailable is a WorkloadError

    def remove_dcs_state(self) -> None:
        facts = self._facts()
        if self.dcs.remove_cluster(facts):
            return
        layout = facts.layout
        result = patroni.remove_dcs_state(layout.patroni_config, layout.scope, user=self.db_user)
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"{layout.unit}: patronictl remove failed: {reason}")

    def forget_dcs_member(self, address: str) -> None:
        """Remove a departed unit from the DCS (run on a remaining member)."""
        self.dcs.forget_member(self._facts(), address)

    # --- a restore beside the data directory ----------------------------------------
    #
    # pgBackRest restores into <data>.restoring while the database stops (the two take
    # about as long); the copy is renamed into place, PostgreSQL started on it as Patroni
    # last started it, and once it promoted at the target Patroni takes it over. Patroni's
    # own pgBackRest bootstrap did all of this one step after the other, and restarted
    # PostgreSQL once more out of recovery (docs/performance.md, "The restore's fixed cost").

    _staged: tuple[threading.Thread, list[CommandResult]] | None = None

    def start_staged_restore(self, target: RestoreTarget) -> None:
        facts = self._facts()
        layout = facts.layout
        data_dir = Path(layout.data_dir)
        # A restore whose action was killed leaves its pgBackRest writing into the old
        # copy by path: stopped before that copy goes, or it would write into the new one.
        previous = data_dir.with_name(data_dir.name + moveaside.STAGING_SUFFIX)
        orphans = processes.processes_using(previous)
        for info in processes.stop_processes(orphans, timeout=30):
            log.warning("%s: stopped %s, left by an earlier restore", layout.unit, info.describe())
        staging = moveaside.make_staging(data_dir, self.db_user.uid, self.db_user.gid)
        tool = pgbackrest.PgBackRest(
            layout.pgbackrest_config,
            layout.stanza,
            user=self.db_user,
            timeouts=pgbackrest.Timeouts(io=layout.io_timeout),
        )
        # A spool of the restore's own, fresh each time (PgBackRest.restore says why).
        spool = f"{layout.pgbackrest_spool_dir}/{RESTORE_SPOOL}"
        processes.run(["rm", "-rf", "--", spool], user=self.db_user, timeout=120)
        command = pgbackrest.archive_get_command(
            layout.pgbackrest_config, target.stanza, layout.data_dir, spool
        )
        result: list[CommandResult] = []

        def restore() -> None:
            result.append(
                tool.restore(str(staging), target, restore_command=command, spool_path=spool)
            )

        # A thread, not a process of ours: it inherits this thread's network namespace
        # (a local unit's machine) and pgBackRest's output is scrubbed as any command's.
        thread = threading.Thread(target=restore, name="staged-restore", daemon=True)
        thread.start()
        self._staged = (thread, result)
        log.info("%s: pgBackRest restores %s into %s", layout.unit, target.label, staging)

    def wait_staged_restore(self) -> None:
        if self._staged is None:
            raise WorkloadError(f"{self.layout.unit}: no restore was started here")
        thread, result = self._staged
        thread.join()
        self._staged = None
        if result and result[0].ok:
            return
        reason = pgbackrest.extract_error_line(result[0]) if result else "it did not run"
        raise WorkloadError(f"pgBackRest could not restore: {reason}")

    def discard_staged_restore(self) -> None:
        moveaside.remove_staging(Path(self.layout.data_dir))

    def swap_in_restored(self, aside: str = "") -> str:
        layout = self.layout
        data_dir = Path(layout.data_dir)
        if aside and not moveaside.is_moved_copy(data_dir, Path(aside)):
            raise WorkloadError(f"{aside} is not a data directory moved aside")
        # Into the restored copy before it takes the data directory's place: a failure
        # here leaves the data directory as it was (the restore starts it again).
        source = data_dir if data_dir.is_dir() else Path(aside)
        self._carry_config(source, data_dir.with_name(data_dir.name + moveaside.STAGING_SUFFIX))
        swapped = moveaside.swap_in(data_dir, missing_ok=bool(aside))
        return str(swapped or "")

    def _carry_config(self, source: Path, staging: Path) -> None:
        """This unit's Patroni-rendered configuration files from ``source`` into the
        restored copy, and a pg_hba.conf that lets in only the superuser over the socket
        until Patroni takes over (it writes its own then, as the restore's configuration
        says). As the database user: both directories are its own, so nothing in them (a
        link included) can make this write anywhere it could not write itself."""
        names = [
            n for n in CARRIED_CONFIG if (source / n).is_file() and not (source / n).is_symlink()
        ]
        steps: list[tuple[list[str], str | None]] = [
            (["/bin/sh", "-c", 'cat > "$1"', "sh", str(staging / "pg_hba.conf")],
             f"local all {SUPERUSER} peer map={patroni.PEER_MAP}\n"),
        ]  # fmt: skip
        if names:
            steps.insert(
                0, (["cp", "-p", "--", *(str(source / n) for n in names), str(staging)], None)
            )
        for argv, text in steps:
            done = processes.run(argv, user=self.db_user, timeout=60, input_text=text)
            if not done.ok:
                raise WorkloadError(
                    f"{self.layout.unit}: {argv[0]} failed: {done.stderr.strip()[-300:]}"
                )

    def start_recovery(self, moved: str) -> None:
        layout = self.layout
        if not moveaside.is_moved_copy(Path(layout.data_dir), Path(moved)):
            raise WorkloadError(f"{moved} is not a data directory moved aside")
        opts = read_text(Path(moved) / "postmaster.opts")
        argv = postmaster_argv(opts, layout.data_dir, layout.bin_dir)
        log_file = _unit_log(layout, RECOVERY_LOG)
        # The reason of a failure is read from it: last time's goes first. As the
        # database user: the folder is its own (root never changes anything there).
        processes.run(["rm", "-f", "--", str(log_file)], user=self.db_user, timeout=30)
        self.services.start_recovery(argv, str(log_file))
        if not self.services.is_running(Service.RECOVERY):
            raise WorkloadError(f"{layout.unit}: PostgreSQL did not start; see {log_file}")

    def recovery(self) -> Recovery | None:
        if self.services.is_running(Service.PATRONI):
            return None
        layout = self.layout
        if self.services.is_running(Service.RECOVERY):
            answer = postgres.read_in_recovery(layout.socket_dir, layout.pg_port, SUPERUSER)
            return Recovery(Recovery.PROMOTED if answer is False else Recovery.RECOVERING)
        if not self.services.has_failed(Service.RECOVERY):
            return None
        text = read_text(_unit_log(layout, RECOVERY_LOG)) or ""
        fatal = [line for line in text.splitlines() if "FATAL:" in line]
        reason = fatal[-1].split("FATAL:", 1)[1].strip() if fatal else "PostgreSQL exited"
        return Recovery(Recovery.ENDED, reason[:300])

    def set_passwords(self) -> None:
        facts = self._facts()
        layout = facts.layout
        if facts.passwords is None:
            raise WorkloadError(f"{layout.unit}: the database passwords are not known yet")
        p = facts.passwords
        roles = (
            postgres.Role(SUPERUSER, p.superuser),
            postgres.Role(patroni.REPLICATION_USER, p.replication, replication=True),
            postgres.Role(patroni.REWIND_USER, p.rewind, rewind=True),
        )
        problem = postgres.set_role_passwords(layout.socket_dir, layout.pg_port, roles, SUPERUSER)
        if problem is not None:
            raise WorkloadError(f"{layout.unit}: the users' passwords were not set: {problem}")

    def switch_wal(self) -> None:
        layout = self.layout
        if not postgres.switch_wal(layout.socket_dir, layout.pg_port, SUPERUSER):
            raise WorkloadError(f"{layout.unit}: pg_switch_wal() failed")

    # --- the data directory -----------------------------------------------------------

    def move_data_aside(self) -> str | None:
        moved = moveaside.move_aside(Path(self.layout.data_dir))
        return str(moved) if moved is not None else None

    def move_data_back(self, moved_path: str) -> None:
        moveaside.move_back(Path(self.layout.data_dir), moved_path)

    def remove_moved_data(self, moved_path: str) -> None:
        moveaside.remove_moved(Path(self.layout.data_dir), moved_path)

    def remove_moved_data_later(self, moved_path: str) -> None:
        # Root checks the path (a real directory beside the data directory, of a
        # moved-aside name) and renames it to ``<data>.removing-<stamp>``, relative to the
        # parent's descriptor: a removal stopped half-way (``down``, a reboot) leaves a
        # directory that says what it is, never one that passes for a copy a rollback
        # could put back. ``rm`` deletes it as the database user, whose files these are:
        # root deletes nothing in the database user's folder, and a link swapped in after
        # the rename is removed itself (rm follows none). Niced: the restored database
        # runs beside it. Not waited for: the restore does not depend on it, and on a
        # large database it is minutes of the disk's work.
        layout = self.layout
        doomed = moveaside.rename_for_removal(Path(layout.data_dir), moved_path)
        log_file = _unit_log(layout, REMOVAL_LOG)
        try:
            processes.spawn(
                ["nice", "-n", "10", "rm", "-rf", "--one-file-system", "--", str(doomed)],
                log_file=log_file,
                user=self.db_user,
            )
        except OSError as exc:
            raise WorkloadError(
                f"{layout.unit}: could not start the removal of {doomed}: {exc}"
            ) from exc
        log.info("%s: removing the data from before the restore (%s)", layout.unit, doomed)

    def wait_until_leader(self, timeout: float) -> bool:
        # Patroni's REST API on this machine: a few milliseconds a question.
        return poll(lambda: self.is_primary() is True, timeout, LEADER_POLL_SECONDS)

    # --- configuration ------------------------------------------------------------------

    def apply_config(self, config: WorkloadConfig) -> None:
        """Write pgbackrest.conf and Patroni's YAML, then have a running Patroni reload.

        It reloads even when the file did not change: a command killed between the two
        would otherwise leave the change unapplied for good. Hiding a replica for a
        backup (tags and pg_hba) must be in force before the backup starts and lifted
        before the action returns, so this waits until Patroni and a client see it.
        """
        facts = self._facts()
        layout = facts.layout
        self._write_pgbackrest(facts, config)
        if facts.passwords is None:
            log.info("%s: Patroni's configuration waits for the passwords", layout.unit)
            return
        # Compared with what Patroni and a client see now, not with what was last asked:
        # a killed command may have left either half applied.
        tags_change = self._creating_backup_tag(facts) not in (None, config.creating_backup)
        clients_change = self._admits_tcp_clients(facts) not in (None, config.connectivity)
        write_patroni_config(facts, self.dcs, config, self.db_user)
        if self.services.is_running(Service.PATRONI):
            self._client(facts).reload()  # PatroniUnavailable is a WorkloadError
        if tags_change:
            self._wait(
                lambda: self._creating_backup_tag(facts) == config.creating_backup,
                f"Patroni to publish nofailover={config.creating_backup}",
            )
        if clients_change:
            self._wait(
                lambda: self._admits_tcp_clients(facts) is config.connectivity,
                "TCP clients to be " + ("accepted" if config.connectivity else "rejected"),
            )

    def _write_pgbackrest(self, facts: UnitFacts, config: WorkloadConfig) -> None:
        layout = facts.layout
        ca_file = None
        if config.s3 is not None:
            ca_file = pgbackrest.write_ca_chain(
                config.s3, layout.s3_ca_file, config_owner(self.db_user)
            )
        rendered = pgbackrest_config(
            facts,
            config,
            ca_file=ca_file,
            features=pgbackrest.detect_features(user=self.db_user),
        )
        # It holds the S3 secret: 0640, root's with the database user's group.
        pgbackrest.write_config(
            pgbackrest.render_config(rendered),
            layout.pgbackrest_config,
            config_owner(self.db_user),
        )

    def _creating_backup_tag(self, facts: UnitFacts) -> bool | None:
        """Whether Patroni publishes this member as hidden (nofailover), None if unknown."""
        layout = facts.layout
        try:
            members = self._client(facts).cluster()
        except PatroniUnavailable:
            return None
        me = next((m for m in members if m.name == layout.member), None)
        return None if me is None else bool(me.tags.get("nofailover"))

    def _admits_tcp_clients(self, facts: UnitFacts) -> bool | None:
        """What a TCP client sees now (PostgreSQL reloads pg_hba a moment after Patroni
        publishes the tags): True let in, False rejected, None otherwise."""
        layout = facts.layout
        if facts.passwords is None or not self.services.is_running(Service.PATRONI):
            return None
        return postgres.admits_tcp_client(
            layout.address, layout.pg_port, SUPERUSER, facts.passwords.superuser
        )

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        if not poll(done, TAGS_TIMEOUT_SECONDS, 0.3):
            log.warning(
                "%s: still waiting for %s after %ss", self.layout.unit, what, TAGS_TIMEOUT_SECONDS
            )

    # --- the pgBackRest TLS server --------------------------------------------------------

    def start_tls_server(self) -> None:
        """(Re)start: the server reads its certificates and peers only when it starts.
        Returns once it answers a ping."""
        facts = self._facts()
        layout = facts.layout
        if facts.backup_tls is None:
            raise WorkloadError(f"{layout.unit}: no certificate for the pgBackRest TLS server")
        self.services.restart(Service.TLS_SERVER)
        tool = pgbackrest.PgBackRest(
            layout.pgbackrest_config,
            layout.stanza,
            user=self.db_user,
            timeouts=pgbackrest.Timeouts(io=layout.io_timeout),
        )
        answered: list[bool] = []

        def settled() -> bool:
            answered[:] = [tool.server_ping(layout.tls_server_address)]
            return answered[0] or not self.services.is_running(Service.TLS_SERVER)

        if poll(settled, TLS_SERVER_START_SECONDS, 0.2) and answered[0]:
            log.info("%s: the pgBackRest TLS server answers", layout.unit)
            return
        raise WorkloadError(
            f"{layout.unit}: the pgBackRest TLS server does not answer at "
            f"{layout.tls_server_address}; see {layout.pgbackrest_log_dir}"
        )

    def stop_tls_server(self) -> None:
        self.services.stop(Service.TLS_SERVER)


def _unit_log(layout: UnitLayout, name: str) -> Path:
    """A log of ours beside Patroni's, or pgBackRest's where Patroni logs to its standard
    error (the database user's folder: what is spawned as that user opens it)."""
    return Path(layout.patroni_log_dir or layout.pgbackrest_log_dir) / name


def postmaster_argv(opts: str | None, data_dir: str, bin_dir: str) -> list[str]:
    """The command line Patroni last started PostgreSQL with (``postmaster.opts``, a file
    the database user can write): only ``<bin_dir>/postgres``, ``-D <data_dir>`` and
    ``--name=value`` options of plain characters are accepted, nothing else runs."""
    try:
        words = shlex.split(opts or "")
    except ValueError as exc:
        raise WorkloadError(f"postmaster.opts is not a command line: {exc}") from None
    program = f"{bin_dir}/postgres"
    if not words or words[0] != program:
        raise WorkloadError(f"postmaster.opts does not start {program}")
    rest = words[1:]
    if rest[:2] != ["-D", data_dir] and rest[:2] != ["-D", data_dir.rstrip("/")]:
        raise WorkloadError(f"postmaster.opts does not name the data directory {data_dir}")
    options = rest[2:]
    for option in options:
        if _POSTMASTER_OPTION.fullmatch(option) is None:
            raise WorkloadError(f"postmaster.opts has an option not allowed: {option[:60]!r}")
        if (
            option.startswith("--config-file=")
            and option != f"--config-file={data_dir}/postgresql.conf"
        ):
            raise WorkloadError(
                f"postmaster.opts names another configuration file: {option[:80]!r}"
            )
    return [program, "-D", data_dir, *options]


def poll(pred: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Ask ``pred`` every ``interval`` seconds until it holds (True) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
