"""The core's view of its host: what the hook handlers may ask and do, and what they return.

The handlers in :mod:`pgbackups.core.handlers` know nothing of Juju or of the local runtime.
A host (the ``ops`` charm, or :mod:`pgbackups.local`) implements :class:`Host` and
runs a handler; the handler returns an :data:`~pgbackups.core.outcomes.Outcome` and the
host turns it into ``event.defer()``, ``event.set_results()``, ``event.fail()`` or their
local twins.

Everything a handler does to the world goes through this interface, so that a fake
host can record the calls in order and the tests can check them against the charts.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Protocol

from pgbackups.core.archive import ArchivedSegment, ArchiveListing
from pgbackups.core.archive_health import ArchiverStats
from pgbackups.core.policy import Retention
from pgbackups.core.repository import StanzaInfo, TimelineBranch, TimelineRecord, VerifyReport
from pgbackups.core.settings import S3Settings

# ---------------------------------------------------------------------------
# Status


class StatusKind(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    WAITING = "waiting"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class UnitStatus:
    kind: StatusKind
    message: str = ""

    @classmethod
    def active(cls, message: str = "") -> UnitStatus:
        return cls(StatusKind.ACTIVE, message)

    @classmethod
    def maintenance(cls, message: str) -> UnitStatus:
        return cls(StatusKind.MAINTENANCE, message)

    @classmethod
    def waiting(cls, message: str) -> UnitStatus:
        return cls(StatusKind.WAITING, message)

    @classmethod
    def blocked(cls, message: str) -> UnitStatus:
        return cls(StatusKind.BLOCKED, message)

    @property
    def is_blocked(self) -> bool:
        return self.kind is StatusKind.BLOCKED

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}" if self.message else self.kind.value


# ---------------------------------------------------------------------------
# Values the host hands over


@dataclass(frozen=True)
class TlsMaterial:
    """This unit's certificate, key and the CA that signed every unit's (paths on disk)."""

    ca_file: str
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class Peer:
    """Another unit of the cluster, as pgBackRest reaches it."""

    name: str
    address: str  # DNS name or address of its pgBackRest TLS server


@dataclass(frozen=True)
class CommandResult:
    """A finished external command. ``stdout``/``stderr`` never contain a secret."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class RestoreTarget:
    """How Patroni must bootstrap from pgBackRest (every option goes into ``command``)."""

    stanza: str
    label: str | None = None  # --set
    type: str = "immediate"  # --type: immediate | time | default
    target: str | None = None  # --target, for type=time
    target_timeline: int | None = None  # --target-timeline
    target_action: str | None = "promote"  # --target-action (not valid with type=default)


@dataclass(frozen=True)
class Recovery:
    """The restored PostgreSQL that the workload started itself, before Patroni takes it
    over (docs/behaviour/restore.md, "The restored database"): ``recovering`` while it
    replays WAL towards its target, ``promoted`` once it ended recovery there (Patroni can
    take it over as the primary), ``ended`` when it exited before (``reason``: its last
    FATAL line, e.g. a point-in-time target recovery never reached)."""

    RECOVERING: ClassVar[str] = "recovering"
    PROMOTED: ClassVar[str] = "promoted"
    ENDED: ClassVar[str] = "ended"

    state: str
    reason: str = ""


@dataclass(frozen=True)
class ReplicaRestore:
    """How a unit re-creates itself from the restored primary after a cluster restore
    (docs/behaviour/restore.md, "A cluster of several units").

    ``stanza`` and ``label``: the backup set the primary was restored from; Patroni's
    pgBackRest replica method restores it as a standby (``--delta`` over what a killed
    attempt left), which then follows the restored primary's new timeline from the
    archive and streams. None: from the primary only (``pg_basebackup``), when the
    archive cannot lead a standby to the new timeline (another cluster's stanza, or
    archiving off).
    """

    stanza: str | None
    label: str | None = None


@dataclass(frozen=True)
class WorkloadConfig:
    """The configuration the core wants on this unit; the host renders and reloads it.

    The core derives it from the peer bags (see ``handlers.desired_config``): WAL is pushed
    while ``stanza`` is set, held while ``hold_wal`` (docs/reliability.md), and discarded
    only when neither is: no repository of this cluster's exists.
    """

    s3: S3Settings | None  # the repository for pgbackrest.conf; None: no repository
    stanza: str | None  # WAL archiving pushes into this stanza; None: archive_command no-op
    tls_server: bool  # TLS server and pgN-host sections (TLS on and more than one unit)
    connectivity: bool = True  # False: client connections rejected (a replica taking a backup)
    creating_backup: bool = False  # Patroni tags nofailover + noloadbalance
    restore: RestoreTarget | None = None  # bootstrap from pgBackRest instead of initdb
    # A cluster restore in progress: how this unit re-creates itself as a replica.
    replica_restore: ReplicaRestore | None = None
    # WAL held: archive_command fails on purpose, so PostgreSQL keeps every segment and
    # retries (the repository is this cluster's but cannot be used right now).
    hold_wal: bool = False
    # What pgBackRest keeps (repo1-retention-*); None: the S3 settings' delete-older-than-days.
    retention: Retention | None = None


@dataclass(frozen=True)
class DiskSpace:
    """The file system that holds the data directory (and what is moved aside beside it)."""

    path: str  # the directory asked about
    free: int  # bytes an unprivileged writer (the database user) may still use
    total: int  # bytes


# ---------------------------------------------------------------------------
# Errors the adapters raise


class BackupToolError(Exception):
    """pgBackRest could not answer; ``str()`` is its meaningful ERROR line, never a secret."""


class ObjectStoreError(Exception):
    """The object store could not be reached or refused; ``str()`` is boto's short reason."""


class ObjectStoreForbidden(ObjectStoreError):
    """The bucket check was answered 403: wrong keys, or keys without access to it. A HEAD
    response has no body, so S3 cannot say which, nor whether the bucket exists."""


# ---------------------------------------------------------------------------
# Adapters, as the core uses them


class BackupTool(Protocol):
    """pgBackRest, run as the database user with the rendered configuration."""

    def stanza_create(self) -> CommandResult: ...

    def check(self) -> CommandResult: ...

    def backup(
        self, backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        """``backup_type`` is pgBackRest's: full | diff | incr. On the primary the backup
        runs with ``--no-backup-standby``; on a replica with ``backup-standby``, and
        ``primary`` (its TLS server, ``name:port``, as ``Workload.primary_address``
        gives it) is watched: a backup that cannot reach it for a while is stopped."""
        ...

    def info(self, stanza: str | None = None) -> list[StanzaInfo]:
        """Every stanza in the repository (or just ``stanza``). Raises BackupToolError."""
        ...

    def timelines(self, stanza: str) -> list[TimelineRecord]:
        """Timelines created by restores, from ``.history`` files under ``archive/``."""
        ...

    def history(self, record: TimelineRecord) -> tuple[TimelineBranch, ...]:
        """The branches written in a timeline's ``.history`` file. Raises BackupToolError."""
        ...

    def archive_segments(self, stanza: str) -> list[ArchivedSegment]:
        """Every WAL segment object of the stanza's archive with its stored size
        (:mod:`pgbackups.core.archive` follows them). Raises BackupToolError."""
        ...

    def expire(self) -> CommandResult:
        """Apply the rendered retention now (pgBackRest ``expire``)."""
        ...

    def annotate(self, label: str, annotations: Mapping[str, str]) -> CommandResult:
        """Attach ``key=value`` annotations to the backup set ``label`` (``annotate``)."""
        ...

    def last_commit_time(
        self, segment: ArchivedSegment, before_lsn: str | None = None
    ) -> datetime | None:
        """The time of the last commit or abort record in an archived segment (read from
        the WAL itself), only among those before ``before_lsn`` (X/Y) when given; None
        when it holds none. Raises BackupToolError."""
        ...

    def verify(self) -> VerifyReport:
        """pgBackRest ``verify`` of this cluster's stanza. Raises BackupToolError."""
        ...

    def archive(self, stanza: str) -> ArchiveListing:
        """:meth:`timelines` and :meth:`archive_segments` from one listing of the
        stanza's archive: each of them lists the whole archive anyway (S3 filters
        nothing), tens of thousands of objects for a month of WAL. Raises
        BackupToolError."""
        ...

    def info_and_archive(self, stanza: str) -> tuple[list[StanzaInfo], ArchiveListing | None]:
        """:meth:`info` and :meth:`archive` of ``stanza`` at once (side by side where the
        host can); the listing is None when ``info`` shows no such stanza. Raises
        BackupToolError when ``info`` fails, or the listing of a stanza that exists."""
        ...

    def server_ping(self, host: str) -> bool: ...

    def error_line(self, result: CommandResult) -> str:
        """The meaningful ERROR line of a failed command, for a message."""
        ...


class ObjectStore(Protocol):
    """The S3 bucket of the current settings (boto3, with the CA of the settings)."""

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist. True if it was created.
        Raises ObjectStoreForbidden when the check is answered 403, ObjectStoreError when
        the bucket can neither be reached nor created."""
        ...

    def put(self, key: str, body: bytes) -> None:
        """``key`` is relative to the bucket root. Raises ObjectStoreError."""
        ...

    def get(self, key: str) -> bytes | None:
        """None when the object does not exist. Raises ObjectStoreError."""
        ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted; an object is listed as soon as its ``put``
        returned (S3's strong consistency; backup_claim relies on it). Raises
        ObjectStoreError."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error. Raises ObjectStoreError."""
        ...


class WorkloadError(Exception):
    """A workload action failed; ``str()`` says what and why, for a log line or a message."""


class WorkloadUnavailable(WorkloadError):
    """The workload cannot be asked right now (Patroni down, REST unreachable). Adapters
    raise it; a :class:`Workload` turns it into None (a query) or lets it out (an action)."""


class Workload(Protocol):
    """PostgreSQL under Patroni on this unit, and the pgBackRest TLS server beside it.

    One failure convention:

    - A query (``is_*``, ``member_state``, ``primary_address``, ``system_identifier``,
      ``current_timeline``, ``bootstrap_failed``, ``is_database_service_running``,
      ``data_disk``) never raises: it returns its value, or
      None when the workload cannot tell right now (Patroni or PostgreSQL not answering).
    - An action (``start_database``, ``apply_config``, ``move_data_back``...) returns None
      (``move_data_aside`` returns where the data went) and raises :class:`WorkloadError`
      with a message when it could not do its job.
    """

    def is_cluster_initialised(self) -> bool | None:
        """Patroni bootstrapped this cluster (once; a later failed restore does not undo it)."""
        ...

    def is_primary(self) -> bool | None:
        """Patroni runs this member as the primary; None when Patroni cannot tell."""
        ...

    def is_member_running(self) -> bool | None:
        """Patroni reports this member running (3.0.2) or streaming (4.x)."""
        ...

    def member_state(self) -> str | None:
        """Patroni's state for this member (``running``, ``start failed``...), None if unknown."""
        ...

    def primary_address(self) -> str | None:
        """Where the primary's pgBackRest TLS server is reached, None if no primary."""
        ...

    def system_identifier(self) -> int | None: ...

    def current_timeline(self) -> int | None: ...

    def streaming_timeline(self) -> int | None:
        """The timeline this member's WAL receiver streams from the primary; None when it
        does not stream (or PostgreSQL does not answer)."""
        ...

    def replica_creation_stalled(self) -> bool | None:
        """Patroni runs, but this member is neither a replica nor being made one: its data
        directory holds what a killed re-creation left, which Patroni does not touch by
        itself ("system ID is invalid; consider doing reinitialize")."""
        ...

    def data_dir_users(self) -> list[str]:
        """The processes still using the data directory (working directory, an open file
        or a path in their arguments), described for a person; [] when none. After the
        database stopped, anything here writes where a rollback would put data back."""
        ...

    def timeline_history(self, timeline: int) -> str | None:
        """The text of ``timeline``'s ``.history`` file as PostgreSQL wrote it (its last
        line says where the recovery that created the timeline ended); None when it
        cannot be read (timeline 1 has none)."""
        ...

    def bootstrap_failed(self) -> bool | None:
        """Patroni gave up bootstrapping (e.g. a PITR target that cannot be reached):
        it logs ``Failed to bootstrap cluster`` and exits."""
        ...

    def is_database_service_running(self) -> bool | None:
        """Patroni's process (locally) or service (systemd) runs; None if the host cannot
        tell. Not whether PostgreSQL answers: ``member_state`` says that."""
        ...

    def data_disk(self) -> DiskSpace | None:
        """Free and total space where the data directory lives; None if unreadable."""
        ...

    def archiver_stats(self) -> ArchiverStats | None:
        """The archiver's facts on this unit (``pg_stat_archiver``, the segments waiting in
        ``pg_wal/archive_status``, pgBackRest's drop notices in its spool); None when
        PostgreSQL does not answer."""
        ...

    def stop_database(self) -> None:
        """Stop Patroni (and with it PostgreSQL); raises WorkloadError if it still runs."""
        ...

    def start_database(self) -> None:
        """Start Patroni; raises WorkloadError if it does not run."""
        ...

    def recreate_replica(self) -> None:
        """Have Patroni create this replica again, over what its data directory holds."""
        ...

    def remove_dcs_state(self) -> None:
        """Remove the cluster's keys from the DCS so that a re-bootstrap can happen."""
        ...

    def start_staged_restore(self, target: RestoreTarget) -> None:
        """Begin restoring ``target`` into a new directory beside the data directory, in
        the background: the database may still run (it is stopped meanwhile). Raises
        WorkloadError when the restore could not begin."""
        ...

    def wait_staged_restore(self) -> None:
        """Until the restore :meth:`start_staged_restore` began has ended; raises
        WorkloadError (pgBackRest's reason) when it failed (the data directory itself
        was never touched; :meth:`discard_staged_restore` removes the partial copy)."""
        ...

    def discard_staged_restore(self) -> None:
        """Remove a restored copy that will not be used (nothing else)."""
        ...

    def swap_in_restored(self, aside: str = "") -> str:
        """Rename the data directory aside and the restored copy into its place, with
        this unit's PostgreSQL configuration files (Patroni's) from the old one; returns
        where the old data went. ``aside``: where this unit's data already is when its
        data directory was moved aside before (then "" is returned, and the files come
        from there). Nothing is deleted; no data directory and no ``aside`` is an error."""
        ...

    def start_recovery(self, moved: str) -> None:
        """Start PostgreSQL on the restored data as Patroni last started it on the data
        now at ``moved``, to recover to the target and promote; :meth:`start_database`
        then has Patroni take it over. Raises WorkloadError if it could not start."""
        ...

    def recovery(self) -> Recovery | None:
        """Where the PostgreSQL :meth:`start_recovery` started is; None when there is
        none (never started, or Patroni runs the database now)."""
        ...

    def set_passwords(self) -> None:
        """Give the database's superuser, replication and rewind users this cluster's
        passwords (a restored database has those of the cluster its backup came from);
        raises WorkloadError."""
        ...

    def switch_wal(self) -> None:
        """Close the primary's current WAL segment (``pg_switch_wal()``), so that it is
        archived; raises WorkloadError when PostgreSQL does not answer."""
        ...

    def move_data_aside(self) -> str | None:
        """Rename the data directory to a sibling and return the new path; None when there
        is no data directory to move (Patroni renames the data of a failed bootstrap to
        ``<data>.failed`` itself). Nothing is deleted."""
        ...

    def move_data_back(self, moved_path: str) -> None:
        """Rename a directory :meth:`move_data_aside` made back to the data directory
        (what is there is renamed aside, not deleted). Refuses any other path."""
        ...

    def remove_moved_data(self, moved_path: str) -> None:
        """Delete a directory :meth:`move_data_aside` made, and nothing else."""
        ...

    def remove_moved_data_later(self, moved_path: str) -> None:
        """Have a directory :meth:`move_data_aside` made deleted by a process of its own,
        not waited for (and nothing else: any other path is refused here, WorkloadError).
        A removal that fails leaves what is left of it, a leftover."""
        ...

    def wait_until_leader(self, timeout: float) -> bool:
        """Until Patroni runs this member as the primary (it holds the leader key), at most
        ``timeout`` seconds; whether it does."""
        ...

    def apply_config(self, config: WorkloadConfig) -> None:
        """Render pgbackrest.conf and the Patroni configuration, then reload Patroni."""
        ...

    def start_tls_server(self) -> None:
        """(Re)start the pgBackRest TLS server with the current certificates and peers."""
        ...

    def stop_tls_server(self) -> None: ...


class Host(Protocol):
    """Leadership, status, peer data, settings and the workload of one unit."""

    @property
    def unit_name(self) -> str: ...

    @property
    def stanza_name(self) -> str:
        """``<model>.<app>`` under Juju, ``local.<cluster>`` under the local runtime."""
        ...

    @property
    def cluster_id(self) -> str:
        """Identifies this deployment (model UUID + app; the local cluster's uuid)."""
        ...

    def is_leader(self) -> bool: ...

    def get_status(self) -> UnitStatus: ...

    def set_status(self, status: UnitStatus) -> None: ...

    @property
    def app_data(self) -> MutableMapping[str, str]:
        """The application peer bag. Writing it on a non-leader raises PermissionError.
        Setting a key to "" deletes it, as in Juju."""
        ...

    @property
    def unit_data(self) -> MutableMapping[str, str]:
        """This unit's peer bag."""
        ...

    def peer_data(self) -> Mapping[str, Mapping[str, str]]:
        """The bags of the other units, by unit name (read only)."""
        ...

    def planned_units(self) -> int: ...

    def peers(self) -> Sequence[Peer]: ...

    def s3_parameters(self) -> Mapping[str, str] | None:
        """The raw S3 settings, or None when no S3 relation (no ``s3 set``) exists."""
        ...

    def tls(self) -> TlsMaterial | None: ...

    def config_options(self) -> Mapping[str, str]:
        """The operator's backup options (retention, schedules, the archiving lag
        threshold; :mod:`pgbackups.core.policy`) as raw strings: the charm's config, the
        local runtime's ``retention`` and ``schedule`` commands. Unset ones are absent."""
        ...

    @property
    def workload(self) -> Workload: ...

    @property
    def backup_tool(self) -> BackupTool: ...

    def object_store(self, settings: S3Settings) -> ObjectStore: ...

    def now(self) -> datetime:
        """Aware UTC time (a host may freeze it in tests)."""
        ...

    def describe(self) -> Mapping[str, str]:
        """Who asked for what, for the backup metadata object (host name, versions...)."""
        ...

    def log_hint(self) -> str:
        """Where a person reads this unit's detailed logs, for a Blocked message that
        must stay short: ``juju debug-log`` under Juju, ``pgbackups logs main/0`` under
        the local runtime."""
        ...
