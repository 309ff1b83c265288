"""A fake host for the hook handlers: every call the core makes, in one ordered list.

``FakeHost`` implements :class:`pgbackups.core.host.Host`; its ``FakeWorkload``,
``FakeBackupTool`` and ``FakeObjectStore`` append to the host's ``calls`` list, and so do
status changes and peer-bag writes, e.g.::

    app_data[stanza]='local.main'
    workload.apply_config(stanza=local.main)
    set_status(maintenance: initialising stanza)
    backup_tool.stanza_create
    object_store.put(pg/backup/local.main/latest)

Reads of the workload (``workload.is_primary`` ...) are recorded too; ``host.effects``
leaves them out, for tests that pin down what the handler *did*. Every result is
scriptable through plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pgbackups.core.archive import (
    ArchivedSegment,
    ArchiveListing,
    needed_by,
    parse_segment_name,
)
from pgbackups.core.archive_health import ArchiverStats
from pgbackups.core.host import (
    BackupToolError,
    CommandResult,
    DiskSpace,
    ObjectStoreError,
    ObjectStoreForbidden,
    Peer,
    Recovery,
    RestoreTarget,
    TlsMaterial,
    UnitStatus,
    WorkloadConfig,
    WorkloadError,
)
from pgbackups.core.ids import label_time, label_to_id
from pgbackups.core.marker import ClusterMarker
from pgbackups.core.repository import (
    BackupRecord,
    StanzaInfo,
    TimelineBranch,
    TimelineRecord,
    VerifyReport,
)
from pgbackups.core.settings import S3Settings

STANZA = "local.main"
CLUSTER_ID = "cluster-0001"
SYSTEM_ID = 7310000000000000001
OTHER_SYSTEM_ID = 7320000000000000002
NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=UTC)
PRIMARY_ADDRESS = "10.0.0.1"
MOVED_DATA = "/var/lib/pgbackups/main/data.pre-restore-20261128T150000Z"
S3_PATH = "/pg"
MARKER_KEY = "pg/pgbackups-cluster.json"
VALID_S3 = {
    "bucket": "backups",
    "access-key": "AKIA-TEST",
    "secret-key": "very-secret",
    "endpoint": "https://s3.example.com",
    "path": S3_PATH,
}
REPOSITORY_ID = f"{VALID_S3['endpoint']}/{VALID_S3['bucket']}{S3_PATH}"
LOG_HINT = "pgbackups logs main/0"
T = TypeVar("T")
TLS = TlsMaterial(ca_file="/tls/ca.pem", cert_file="/tls/cert.pem", key_file="/tls/key.pem")

# Reads of the workload: left out of ``FakeHost.effects``.
WORKLOAD_QUERIES = frozenset(
    {
        "workload.is_cluster_initialised",
        "workload.is_primary",
        "workload.is_member_running",
        "workload.member_state",
        "workload.primary_address",
        "workload.system_identifier",
        "workload.current_timeline",
        "workload.streaming_timeline",
        "workload.replica_creation_stalled",
        "workload.data_dir_users",
        "workload.bootstrap_failed",
        "workload.is_database_service_running",
        "workload.data_disk",
        "workload.archiver_stats",
        "workload.recovery",
    }
)


# ---------------------------------------------------------------------------
# Builders


def ok(stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(("pgbackrest",), 0, stdout, stderr)


def failed(error: str = "ERROR: [055]: unable to load info file", code: int = 55) -> CommandResult:
    return CommandResult(("pgbackrest",), code, "P00   INFO: starting\n", f"{error}\n")


def backup(
    label: str,
    *,
    stanza: str = STANZA,
    error: bool = False,
    error_message: str = "",
    timeline: int = 1,
    prior: str | None = None,
) -> BackupRecord:
    kind = {"F": "full", "D": "diff", "I": "incr"}[label[-1]]
    start = label_time(label)
    reference = (label.split("_", maxsplit=1)[0],) if "_" in label else ()
    return BackupRecord(
        label=label,
        backup_id=label_to_id(label),
        type=kind,
        stanza=stanza,
        error=error,
        error_message=error_message,
        lsn_start="0/2000028",
        lsn_stop="0/2000100",
        timeline=timeline,
        wal_start=f"{timeline:08X}0000000000000002",
        wal_stop=f"{timeline:08X}0000000000000002",
        reference=reference,
        prior=prior if prior is not None else (reference[-1] if reference else None),
        start=start,
        stop=start + timedelta(minutes=5),
        size=1000,
        delta=1000,
        repo_size=100,
        repo_delta=100,
    )


def healthy_archiver() -> ArchiverStats:
    """A primary whose archiving keeps up: nothing waiting, the last push a success."""
    return ArchiverStats(
        archived_count=10,
        last_archived_wal="000000010000000000000009",
        last_archived_time=NOW - timedelta(seconds=30),
        failed_count=0,
        last_failed_wal=None,
        last_failed_time=None,
        ready_count=0,
        oldest_ready_wal=None,
        oldest_ready_time=None,
    )


def stanza_info(
    name: str = STANZA,
    *,
    system_ids: tuple[int, ...] = (SYSTEM_ID,),
    backups: Sequence[BackupRecord] = (),
    status_code: int = 0,
) -> StanzaInfo:
    return StanzaInfo(
        name=name,
        status_code=status_code,
        status_message="ok" if status_code == 0 else "missing stanza path",
        system_ids=system_ids,
        backup_lock_held=False,
        backups=tuple(backups),
        archive_min=None,
        archive_max=None,
    )


def timeline(number: int, created: datetime, stanza: str = STANZA) -> TimelineRecord:
    return TimelineRecord(
        stanza=stanza,
        timeline=number,
        created=created,
        key=f"archive/{stanza}/15-1/{number:08X}.history",
    )


def marker_body(
    stanza: str = STANZA, cluster_id: str = CLUSTER_ID, system_id: int = SYSTEM_ID
) -> bytes:
    return ClusterMarker(stanza, cluster_id, system_id).encode()


# ---------------------------------------------------------------------------
# Peer bags


class Bag(MutableMapping[str, str]):
    """A Juju-like bag: string keys and values, ``""`` deletes, writes recorded."""

    def __init__(self, name: str, calls: list[str], data: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._calls = calls
        self._data: dict[str, str] = dict(data or {})
        self.writable = True

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __setitem__(self, key: str, value: str) -> None:
        if not self.writable:
            raise PermissionError(f"{self.name} is read only on this unit")
        if not isinstance(value, str):
            raise TypeError(f"{self.name}[{key}] must be a string")
        self._calls.append(f"{self.name}[{key}]={value!r}")
        if value:
            self._data[key] = value
        else:
            self._data.pop(key, None)

    def __delitem__(self, key: str) -> None:
        self[key] = ""

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def as_dict(self) -> dict[str, str]:
        return dict(self._data)


# ---------------------------------------------------------------------------
# Workload


def describe_config(config: WorkloadConfig) -> str:
    parts = [f"stanza={config.stanza or '-'}"]
    if config.hold_wal:
        parts.append("hold-wal")
    if config.s3 is None:
        parts.append("s3=-")
    if config.tls_server:
        parts.append("tls-server")
    if not config.connectivity:
        parts.append("connectivity=off")
    if config.creating_backup:
        parts.append("creating-backup")
    if config.restore is not None:
        parts.append(f"restore={config.restore.label}@{config.restore.stanza}")
    if config.replica_restore is not None:
        source = config.replica_restore
        parts.append(f"replicas-from={source.label}@{source.stanza or 'primary'}")
    return f"workload.apply_config({', '.join(parts)})"


@dataclass
class FakeWorkload:
    """Scripted by plain attributes; an action scripted to fail raises WorkloadError, as
    the protocol says (``moved_path=None``: the move fails; ``""``: nothing to move)."""

    calls: list[str]
    unavailable: bool = False  # every query answers None: Patroni is not answering
    cluster_initialised: bool = True
    primary: bool = True
    member_running: bool = True
    state: str | None = "running"
    primary_addr: str | None = PRIMARY_ADDRESS
    system_id: int | None = SYSTEM_ID
    timeline: int | None = 1
    streaming: int | None = None  # the timeline a replica's WAL receiver streams
    stalled: bool = False  # Patroni waits for a reinitialize (a killed re-creation)
    histories: dict[int, str] = field(default_factory=dict)  # pg_wal/<tl>.history texts
    users: list[str] = field(default_factory=list)  # processes still in the data directory
    stop_ok: bool = True
    start_results: list[bool] = field(default_factory=lambda: [True])
    remove_dcs_ok: bool = True
    moved_path: str | None = MOVED_DATA
    move_back_ok: bool = True
    failed_bootstrap: bool = False
    service_running: bool | None = True  # Patroni's process or service
    disk: DiskSpace | None = field(default_factory=lambda: DiskSpace("/data", 1 << 30, 1 << 33))
    start_tls_ok: bool = True
    configs: list[WorkloadConfig] = field(default_factory=list)
    on_apply: list[object] = field(default_factory=list)  # exceptions to raise, in turn
    archiver: ArchiverStats | None = field(default_factory=healthy_archiver)
    # A restore beside the data directory (restore_here): pgBackRest's restore into the
    # new directory fails when staged_ok is False; the restored PostgreSQL's recovery
    # answers ``recovered`` (None: none runs).
    begin_restore_ok: bool = True
    staged_ok: bool = True
    start_recovery_ok: bool = True
    recovered: Recovery | None = None
    # Patroni holds the leader key within wait_until_leader's time after a takeover
    # (False: not yet, the next update-status sees it).
    leads_after_start: bool = False
    restore_targets: list[RestoreTarget] = field(default_factory=list)

    def _ask(self, name: str, answer: T) -> T | None:
        self.calls.append(f"workload.{name}")
        return None if self.unavailable else answer

    def _do(self, call: str, ok: bool) -> None:
        self.calls.append(f"workload.{call}")
        if not ok:
            raise WorkloadError(f"{call} failed")

    def is_cluster_initialised(self) -> bool | None:
        return self._ask("is_cluster_initialised", self.cluster_initialised)

    def is_primary(self) -> bool | None:
        return self._ask("is_primary", self.primary)

    def is_member_running(self) -> bool | None:
        return self._ask("is_member_running", self.member_running)

    def member_state(self) -> str | None:
        return self._ask("member_state", self.state)

    def primary_address(self) -> str | None:
        return self._ask("primary_address", self.primary_addr)

    def system_identifier(self) -> int | None:
        return self._ask("system_identifier", self.system_id)

    def current_timeline(self) -> int | None:
        return self._ask("current_timeline", self.timeline)

    def streaming_timeline(self) -> int | None:
        return self._ask("streaming_timeline", self.streaming)

    def replica_creation_stalled(self) -> bool | None:
        return self._ask("replica_creation_stalled", self.stalled)

    def recreate_replica(self) -> None:
        self._do("recreate_replica", True)

    def timeline_history(self, timeline: int) -> str | None:
        return self._ask(f"timeline_history({timeline})", self.histories.get(timeline))

    def data_dir_users(self) -> list[str]:
        return self._ask("data_dir_users", list(self.users)) or []

    def bootstrap_failed(self) -> bool | None:
        return self._ask("bootstrap_failed", self.failed_bootstrap)

    def is_database_service_running(self) -> bool | None:
        self.calls.append("workload.is_database_service_running")
        return self.service_running

    def data_disk(self) -> DiskSpace | None:
        self.calls.append("workload.data_disk")
        return self.disk

    def archiver_stats(self) -> ArchiverStats | None:
        return self._ask("archiver_stats", self.archiver)

    def stop_database(self) -> None:
        self._do("stop_database", self.stop_ok)

    def start_database(self) -> None:
        ok = self.start_results.pop(0) if len(self.start_results) > 1 else self.start_results[0]
        self._do("start_database", ok)

    def remove_dcs_state(self) -> None:
        self._do("remove_dcs_state", self.remove_dcs_ok)

    def start_staged_restore(self, target: RestoreTarget) -> None:
        self.restore_targets.append(target)
        self._do("start_staged_restore", self.begin_restore_ok)

    def wait_staged_restore(self) -> None:
        self._do("wait_staged_restore", self.staged_ok)

    def discard_staged_restore(self) -> None:
        self._do("discard_staged_restore", True)

    def swap_in_restored(self, aside: str = "") -> str:
        self._do("swap_in_restored", self.moved_path is not None and bool(self.moved_path or aside))
        return self.moved_path or ""

    def start_recovery(self, moved: str) -> None:
        self._do(f"start_recovery({moved})", self.start_recovery_ok)

    def recovery(self) -> Recovery | None:
        self.calls.append("workload.recovery")
        return self.recovered

    def set_passwords(self) -> None:
        self._do("set_passwords", True)

    def switch_wal(self) -> None:
        self._do("switch_wal", True)

    def move_data_aside(self) -> str | None:
        self._do("move_data_aside", self.moved_path is not None)
        return self.moved_path or None

    def move_data_back(self, moved_path: str) -> None:
        self._do(f"move_data_back({moved_path})", self.move_back_ok)

    def remove_moved_data(self, moved_path: str) -> None:
        self._do(f"remove_moved_data({moved_path})", True)

    def remove_moved_data_later(self, moved_path: str) -> None:
        self._do(f"remove_moved_data_later({moved_path})", True)

    def wait_until_leader(self, timeout: float) -> bool:
        self.calls.append("workload.wait_until_leader")
        if self.leads_after_start:
            self.service_running = True  # Patroni runs, and leads
        return self.leads_after_start

    def apply_config(self, config: WorkloadConfig) -> None:
        self.calls.append(describe_config(config))
        self.configs.append(config)
        if self.on_apply:
            error = self.on_apply.pop(0)
            if isinstance(error, Exception):
                raise error

    def start_tls_server(self) -> None:
        self._do("start_tls_server", self.start_tls_ok)

    def stop_tls_server(self) -> None:
        self._do("stop_tls_server", True)


# ---------------------------------------------------------------------------
# pgBackRest


@dataclass
class FakeBackupTool:
    calls: list[str]
    stanza_create_result: CommandResult = field(default_factory=ok)
    check_results: list[CommandResult] = field(default_factory=lambda: [ok()])
    backup_result: CommandResult = field(
        default_factory=lambda: ok(stdout="P00   INFO: new backup label = 20261128-150000F\n")
    )
    backup_raises: Exception | None = None
    new_backup: BackupRecord | None = None  # added to info() by a successful backup
    stanzas: list[StanzaInfo] = field(default_factory=list)
    info_error: str | None = None
    timeline_records: dict[str, list[TimelineRecord]] = field(default_factory=dict)
    timelines_error: str | None = None
    segments: dict[str, list[ArchivedSegment]] = field(default_factory=dict)
    # timeline -> its .history branches; a timeline not here cannot be read (an error)
    histories: dict[int, tuple[TimelineBranch, ...]] = field(default_factory=dict)
    ping_ok: bool = True
    segments_error: str | None = None  # archive_segments raises BackupToolError with it
    expire_result: CommandResult = field(default_factory=ok)
    expire_removes: tuple[str, ...] = ()  # labels a successful expire takes out of info()
    expire_archive_min: str | None = None  # the archive's oldest segment after an expire
    annotate_result: CommandResult = field(default_factory=ok)

    # segment name -> its last commit time (None: no commit); a segment not here raises.
    # Asked for the commits before an LSN (a backup's end): none, unless given here.
    commit_times: dict[str, datetime | None] = field(default_factory=dict)
    commits_before: dict[str, datetime | None] = field(default_factory=dict)
    verify_report: VerifyReport | None = None  # None: verify fails

    def stanza_create(self) -> CommandResult:
        self.calls.append("backup_tool.stanza_create")
        return self.stanza_create_result

    def check(self) -> CommandResult:
        self.calls.append("backup_tool.check")
        if len(self.check_results) > 1:
            return self.check_results.pop(0)
        return self.check_results[0]

    def backup(
        self, backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        watched = f", primary={primary}" if primary is not None else ""
        self.calls.append(f"backup_tool.backup({backup_type}, on_primary={on_primary}{watched})")
        if self.backup_raises is not None:
            raise self.backup_raises
        if self.backup_result.ok and self.new_backup is not None:
            self.stanzas = [
                replace(s, backups=(*s.backups, self.new_backup))
                if s.name == self.new_backup.stanza
                else s
                for s in self.stanzas
            ]
        return self.backup_result

    def info(self, stanza: str | None = None) -> list[StanzaInfo]:
        self.calls.append(f"backup_tool.info({stanza or ''})")
        if self.info_error is not None:
            raise BackupToolError(self.info_error)
        return [s for s in self.stanzas if stanza is None or s.name == stanza]

    def timelines(self, stanza: str) -> list[TimelineRecord]:
        self.calls.append(f"backup_tool.timelines({stanza})")
        if self.timelines_error is not None:
            raise BackupToolError(self.timelines_error)
        return list(self.timeline_records.get(stanza, []))

    def history(self, record: TimelineRecord) -> tuple[TimelineBranch, ...]:
        self.calls.append(f"backup_tool.history({record.timeline})")
        if record.timeline not in self.histories:
            raise BackupToolError(f"ERROR: [055]: unable to open missing file '{record.key}'")
        return self.histories[record.timeline]

    def archive(self, stanza: str) -> ArchiveListing:
        """:meth:`timelines` and :meth:`archive_segments` as one listing (one call; it
        fails as the timelines' listing does)."""
        self.calls.append(f"backup_tool.archive({stanza})")
        if self.timelines_error is not None:
            raise BackupToolError(self.timelines_error)
        return ArchiveListing(
            tuple(self.timeline_records.get(stanza, [])), tuple(self._segments(stanza))
        )

    def info_and_archive(self, stanza: str) -> tuple[list[StanzaInfo], ArchiveListing | None]:
        """:meth:`info`, then :meth:`archive` when the stanza exists (the real adapter
        runs both at once and drops the listing of a stanza ``info`` does not show)."""
        stanzas = self.info()
        if not any(s.name == stanza and s.exists for s in stanzas):
            return stanzas, None
        return stanzas, self.archive(stanza)

    def archive_segments(self, stanza: str) -> list[ArchivedSegment]:
        """The segments given for ``stanza``; by default a whole archive: every backup's
        own WAL (a test that wants holes or empty objects sets ``segments``)."""
        self.calls.append(f"backup_tool.archive_segments({stanza})")
        if self.segments_error is not None:
            raise BackupToolError(self.segments_error)
        return self._segments(stanza)

    def _segments(self, stanza: str) -> list[ArchivedSegment]:
        if stanza in self.segments:
            return list(self.segments[stanza])
        whole: dict[tuple[int, int], ArchivedSegment] = {}
        for info in self.stanzas:
            for record in info.backups if info.name == stanza else ():
                for name in needed_by(record.wal_start, record.wal_stop):
                    tl, segno = parse_segment_name(name) or (0, 0)
                    whole[(tl, segno)] = ArchivedSegment(tl, segno, 100, name)
        return sorted(whole.values(), key=lambda s: (s.timeline, s.segno))

    def expire(self) -> CommandResult:
        self.calls.append("backup_tool.expire")
        if self.expire_result.ok and self.expire_removes:
            gone = set(self.expire_removes)
            self.stanzas = [
                replace(s, backups=tuple(b for b in s.backups if b.label not in gone))
                for s in self.stanzas
            ]
        if self.expire_result.ok and self.expire_archive_min is not None:
            self.stanzas = [replace(s, archive_min=self.expire_archive_min) for s in self.stanzas]
        return self.expire_result

    def annotate(self, label: str, annotations: Mapping[str, str]) -> CommandResult:
        pairs = tuple(sorted(annotations.items()))
        self.calls.append(f"backup_tool.annotate({label}, {dict(pairs)})")
        if self.annotate_result.ok:
            self.stanzas = [
                replace(
                    s,
                    backups=tuple(
                        replace(b, annotations=pairs) if b.label == label else b for b in s.backups
                    ),
                )
                for s in self.stanzas
            ]
        return self.annotate_result

    def last_commit_time(
        self, segment: ArchivedSegment, before_lsn: str | None = None
    ) -> datetime | None:
        if before_lsn is not None:
            self.calls.append(f"backup_tool.last_commit_time({segment.name}, {before_lsn})")
            return self.commits_before.get(segment.name)
        self.calls.append(f"backup_tool.last_commit_time({segment.name})")
        if segment.name not in self.commit_times:
            raise BackupToolError(f"pg_waldump {segment.name}: could not read it")
        return self.commit_times[segment.name]

    def verify(self) -> VerifyReport:
        self.calls.append("backup_tool.verify")
        if self.verify_report is None:
            raise BackupToolError("ERROR: [039]: HTTP request failed")
        return self.verify_report

    def server_ping(self, host: str) -> bool:
        self.calls.append(f"backup_tool.server_ping({host})")
        return self.ping_ok

    def error_line(self, result: CommandResult) -> str:
        lines = [ln.strip() for ln in (result.stderr + "\n" + result.stdout).splitlines()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        if errors:
            return errors[0]
        return next((ln for ln in reversed(lines) if ln), "unknown error")


# ---------------------------------------------------------------------------
# S3


@dataclass
class FakeObjectStore:
    calls: list[str]
    objects: dict[str, bytes] = field(default_factory=dict)
    ensure_error: str | None = None
    ensure_forbidden: str | None = None  # the bucket check answered 403
    created: bool = False
    get_error: str | None = None
    put_errors: dict[str, str] = field(default_factory=dict)  # key suffix -> reason
    # key -> what another writer puts there right after our put (a concurrent claim)
    overwrite_after_put: dict[str, bytes] = field(default_factory=dict)
    list_error: str | None = None
    delete_error: str | None = None
    # run after each listing: another unit acting between two of our requests
    after_list: list[Callable[[FakeObjectStore], None]] = field(default_factory=list)

    def ensure_bucket(self) -> bool:
        self.calls.append("object_store.ensure_bucket")
        if self.ensure_error is not None:
            raise ObjectStoreError(self.ensure_error)
        if self.ensure_forbidden is not None:
            raise ObjectStoreForbidden(self.ensure_forbidden)
        return self.created

    def put(self, key: str, body: bytes) -> None:
        self.calls.append(f"object_store.put({key})")
        for suffix, reason in self.put_errors.items():
            if key.endswith(suffix):
                raise ObjectStoreError(reason)
        self.objects[key] = self.overwrite_after_put.get(key, body)

    def get(self, key: str) -> bytes | None:
        self.calls.append(f"object_store.get({key})")
        if self.get_error is not None:
            raise ObjectStoreError(self.get_error)
        return self.objects.get(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        self.calls.append(f"object_store.list_keys({prefix})")
        if self.list_error is not None:
            raise ObjectStoreError(self.list_error)
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        for hook in self.after_list:
            hook(self)
        return keys

    def delete(self, key: str) -> None:
        self.calls.append(f"object_store.delete({key})")
        if self.delete_error is not None:
            raise ObjectStoreError(self.delete_error)
        self.objects.pop(key, None)


# ---------------------------------------------------------------------------
# The host


class FakeHost:
    """A unit of a cluster, by default: leader, primary, single unit, no TLS, valid S3
    settings, cluster initialised, nothing in the repository."""

    def __init__(
        self,
        *,
        leader: bool = True,
        status: UnitStatus | None = None,
        app: Mapping[str, str] | None = None,
        unit: Mapping[str, str] | None = None,
        peers: Mapping[str, Mapping[str, str]] | None = None,
        planned_units: int = 1,
        s3: Mapping[str, str] | None = VALID_S3,
        tls: TlsMaterial | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.calls: list[str] = []
        self.options: dict[str, str] = dict(options or {})
        self.unit = "main/0"
        self.leader = leader
        self.status = status or UnitStatus.active()
        self._app = Bag("app_data", self.calls, {"cluster_initialised": "True", **(app or {})})
        self._app.writable = leader
        self._unit = Bag("unit_data", self.calls, unit)
        self.peer_bags: dict[str, dict[str, str]] = {k: dict(v) for k, v in (peers or {}).items()}
        # Units peers() lists whose bag peer_data() leaves out (the local host, empty bags).
        self.bagless_peers: list[str] = []
        self.planned = planned_units
        self.s3 = dict(s3) if s3 is not None else None
        self.tls_material = tls
        self.fake_workload = FakeWorkload(self.calls)
        self.fake_tool = FakeBackupTool(self.calls)
        self.store = FakeObjectStore(self.calls)
        self.store_settings: list[S3Settings] = []
        self.clock = NOW

    # -- what the tests read ------------------------------------------------

    @property
    def effects(self) -> list[str]:
        return [c for c in self.calls if c not in WORKLOAD_QUERIES]

    @property
    def app_dict(self) -> dict[str, str]:
        return self._app.as_dict()

    @property
    def unit_dict(self) -> dict[str, str]:
        return self._unit.as_dict()

    def set_leader(self, leader: bool) -> None:
        self.leader = leader
        self._app.writable = leader

    # -- Host ---------------------------------------------------------------

    @property
    def unit_name(self) -> str:
        return self.unit

    @property
    def stanza_name(self) -> str:
        return STANZA

    @property
    def cluster_id(self) -> str:
        return CLUSTER_ID

    def is_leader(self) -> bool:
        return self.leader

    def get_status(self) -> UnitStatus:
        return self.status

    def set_status(self, status: UnitStatus) -> None:
        self.calls.append(f"set_status({status})")
        self.status = status

    @property
    def app_data(self) -> MutableMapping[str, str]:
        return self._app

    @property
    def unit_data(self) -> MutableMapping[str, str]:
        return self._unit

    def peer_data(self) -> Mapping[str, Mapping[str, str]]:
        return self.peer_bags

    def planned_units(self) -> int:
        return self.planned

    def peers(self) -> Sequence[Peer]:
        names = sorted({*self.peer_bags, *self.bagless_peers})
        return [Peer(name, f"10.0.0.{i + 2}") for i, name in enumerate(names)]

    def s3_parameters(self) -> Mapping[str, str] | None:
        return self.s3

    def tls(self) -> TlsMaterial | None:
        return self.tls_material

    def config_options(self) -> Mapping[str, str]:
        return self.options

    @property
    def workload(self) -> FakeWorkload:
        return self.fake_workload

    @property
    def backup_tool(self) -> FakeBackupTool:
        return self.fake_tool

    def object_store(self, settings: S3Settings) -> FakeObjectStore:
        self.store_settings.append(settings)
        return self.store

    def now(self) -> datetime:
        return self.clock

    def describe(self) -> Mapping[str, str]:
        return {"Host": "test-host", "pgbackups Version": "0.1.0"}

    def log_hint(self) -> str:
        return LOG_HINT


def _conforms(host: FakeHost) -> None:
    """mypy checks that FakeHost is a Host (``mypy tests/unit/fakes.py``)."""
    from pgbackups.core.host import Host

    _: Host = host
