#!/usr/bin/env python3
"""pgbackups-postgresql: the pgbackups core inside an ``ops`` machine charm.

Every Juju event is turned into one call of a core handler (``pgbackups.core.events``) with
a :class:`charm_host.CharmHost`, and the handler's outcome back into ops:
``Deferred`` → ``event.defer()``, ``ActionResults`` → ``event.set_results()``,
``ActionFailed`` → ``event.fail()``, ``Done`` → nothing. The charm itself only installs
and starts the workload, keeps the application's secret (the Patroni passwords and the
pgBackRest TLS CA: :mod:`app_secret`) and this unit's pgBackRest certificate
(:mod:`backup_tls`), and translates relations (``s3-parameters``, ``certificates``,
``database-peers``) into the core's terms.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import ops

import app_secret
import cos_agent
from app_secret import PASSWORD_KEYS, SECRET_ID_KEY, AppSecrets
from backup_tls import BackupTlsFiles, DiskBackupTls
from charm_host import (
    PEER_RELATION,
    S3_RELATION,
    TLS_RELATION,
    Adapters,
    CharmHost,
)
from metrics_service import MetricsService
from pgbackups.adapters import certificates, processes
from pgbackups.adapters.certificates import CertificateAuthority, CertificateError
from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.adapters.pgbackrest import PgBackRest
from pgbackups.adapters.prometheus import exposition
from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core import events
from pgbackups.core import messages as msg
from pgbackups.core import metrics as core_metrics
from pgbackups.core.archive_health import ArchiverStats as ArchiveHealthStats
from pgbackups.core.handlers import desired_config
from pgbackups.core.handlers.metrics import RepositoryFacts, collect_metrics, read_repository
from pgbackups.core.host import WorkloadError
from pgbackups.core.outcomes import ActionFailed, ActionResults, Deferred, Done, Outcome
from pgbackups.core.params import check_action_params
from pgbackups.core.peer_keys import CLUSTER_INITIALISED, STANZA
from pgbackups.core.policy import INVALID_OPTIONS, PolicyProblem, parse_policy
from pgbackups.core.settings import PASSPHRASE_KEY as SETTINGS_PASSPHRASE_KEY
from pgbackups.core.window import status_summary
from pgbackups.workload.layout import UnitFacts
from s3_requirer import S3Requirer
from tls_files import DiskTlsFiles
from tls_requirer import TlsFiles, UnitCertificate
from workload import MachinePaths, MachineWorkload, Runner, machine_facts, member_name

log = logging.getLogger(__name__)

__all__ = ["PASSWORD_KEYS", "SECRET_ID_KEY", "PgBackupsCharm"]

WAITING_FOR_PEERS = "waiting for the peer relation"
WAITING_FOR_PASSWORDS = "waiting for the leader to generate the database passwords"
AWAITING_MEMBER = "awaiting for member to start"
WAITING_FOR_LEADER = "waiting for the leader to initialise the cluster"
WAITING_FOR_PARTNERS = "waiting for a peer to join the Raft cluster"
WAITING_FOR_JOIN = "waiting for another unit to join the cluster first"
INSTALLING = "installing PostgreSQL, Patroni, pgBackRest"
PRIMARY = "Primary"
# The statuses the charm owns (the core's own messages are left to the core).
CHARM_MESSAGES = (
    AWAITING_MEMBER,
    WAITING_FOR_LEADER,
    WAITING_FOR_PARTNERS,
    WAITING_FOR_JOIN,
    WAITING_FOR_PASSWORDS,
    WAITING_FOR_PEERS,
    INSTALLING,
)
TLS_FLAG = "tls"
# Unit bag: "running" once this unit's Patroni runs as a member of the cluster (it has
# joined Patroni's Raft). Units join one at a time, in unit-number order: see
# _start_blocker.
MEMBER_FLAG = "member"
MEMBER_RUNNING = "running"
# How long the start hook waits for its member to run, so that the next unit may start
# without waiting for an update-status.
MEMBER_WAIT_SECONDS = 60.0
# How often the leader reads the recoverable window for its status (update-status comes
# every 5 minutes by default: each one reads it; rounds of update-status a test or an
# operator fires in a row read it once). Every update-status while COS scrapes.
WINDOW_REFRESH_SECONDS = 240.0


class InstallFailed(RuntimeError):
    """The packages are not installed (yet): the install hook fails and Juju runs it
    again (``automatically-retry-hooks``, on by default), with backoff."""


class Installer(Protocol):
    def unsupported(self) -> str | None: ...

    def install(self) -> bool: ...

    def installed_version(self) -> str | None: ...


def machine_workload(charm: PgBackupsCharm) -> MachineWorkload:
    """The workload on this machine. Building it looks up no OS user: the install hook
    builds it before the packages have made ``postgres``."""
    charm_type = type(charm)
    return MachineWorkload(charm.unit_facts, charm_type.machine_paths, run=charm_type.runner)


def machine_adapters(charm: PgBackupsCharm) -> Adapters:
    """The real adapters: PostgreSQL/Patroni on this machine, pgBackRest, S3."""
    paths = type(charm).machine_paths
    workload = machine_workload(charm)
    tool = PgBackRest(paths.pgbackrest_config, charm.host.stanza_name, user=processes.db_user())
    # S3Bucket keeps its own copy of the CA chain, in root's state folder: the workload's
    # file is pgBackRest's, written atomically while archive-push may be reading it.
    state_dir = Path(paths.state_dir)
    return Adapters(
        workload=workload,
        backup_tool=tool,
        object_store=lambda settings: S3Bucket(settings, ca_folder=state_dir),
    )


def machine_tls_files(charm: PgBackupsCharm) -> TlsFiles:
    return DiskTlsFiles(type(charm).machine_paths.tls_dir)


def machine_backup_tls(charm: PgBackupsCharm) -> BackupTlsFiles:
    return DiskBackupTls(type(charm).machine_paths.backup_tls_dir, processes.db_user())


def machine_metrics_service(charm: PgBackupsCharm) -> MetricsService:
    paths = type(charm).machine_paths
    return MetricsService(paths.state_dir, paths.systemd_dir, type(charm).runner)


def machine_new_ca(charm: PgBackupsCharm) -> CertificateAuthority:
    return certificates.new_authority(f"{charm.app.name}-pgbackrest-ca")


class PgBackupsCharm(ops.CharmBase):
    # This unit's own memory across hooks: whether it has left the cluster (scale-down),
    # and, on the leader, which departed units' Raft members are still to be removed.
    _stored = ops.StoredState()  # type: ignore[no-untyped-call]

    # The only seams the tests use: they return fakes at the adapter boundary, or keep
    # the real factories and replace what runs a program (``runner``) and the folders.
    machine_paths: ClassVar[MachinePaths] = MachinePaths()
    runner: ClassVar[Runner] = processes.run
    installer_factory: ClassVar[Callable[[PgBackupsCharm], Installer]] = machine_workload
    adapters_factory: ClassVar[Callable[[PgBackupsCharm], Adapters]] = machine_adapters
    tls_files_factory: ClassVar[Callable[[PgBackupsCharm], TlsFiles]] = machine_tls_files
    backup_tls_factory: ClassVar[Callable[[PgBackupsCharm], BackupTlsFiles]] = machine_backup_tls
    new_ca_factory: ClassVar[Callable[[PgBackupsCharm], CertificateAuthority]] = machine_new_ca
    metrics_service_factory: ClassVar[Callable[[PgBackupsCharm], MetricsService]] = (
        machine_metrics_service
    )
    # How long start waits for its Patroni to run (tests whose systemd is a recorder, where
    # nothing ever runs, set it short).
    member_wait_seconds: ClassVar[float] = MEMBER_WAIT_SECONDS

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        # window_status: the leader's recoverable window as its status says it (read by
        # update-status at window_read_at, time.time()).
        self._stored.set_default(
            left_cluster=False, raft_to_forget=[], window_status="", window_read_at=0.0
        )
        self._adapters: Adapters | None = None
        self._app_secrets: AppSecrets | None = None
        self._backup_tls: BackupTlsFiles | None = None
        # True while the leader renders the configuration it bootstraps the cluster with.
        self._bootstrapping_alone = False
        self.s3 = S3Requirer(self, S3_RELATION)
        # The library re-checks the request (the unit's address) and the certificate's
        # expiry on these too, not only on the relation's own events.
        self.certs = UnitCertificate(
            self,
            TLS_RELATION,
            type(self).tls_files_factory(self),
            address=self._unit_address,
            hostname=socket.getfqdn,
            refresh_events=[self.on.update_status, self.on.config_changed],
        )

        observe = framework.observe
        observe(self.on.install, self._on_install)
        observe(self.on.start, self._on_start)
        observe(self.on.config_changed, self._on_config_changed)
        observe(self.on.update_status, self._on_update_status)
        observe(self.on.leader_elected, self._on_leader_elected)
        observe(self.on.stop, self._on_stop)
        peers = self.on[PEER_RELATION]
        observe(peers.relation_created, self._on_peers_changed)
        observe(peers.relation_joined, self._on_peers_changed)
        observe(peers.relation_changed, self._on_peers_changed)
        observe(peers.relation_departed, self._on_peer_departed)
        observe(self.s3.on.credentials_changed, self._on_s3_credentials_changed)
        observe(self.s3.on.credentials_gone, self._on_s3_credentials_gone)
        observe(self.certs.on.updated, self._on_certificates_changed)
        cos = self.on[cos_agent.RELATION]
        observe(cos.relation_joined, self._on_cos_agent_changed)
        observe(cos.relation_changed, self._on_cos_agent_changed)
        observe(cos.relation_broken, self._on_cos_agent_broken)
        for action in events.ACTIONS:  # ops names an action's event <name>_action
            observe(getattr(self.on, f"{action.replace('-', '_')}_action"), self._on_action)

    # --- the host ------------------------------------------------------------------

    @property
    def adapters(self) -> Adapters:
        if self._adapters is None:
            self._adapters = type(self).adapters_factory(self)
        return self._adapters

    @property
    def backup_tls(self) -> BackupTlsFiles:
        """Built on first use: the install hook runs before the ``postgres`` user exists."""
        if self._backup_tls is None:
            self._backup_tls = type(self).backup_tls_factory(self)
        return self._backup_tls

    def _unit_address(self) -> str:
        return self.host.unit_address()

    @property
    def host(self) -> CharmHost:
        return CharmHost(
            self,
            lambda: self.adapters,
            s3_parameters=self.s3_parameters,
            tls=self.certs.material,
        )

    def s3_parameters(self) -> Mapping[str, str] | None:
        """The integrator's S3 settings and, from the application's secret, the
        repository's encryption passphrase (never in a relation bag). Before the secret
        exists: the settings alone (pgBackRest waits for the passwords anyway)."""
        info = self.s3.connection_info()
        secrets = self.app_secrets()
        if info is None or secrets is None:
            return info
        return {**info, SETTINGS_PASSPHRASE_KEY: secrets.repository_passphrase}

    # --- the application's secret ----------------------------------------------------

    def app_secrets(self) -> AppSecrets | None:
        """The passwords and the pgBackRest CA, once the leader has made the secret (None
        before: every unit waits). Read once per hook."""
        if self._app_secrets is not None:
            return self._app_secrets
        relation = self.model.get_relation(PEER_RELATION)
        secret_id = relation.data[self.app].get(SECRET_ID_KEY) if relation else None
        if not secret_id:
            return None
        try:
            # refresh: an owner tracks a revision too (Juju 3.1.7+), and the leader adds a
            # value when a new charm revision brings a new password.
            content = self.model.get_secret(id=secret_id).get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError) as exc:
            log.error("the application secret %s cannot be read: %s", secret_id, exc)
            return None
        self._app_secrets = app_secret.read(content)
        return self._app_secrets

    def passwords(self) -> PatroniPasswords | None:
        secrets = self.app_secrets()
        return secrets.passwords if secrets is not None else None

    def _ensure_app_secret(self) -> None:
        """The leader creates the application's secret once, completes it when a value is
        missing, and moves the passwords an older charm kept in the peer bag into it.
        A secret that exists is never replaced: the database holds its passwords."""
        relation = self.model.get_relation(PEER_RELATION)
        if relation is None or not self.unit.is_leader():
            return
        bag = relation.data[self.app]
        legacy = {k: bag[k] for k in PASSWORD_KEYS if bag.get(k)}

        def new_ca() -> CertificateAuthority:
            return type(self).new_ca_factory(self)

        try:
            secret_id = bag.get(SECRET_ID_KEY)
            if secret_id:
                secret = self.model.get_secret(id=secret_id)
                content = secret.get_content(refresh=True)
                wanted = app_secret.complete(content, legacy=legacy, new_ca=new_ca)
                if wanted != content:
                    secret.set_content(wanted)
            else:
                wanted = app_secret.complete({}, legacy=legacy, new_ca=new_ca)
                secret = self.app.add_secret(
                    wanted, description="pgbackups: Patroni passwords, pgBackRest TLS CA"
                )
                assert secret.id is not None  # add_secret returns it with its id
                bag[SECRET_ID_KEY] = secret.id
                log.info("created the application secret")
        except (ops.SecretNotFoundError, ops.ModelError, CertificateError) as exc:
            log.error("the application secret cannot be made or read: %s", exc)
            return
        for key in legacy:  # in the secret now: out of the bag every unit can read
            del bag[key]
        self._app_secrets = None

    def _ensure_backup_tls(self) -> None:
        """This unit's pgBackRest certificate from the application's CA (idempotent)."""
        secrets = self.app_secrets()
        address = self.host.unit_address()
        if secrets is None or not address:
            return
        try:
            self.backup_tls.ensure(secrets.pgbackrest_ca, member_name(self.unit.name), [address])
        except (CertificateError, OSError) as exc:
            log.error("this unit's pgBackRest TLS certificate was not issued: %s", exc)

    def unit_facts(self) -> UnitFacts:
        host = self.host
        return machine_facts(
            type(self).machine_paths,
            app=self.app.name,
            unit=self.unit.name,
            address=host.unit_address(),
            # The bootstrap is the leader's alone: with partners that run no Raft yet
            # (they wait for cluster_initialised) its Raft would never reach a quorum.
            peers=() if self._bootstrapping_alone else host.peers(),
            tls=self.certs.material(),
            passwords=self.passwords(),
            stanza=host.stanza_name,
            backup_tls=self.backup_tls.material(),
        )

    # --- outcomes ------------------------------------------------------------------

    def _apply(self, event: ops.EventBase, outcome: Outcome) -> None:
        name = type(event).__name__
        match outcome:
            case Done():
                pass
            case Deferred(reason=reason):
                if isinstance(event, ops.ActionEvent):  # actions cannot be deferred
                    event.fail(reason)
                else:
                    log.info("%s deferred: %s", name, reason)
                    event.defer()
            case ActionResults(results=results):
                if isinstance(event, ops.ActionEvent):
                    event.set_results(dict(results))
                else:
                    log.info("%s: %s", name, dict(results))
            case ActionFailed(message=message):
                if isinstance(event, ops.ActionEvent):
                    event.fail(message)
                else:
                    log.error("%s failed: %s", name, message)

    def _run(
        self,
        event: ops.EventBase,
        handler: Callable[..., Outcome],
        *args: Any,
    ) -> None:
        """Run one core handler for ``event`` and apply its outcome."""
        if isinstance(event, ops.ActionEvent):
            # Juju checks the schema of charmcraft.yaml; this is the same allow-list as
            # the local runtime's, so that a bad parameter changes nothing here either.
            action = event.handle.kind.removesuffix("_action").replace("_", "-")
            problem = check_action_params(action, args[0] if args else {})
            if problem is not None:
                event.fail(problem)
                return
        host = self.host
        is_action = isinstance(event, ops.ActionEvent)
        if host.peer_relation is None:
            self._apply(event, Deferred(WAITING_FOR_PEERS))
            return
        self._mark_cluster_initialised(host)
        if not is_action:  # hooks reconcile; an action uses what is there
            self._ensure_backup_tls()
        try:
            outcome = handler(host, *args)
        except WorkloadError as exc:
            outcome = ActionFailed(str(exc)) if is_action else Deferred(str(exc))
        self._apply(event, outcome)

    def _mark_cluster_initialised(self, host: CharmHost) -> None:
        """The core waits for app ``cluster_initialised``; the leader sets it once Patroni
        reports a primary (the host's job: the core only reads it)."""
        if not host.is_leader() or host.app_data.get(CLUSTER_INITIALISED):
            return
        if host.workload.is_cluster_initialised():
            host.app_data[CLUSTER_INITIALISED] = "True"

    def _refresh_status(self, host: CharmHost) -> None:
        """Active (``Primary`` on the primary) once the member runs, Waiting before; only
        when the current status is one the charm owns: a Blocked or a core Maintenance
        status (creating/restoring backup...) is the core's to change."""
        status = self.unit.status
        owned = isinstance(status, ops.UnknownStatus | ops.ActiveStatus) or (
            isinstance(status, ops.WaitingStatus | ops.MaintenanceStatus)
            and status.message in CHARM_MESSAGES
        )
        # "WAL archiving lagging ..." is an Active status the core says and clears.
        owned = owned and not msg.is_archive_health_message(status.message)
        options_blocked = isinstance(status, ops.BlockedStatus) and status.message.startswith(
            INVALID_OPTIONS
        )
        if not (owned or options_blocked):
            return
        # Juju cannot refuse a config value: a refused backup option blocks the unit
        # (the options count as unset meanwhile) until `juju config` fixes it.
        block = self._options_block()
        if block is not None:
            self.unit.status = ops.BlockedStatus(block)
            return
        if self.passwords() is None:
            if options_blocked:
                self.unit.status = ops.WaitingStatus(WAITING_FOR_PASSWORDS)
            return
        running = host.workload.is_member_running() is True
        primary = running and host.workload.is_primary() is True
        if not running:
            waiting = self._start_blocker(host)
            self.unit.status = ops.WaitingStatus(waiting or AWAITING_MEMBER)
        else:
            # The leader adds the recoverable window (WINDOW_REFRESH_SECONDS): what a
            # restore-to-time reaches, where `juju status` shows it.
            window = self._stored.window_status if host.is_leader() else ""
            words = [w for w in (PRIMARY if primary else "", window) if w]
            self.unit.status = ops.ActiveStatus(", ".join(words))

    # --- lifecycle -----------------------------------------------------------------

    def _on_install(self, event: ops.InstallEvent) -> None:
        # Only the installer: the other adapters look up the database user, whom the
        # packages create.
        installer = type(self).installer_factory(self)
        unsupported = installer.unsupported()
        if unsupported is not None:
            # The one Blocked status of install: no retry installs a PostgreSQL this
            # system's archive does not have. Nothing was changed on the machine.
            log.error("not installing: %s", unsupported)
            self.unit.status = ops.BlockedStatus(unsupported)
            return
        self.unit.status = ops.MaintenanceStatus(INSTALLING)
        if not installer.install():
            # Never a Blocked status for good: the hook fails, and Juju runs it again
            # (a dpkg lock held past apt's wait, a mirror that was down).
            raise InstallFailed(
                "failed to install PostgreSQL, Patroni and pgBackRest (see the log above); "
                "Juju retries the install hook"
            )
        version = installer.installed_version()
        if version:
            self.unit.set_workload_version(version)
        self.unit.status = ops.WaitingStatus(AWAITING_MEMBER)

    def _configure_and_start(self, event: ops.EventBase) -> bool:
        """Render the configuration the core wants and start Patroni; False if deferred."""
        if self.model.get_relation(PEER_RELATION) is None:
            event.defer()
            return False
        if type(self).installer_factory(self).unsupported() is not None:
            return False  # install said why (Blocked); nothing to start here
        self._ensure_app_secret()
        if self.passwords() is None:
            self.unit.status = ops.WaitingStatus(WAITING_FOR_PASSWORDS)
            event.defer()
            return False
        host = self.host
        waiting = self._start_blocker(host)
        if waiting is not None:
            log.info("Patroni not started: %s", waiting)
            self.unit.status = ops.WaitingStatus(waiting)
            event.defer()
            return False
        self._bootstrapping_alone = (
            host.is_leader()
            and not host.app_data.get(CLUSTER_INITIALISED)
            and host.workload.is_cluster_initialised() is not True
        )
        self._ensure_backup_tls()
        try:
            host.workload.apply_config(desired_config(host))
        except WorkloadError as exc:
            log.warning("the configuration is not applied yet: %s", exc)
            event.defer()
            return False
        return True

    def _start_blocker(self, host: CharmHost) -> str | None:
        """Why this unit may not start Patroni yet (None: it may). Only the leader
        bootstraps: a non-leader started before the leader's cluster exists, or with no
        Raft partner to join through, would bootstrap a cluster of its own (``juju deploy
        -n 3`` would make three). It waits for the leader's ``cluster_initialised`` and at
        least one peer address; its deferred start runs again on the next hook."""
        if host.is_leader():
            return None
        if not host.app_data.get(CLUSTER_INITIALISED):
            return WAITING_FOR_LEADER
        if not host.peers():
            return WAITING_FOR_PARTNERS
        joining = self._lower_unit_not_joined(host)
        if joining is not None:
            log.info("Patroni waits for %s to join the cluster first", joining)
            return WAITING_FOR_JOIN
        return None

    def _lower_unit_not_joined(self, host: CharmHost) -> str | None:
        """A peer with a lower unit number whose Patroni has not joined yet, if any.

        Joins are one at a time: pysyncobj (Patroni's Raft; 0.3.11 on Debian 12) lets a
        member's Raft thread die when it commits a join whose requester already gave up
        waiting, which two joins at once cause (seen in charm/tests/machines); that
        leaves the primary without its DCS, and it demotes itself. In unit-number order,
        a unit that never starts holds up only the ones after it, until it is removed."""
        own = _unit_number(host.unit_name)
        for name, bag in host.peer_data().items():
            if _unit_number(name) < own and bag.get(MEMBER_FLAG) != MEMBER_RUNNING:
                return name
        return None

    def _note_member_running(self, host: CharmHost, *, wait: float = 0.0) -> None:
        """Publish ``member=running`` once this unit's Patroni runs (waiting up to
        ``wait`` seconds for it): the next unit may then start."""
        if host.peer_relation is None or host.unit_data.get(MEMBER_FLAG) == MEMBER_RUNNING:
            return
        deadline = time.monotonic() + wait
        while host.workload.is_member_running() is not True:
            if time.monotonic() >= deadline:
                return
            time.sleep(2.0)
        host.unit_data[MEMBER_FLAG] = MEMBER_RUNNING

    def _on_start(self, event: ops.StartEvent) -> None:
        if not self._configure_and_start(event):
            return
        self.unit.status = ops.WaitingStatus(AWAITING_MEMBER)
        try:
            self.host.workload.start_database()
        except WorkloadError as exc:
            log.warning("Patroni is not started yet: %s", exc)
            event.defer()
            return
        self._note_member_running(self.host, wait=type(self).member_wait_seconds)

    def _on_config_changed(self, event: ops.ConfigChangedEvent) -> None:
        # The backup options (retention into pgbackrest.conf; schedules are read by
        # update-status). Juju cannot refuse a value: a refused one is logged and unset.
        # The unit says so (Blocked) until the value is fixed: see _refresh_status.
        block = self._options_block()
        if block is not None:
            log.error("%s (they count as unset)", block)
        self._reconfigure(event)  # before the passwords exist, start renders it
        if self.model.get_relation(PEER_RELATION) is not None:
            self._refresh_status(self.host)

    def _options_block(self) -> str | None:
        """The Blocked message for refused backup options (retention, schedules), or None."""
        policy = parse_policy(self.host.config_options())
        return policy.message() if isinstance(policy, PolicyProblem) else None

    def _on_update_status(self, event: ops.UpdateStatusEvent) -> None:
        # The core first: it looks whether the database runs and replaces only an Active
        # status (or its own "database stopped/crash-looping"); refreshed before it, a
        # stopped Patroni would already read "awaiting for member to start" and keep it.
        self._run(event, events.HOOKS["update-status"])
        if self.model.get_relation(PEER_RELATION) is not None:
            self._forget_departed_members()
            scraped = self.model.get_relation(cos_agent.RELATION) is not None
            facts = self._read_window(self.host, every_time=scraped)
            self._refresh_status(self.host)
            self._note_member_running(self.host)
            if scraped:
                self._offer_metrics()
                self._collect_metrics(self.host, facts)

    def _on_leader_elected(self, event: ops.LeaderElectedEvent) -> None:
        self._ensure_app_secret()
        self._run(event, events.HOOKS["leader-elected"])

    # --- peers and TLS -------------------------------------------------------------

    def _reconfigure(self, event: ops.EventBase) -> None:
        """Render the configuration the core wants, once the passwords exist."""
        if self.passwords() is None:
            return
        self._ensure_backup_tls()
        host = self.host
        try:
            host.workload.apply_config(desired_config(host))
        except WorkloadError as exc:
            log.warning("the configuration is not applied yet: %s", exc)
            event.defer()

    def _on_peers_changed(self, event: ops.RelationEvent) -> None:
        self._ensure_app_secret()
        self._run(event, events.HOOKS["peer-changed"])  # it renders the configuration first

    def _on_peer_departed(self, event: ops.RelationDepartedEvent) -> None:
        departing = event.departing_unit
        if departing == self.unit:
            # This unit is the one going: it leaves (switchover, stop, Raft removal
            # through a partner) and renders nothing more.
            self._leave_cluster()
            return
        if self.unit.is_leader() and departing is not None:
            address = event.relation.data[departing].get("ingress-address") or (
                event.relation.data[departing].get("private-address")
            )
            if address and address not in self._stored.raft_to_forget:
                self._stored.raft_to_forget.append(address)
        self._forget_departed_members()
        self._run(event, events.HOOKS["peer-changed"])

    def _forget_departed_members(self) -> None:
        """The leader removes departed units from Raft through its own member, each once
        its Patroni no longer runs (a unit that left with its hooks has removed itself
        already; this is for one that went without them). Retried on the next hooks."""
        pending = list(self._stored.raft_to_forget)
        if not pending or not self.unit.is_leader() or self.passwords() is None:
            return
        forget = getattr(self.adapters.workload, "forget_dcs_member", None)
        if forget is None:
            return
        for address in pending:
            try:
                forget(address)
            except WorkloadError as exc:
                log.info("the departed unit at %s stays in Raft for now: %s", address, exc)
                continue
            self._stored.raft_to_forget.remove(address)

    def _on_stop(self, event: ops.StopEvent) -> None:
        # Scale-down runs relation-departed first; this covers a unit removed without it
        # (the last hooks of ``juju remove-unit``). Done once: the second call is a no-op.
        self._leave_cluster()

    def _leave_cluster(self) -> None:
        """The leaving unit, in this order (``MachineWorkload.leave_cluster``): if it is
        the primary, switch over to a streaming replica (otherwise its stop leaves the
        cluster without a primary until Patroni's TTL runs out, and a write in flight is
        lost); stop Patroni; then have a partner that still runs Raft remove this member
        (the stopped one serves nothing). Never fails the hook: the unit is going away
        whatever happens; a failure is logged. Once per unit: relation-departed comes
        once for every remaining peer, and stop after them."""
        if self._stored.left_cluster:
            return
        if self.passwords() is None or self.model.get_relation(PEER_RELATION) is None:
            return
        leave = getattr(self.adapters.workload, "leave_cluster", None)
        if leave is None:
            return
        try:
            leave()
        except WorkloadError as exc:
            log.warning("leaving the cluster: %s", exc)
            return
        self._stored.left_cluster = True

    def _on_certificates_changed(self, event: ops.EventBase) -> None:
        """This unit's TLS files changed (issued, renewed, removed): the core re-renders
        and Patroni reloads (PostgreSQL re-reads its ssl files on that SIGHUP), and the
        pgBackRest TLS server follows."""
        if self.model.get_relation(PEER_RELATION) is not None:
            self.host.unit_data[TLS_FLAG] = "enabled" if self.certs.material() else ""
        self._run(event, events.HOOKS["certificates-changed"])

    # --- metrics through the COS agent ------------------------------------------------

    def _on_cos_agent_changed(self, event: ops.RelationEvent) -> None:
        self._offer_metrics()

    def _on_cos_agent_broken(self, event: ops.RelationBrokenEvent) -> None:
        # Nobody scrapes any more: no listening port left open for nothing.
        try:
            type(self).metrics_service_factory(self).stop()
        except WorkloadError as exc:
            log.warning("the metrics endpoint was not stopped: %s", exc)

    def _offer_metrics(self) -> None:
        """Run the endpoint and publish its scrape job, the alert rules (scoped to this
        application) in this unit's bag on the cos-agent relation (docs:
        charm/README.md, "Metrics and alerts"). The password stays the one published."""
        relation = self.model.get_relation(cos_agent.RELATION)
        if relation is None:
            return
        bag = relation.data[self.unit]
        password = cos_agent.password_in(bag) or cos_agent.new_password()
        service = type(self).metrics_service_factory(self)
        try:
            changed = service.configure(
                host=cos_agent.METRICS_HOST,
                port=cos_agent.METRICS_PORT,
                user=cos_agent.SCRAPE_USER,
                password=password,
            )
            service.start(restart=changed)
        except (WorkloadError, OSError) as exc:
            log.error("the metrics endpoint is not running: %s", exc)
            return
        topology = cos_agent.Topology(
            model=self.model.name,
            model_uuid=self.model.uuid,
            application=self.app.name,
            charm_name=self.meta.name,
        )
        wanted = cos_agent.unit_bag(
            cos_agent.alert_rules(topology), [cos_agent.scrape_job(self.unit.name, password)]
        )
        # Only on change (Juju keeps its own address keys in the bag too): a write wakes
        # the agent's relation-changed.
        if any(bag.get(k) != v for k, v in wanted.items()):
            bag.update(wanted)

    def _read_window(self, host: CharmHost, *, every_time: bool) -> RepositoryFacts | None:
        """On the leader, with a stanza: read the repository (its recoverable window for
        the status, and the metrics' facts), once per WINDOW_REFRESH_SECONDS unless
        ``every_time``. None when not read now."""
        if not host.is_leader() or not host.app_data.get(STANZA):
            self._stored.window_status = ""
            return None
        since = time.time() - float(self._stored.window_read_at)
        if not every_time and 0 <= since < WINDOW_REFRESH_SECONDS:
            return None
        facts = read_repository(host)
        self._stored.window_read_at = time.time()
        # Unreadable: no window rather than an old one (the S3 statuses say why).
        self._stored.window_status = status_summary(facts.windows) if facts.readable else ""
        return facts

    def _collect_metrics(self, host: CharmHost, facts: RepositoryFacts | None) -> None:
        """What the endpoint serves until the next update-status: the repository's
        families from the leader (one unit: the same facts from every unit would be
        alerts times the units), the archiver's from the primary (only it knows them)."""
        if not host.app_data.get(STANZA):
            families: list[core_metrics.Family] = []
        else:
            primary = host.workload.is_primary() is True
            stats = _archiver(host.workload.archiver_stats()) if primary else None
            if host.is_leader():
                families = collect_metrics(host, stats, facts)
            elif primary:
                families = core_metrics.archiver_families(host.stanza_name, stats, host.now())
            else:
                families = []
        try:
            type(self).metrics_service_factory(self).publish(exposition(families))
        except (WorkloadError, OSError) as exc:
            log.warning("the metrics were not written: %s", exc)

    # --- S3 ------------------------------------------------------------------------

    def _on_s3_credentials_changed(self, event: ops.EventBase) -> None:
        self._run(event, events.HOOKS["s3-credentials-changed"])

    def _on_s3_credentials_gone(self, event: ops.EventBase) -> None:
        self._run(event, events.HOOKS["s3-credentials-gone"])

    # --- actions -------------------------------------------------------------------

    def _on_action(self, event: ops.ActionEvent) -> None:
        action = event.handle.kind.removesuffix("_action").replace("_", "-")
        self._run(event, events.ACTIONS[action], _params(event.params))


def _archiver(stats: ArchiveHealthStats | None) -> core_metrics.ArchiverStats | None:
    """The workload's look at ``pg_stat_archiver`` as the metrics take it."""
    if stats is None:
        return None
    return core_metrics.ArchiverStats(
        stats.archived_count,
        stats.failed_count,
        stats.last_archived_time,
        stats.last_failed_time,
    )


def _unit_number(unit_name: str) -> int:
    return int(unit_name.rpartition("/")[2])


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    """Action parameters as the core takes them: strings, absent when not given."""
    return {k: str(v) for k, v in params.items() if v is not None}


if __name__ == "__main__":  # pragma: no cover
    ops.main(PgBackupsCharm)
