"""Fakes at the adapter boundary only: the workload, pgBackRest, S3 and the TLS files.

Each records its calls in order (``World.calls``), so a test can check the side effects
of a hook as well as the state out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from pgbackups.adapters.certificates import CertificateAuthority
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
    Recovery,
    RestoreTarget,
    TlsMaterial,
    WorkloadConfig,
    WorkloadError,
)
from pgbackups.core.ids import label_to_id
from pgbackups.core.repository import (
    BackupRecord,
    StanzaInfo,
    TimelineBranch,
    TimelineRecord,
    VerifiedBackup,
    VerifyReport,
)
from pgbackups.core.settings import S3Settings

OK = CommandResult(("pgbackrest",), 0, "", "")
# The last commit every archived segment holds, as the fake reads it.
LAST_COMMIT = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def failed(error: str, code: int = 1) -> CommandResult:
    return CommandResult(("pgbackrest",), code, "", f"ERROR: [{code:03d}]: {error}\n")


def backup_record(stanza: str, label: str, *, error: bool = False) -> BackupRecord:
    stamp = label.rsplit("_", maxsplit=1)[-1][:15]
    start = datetime.strptime(stamp, "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    return BackupRecord(
        label=label,
        backup_id=label_to_id(label),
        type={"F": "full", "D": "diff", "I": "incr"}[label[-1]],
        stanza=stanza,
        error=error,
        error_message="",
        lsn_start="0/2000028",
        lsn_stop="0/2000100",
        timeline=1,
        wal_start="000000010000000000000002",
        wal_stop="000000010000000000000002",
        reference=(),
        prior=None,
        start=start,
        stop=start,
        size=100,
        delta=100,
        repo_size=50,
        repo_delta=50,
    )


def stanza_info(name: str, *backups: BackupRecord, system_id: int = 7) -> StanzaInfo:
    return StanzaInfo(
        name=name,
        status_code=0 if backups else 2,
        status_message="ok" if backups else "no valid backups",
        system_ids=(system_id,),
        backup_lock_held=False,
        backups=tuple(backups),
        archive_min=None,
        archive_max=None,
    )


@dataclass
class FakeWorkload:
    """An action scripted to fail raises WorkloadError, as the protocol says
    (``moved=None``: the move fails; ``""``: nothing to move)."""

    calls: list[str]
    installed_ok: bool = True
    initialised: bool = True
    primary: bool = True
    running: bool = True
    unavailable: bool = False  # Patroni's REST does not answer: the queries say None
    state: str | None = "running"
    primary_addr: str | None = "10.0.0.1"
    sysid: int | None = 7
    timeline: int | None = 1
    stop_ok: bool = True
    start_ok: bool = True
    dcs_ok: bool = True
    moved: str | None = "/var/lib/postgresql/16/pgbackups.before-restore-1"
    failed_bootstrap: bool = False
    disk: DiskSpace | None = None
    service_running: bool = True  # Patroni's systemd service (running: the member)
    tls_server_starts: bool = True
    tls_server_running: bool = False
    configs: list[WorkloadConfig] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    replica_to_take_over: str | None = "pgbackups-postgresql-1"
    leave_ok: bool = True
    still_running: set[str] = field(default_factory=set)  # departed units' addresses
    archiver: ArchiverStats | None = None  # None: PostgreSQL does not answer
    staged_ok: bool = True  # pgBackRest's restore beside the data directory
    recovered: Recovery | None = None  # the restored PostgreSQL, before Patroni takes it
    leads_after_start: bool = False  # Patroni holds the leader key soon after a takeover

    def _do(self, call: str, ok: bool) -> None:
        self.calls.append(call)
        if not ok:
            raise WorkloadError(f"{call} failed")

    def unsupported(self) -> str | None:
        return None

    def install(self) -> bool:
        self.calls.append("install")
        return self.installed_ok

    def installed_version(self) -> str | None:
        return "16.9-0ubuntu0.24.04.1" if self.installed_ok else None

    def is_cluster_initialised(self) -> bool | None:
        return self.initialised

    def is_primary(self) -> bool | None:
        return None if self.unavailable else self.primary

    def is_member_running(self) -> bool | None:
        return self.running and not self.unavailable

    def member_state(self) -> str | None:
        return None if self.unavailable else self.state

    def primary_address(self) -> str | None:
        return self.primary_addr

    def system_identifier(self) -> int | None:
        return self.sysid

    def current_timeline(self) -> int | None:
        return self.timeline

    def streaming_timeline(self) -> int | None:
        return None

    def replica_creation_stalled(self) -> bool | None:
        return None

    def recreate_replica(self) -> None:
        return None

    def timeline_history(self, timeline: int) -> str | None:
        return None

    def data_dir_users(self) -> list[str]:
        return []

    def stop_database(self) -> None:
        self._do("stop_database", self.stop_ok)

    def start_database(self) -> None:
        self._do("start_database", self.start_ok)

    def remove_dcs_state(self) -> None:
        self._do("remove_dcs_state", self.dcs_ok)

    def start_staged_restore(self, target: RestoreTarget) -> None:
        self.calls.append(f"start_staged_restore {target.label}")

    def wait_staged_restore(self) -> None:
        self._do("wait_staged_restore", self.staged_ok)

    def discard_staged_restore(self) -> None:
        self._do("discard_staged_restore", True)

    def swap_in_restored(self, aside: str = "") -> str:
        self._do("swap_in_restored", self.moved is not None and bool(self.moved or aside))
        return self.moved or ""

    def start_recovery(self, moved: str) -> None:
        self._do(f"start_recovery {moved}", self.start_ok)

    def recovery(self) -> Recovery | None:
        return self.recovered

    def set_passwords(self) -> None:
        self._do("set_passwords", True)

    def switch_wal(self) -> None:
        self._do("switch_wal", True)

    def move_data_aside(self) -> str | None:
        self._do("move_data_aside", self.moved is not None)
        return self.moved or None

    def move_data_back(self, moved_path: str) -> None:
        self._do(f"move_data_back {moved_path}", True)

    def remove_moved_data(self, moved_path: str) -> None:
        self._do(f"remove_moved_data {moved_path}", True)

    def remove_moved_data_later(self, moved_path: str) -> None:
        self._do(f"remove_moved_data_later {moved_path}", True)

    def wait_until_leader(self, timeout: float) -> bool:
        if self.leads_after_start:
            self.service_running = True  # Patroni runs, and leads
        return self.leads_after_start

    def apply_config(self, config: WorkloadConfig) -> None:
        self.calls.append("apply_config")
        self.configs.append(config)

    def start_tls_server(self) -> None:
        self.tls_server_running = self.tls_server_starts
        self._do("start_tls_server", self.tls_server_starts)

    def stop_tls_server(self) -> None:
        self.tls_server_running = False
        self._do("stop_tls_server", True)

    def bootstrap_failed(self) -> bool | None:
        return self.failed_bootstrap

    def is_database_service_running(self) -> bool | None:
        return self.service_running

    def data_disk(self) -> DiskSpace | None:
        return self.disk

    def archiver_stats(self) -> ArchiverStats | None:
        return self.archiver

    def switch_over_away(self) -> str | None:
        """As MachineWorkload's: None when not the primary; WorkloadError without a
        replica to take over."""
        if not self.primary:
            return None
        self._do("switch_over_away", self.replica_to_take_over is not None)
        self.primary = False
        return self.replica_to_take_over

    def leave_cluster(self) -> None:
        """MachineWorkload's order (switchover, stop, Raft removal through a partner) is
        tested on the real one (test_switchover.py); here only that the charm asks."""
        self._do("leave_cluster", self.leave_ok)

    def forget_dcs_member(self, address: str) -> None:
        """As MachineWorkload's: refused while the departed member still runs Patroni."""
        self._do(f"forget_dcs_member {address}", address not in self.still_running)
        self.forgotten.append(address)


@dataclass
class FakeBackupTool:
    calls: list[str]
    stanza_create_result: CommandResult = OK
    check_results: list[CommandResult] = field(default_factory=list)  # consumed; then OK
    backup_result: CommandResult = OK
    stanzas: list[StanzaInfo] = field(default_factory=list)
    info_error: str | None = None
    ping: bool = True
    taken: list[str] = field(default_factory=list)  # labels of the backups taken, oldest first
    # What annotate wrote, by label: info shows it on the backup, as pgBackRest does.
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    expire_result: CommandResult = OK

    def stanza_create(self) -> CommandResult:
        self.calls.append("stanza_create")
        return self.stanza_create_result

    def check(self) -> CommandResult:
        self.calls.append("check")
        return self.check_results.pop(0) if self.check_results else OK

    def backup(
        self, backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        # The primary watched by a replica's backup is left out: no charm test asks.
        self.calls.append(f"backup {backup_type} on_primary={on_primary}")
        if self.backup_result.ok:
            self.taken.append(self._new_label(backup_type))
        return self.backup_result

    def _new_label(self, backup_type: str) -> str:
        """As pgBackRest names a new backup: this host's clock; with no full backup before
        it, a differential or incremental one is taken as a full."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        fulls = [b.label for s in self.stanzas for b in s.backups if b.type == "full"]
        fulls += [label for label in self.taken if label.endswith("F")]
        if backup_type == "full" or not fulls:
            return f"{stamp}F"
        return f"{fulls[-1]}_{stamp}{'D' if backup_type == 'diff' else 'I'}"

    def info(self, stanza: str | None = None) -> list[StanzaInfo]:
        self.calls.append("info")
        if self.info_error:
            raise BackupToolError(self.info_error)
        stanzas = [s for s in self.stanzas if stanza is None or s.name == stanza]
        # The backups taken go into the stanza asked for, or the first one (list-backups
        # asks for all).
        own = stanza if stanza is not None else (stanzas[0].name if stanzas else None)
        if own is not None and self.taken:
            mine = next((s for s in stanzas if s.name == own), None)
            before = mine.backups if mine is not None else ()
            new = tuple(backup_record(own, label) for label in self.taken)
            others = [s for s in stanzas if s.name != own]
            stanzas = [stanza_info(own, *before, *new), *others]
        return [replace(s, backups=tuple(self._annotated(b) for b in s.backups)) for s in stanzas]

    def _annotated(self, record: BackupRecord) -> BackupRecord:
        extra = self.annotations.get(record.label)
        if not extra:
            return record
        return replace(record, annotations=(*record.annotations, *sorted(extra.items())))

    def timelines(self, stanza: str) -> list[TimelineRecord]:
        return []

    def history(self, record: TimelineRecord) -> tuple[TimelineBranch, ...]:
        self.calls.append(f"history {record.timeline}")
        return ()

    def archive(self, stanza: str) -> ArchiveListing:
        self.calls.append(f"archive {stanza}")
        return ArchiveListing((), tuple(self._segments(stanza)))

    def info_and_archive(self, stanza: str) -> tuple[list[StanzaInfo], ArchiveListing | None]:
        """info, then the archive listing when the stanza exists (as the adapter)."""
        stanzas = self.info()
        if not any(s.name == stanza and s.exists for s in stanzas):
            return stanzas, None
        return stanzas, self.archive(stanza)

    def archive_segments(self, stanza: str) -> list[ArchivedSegment]:
        """A whole archive: every backup's own WAL, each object with bytes in it."""
        self.calls.append(f"archive_segments {stanza}")
        return self._segments(stanza)

    def _segments(self, stanza: str) -> list[ArchivedSegment]:
        names = {
            name
            for info in self.stanzas
            if info.name == stanza
            for record in info.backups
            for name in needed_by(record.wal_start, record.wal_stop)
        }
        parsed = [(parse_segment_name(n) or (0, 0), n) for n in sorted(names)]
        return [ArchivedSegment(tl, segno, 100, name) for (tl, segno), name in parsed]

    def expire(self) -> CommandResult:
        self.calls.append("expire")
        return self.expire_result

    def annotate(self, label: str, annotations: Mapping[str, str]) -> CommandResult:
        self.calls.append(
            f"annotate {label} " + ",".join(f"{k}={v}" for k, v in annotations.items())
        )
        self.annotations.setdefault(label, {}).update(annotations)
        return OK

    def verify(self) -> VerifyReport:
        """Every backup of the stanza valid."""
        self.calls.append("verify")
        backups = tuple(
            VerifiedBackup(b.label, "valid", 10, 10, 0, 0, 0, 0)
            for info in self.stanzas
            for b in info.backups
        )
        return VerifyReport(self.stanzas[0].name if self.stanzas else "", True, backups, 1, 1)

    def last_commit_time(
        self, segment: ArchivedSegment, before_lsn: str | None = None
    ) -> datetime | None:
        """Every segment's last commit: LAST_COMMIT (none before a backup's end)."""
        self.calls.append(f"last_commit_time {segment.name} {before_lsn or ''}".rstrip())
        return LAST_COMMIT if before_lsn is None else None

    def server_ping(self, host: str) -> bool:
        self.calls.append(f"server_ping {host}")
        return self.ping

    def error_line(self, result: CommandResult) -> str:
        for line in result.stderr.splitlines():
            if line.startswith("ERROR:"):
                return line
        return "unknown error, see the pgBackRest log"


@dataclass
class FakeObjectStore:
    calls: list[str]
    objects: dict[str, bytes] = field(default_factory=dict)
    unreachable: str | None = None
    put_fails_for: tuple[str, ...] = ()  # key suffixes whose upload fails
    settings: list[S3Settings] = field(default_factory=list)

    def ensure_bucket(self) -> bool:
        self.calls.append("ensure_bucket")
        if self.unreachable:
            raise ObjectStoreError(self.unreachable)
        return False

    def put(self, key: str, body: bytes) -> None:
        self.calls.append(f"put {key}")
        if self.unreachable or any(key.endswith(s) for s in self.put_fails_for):
            raise ObjectStoreError(self.unreachable or "AccessDenied")
        self.objects[key] = body

    def get(self, key: str) -> bytes | None:
        if self.unreachable:
            raise ObjectStoreError(self.unreachable)
        return self.objects.get(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        if self.unreachable:
            raise ObjectStoreError(self.unreachable)
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.calls.append(f"delete {key}")
        if self.unreachable:
            raise ObjectStoreError(self.unreachable)
        self.objects.pop(key, None)


@dataclass
class FakeTlsFiles:
    """The disk under the unit's certificate: what was stored, in order (``stored``)."""

    calls: list[str]
    key: str | None = None
    cert: str | None = None
    cas: list[str] | None = None
    stored: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def material(self) -> TlsMaterial | None:
        if self.key and self.cert and self.cas:
            return TlsMaterial("/tls/ca.crt", "/tls/unit.crt", "/tls/unit.key")
        return None

    def store(self, key: str, certificate: str, cas: list[str]) -> bool:
        changed = (self.key, self.cert, self.cas) != (key, certificate, cas)
        self.key, self.cert, self.cas = key, certificate, list(cas)
        self.calls.append("store_tls")
        if changed:
            self.stored.append((key, certificate, list(cas)))
        return changed

    def clear(self) -> None:
        self.calls.append("clear_tls")
        self.key = self.cert = self.cas = None


@dataclass
class FakeBackupTls:
    """This unit's pgBackRest certificate: issued once per (CA, name, addresses). Its
    own log (``issued``), not World.calls: most hooks issue it the first time they run."""

    issued: list[str] = field(default_factory=list)
    issued_for: tuple[str, str, tuple[str, ...]] | None = None

    def material(self) -> TlsMaterial | None:
        if self.issued_for is None:
            return None
        return TlsMaterial("/pgbr-tls/ca.crt", "/pgbr-tls/unit.crt", "/pgbr-tls/unit.key")

    def ensure(self, ca: CertificateAuthority, common_name: str, names: Sequence[str]) -> bool:
        wanted = (ca.cert_pem, common_name, tuple(names))
        if wanted == self.issued_for:
            return False
        self.issued.append(f"{common_name} {list(names)} from {ca.cert_pem.splitlines()[1]}")
        self.issued_for = wanted
        return True


class World:
    """Every fake adapter of one test, sharing one call log."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.workload = FakeWorkload(self.calls)
        self.tool = FakeBackupTool(self.calls)
        self.store = FakeObjectStore(self.calls)
        self.tls_files = FakeTlsFiles(self.calls)
        self.backup_tls = FakeBackupTls()
        self.cas_made = 0

    def new_ca(self) -> CertificateAuthority:
        self.cas_made += 1
        n = self.cas_made
        return CertificateAuthority(
            cert_pem=f"-----BEGIN CERTIFICATE-----\nNEW-CA-{n}\n-----END CERTIFICATE-----\n",
            key_pem=f"-----BEGIN PRIVATE KEY-----\nNEW-CA-KEY-{n}\n-----END PRIVATE KEY-----\n",
        )

    def store_for(self, settings: S3Settings) -> FakeObjectStore:
        self.store.settings.append(settings)
        return self.store

    def with_tls(self) -> World:
        self.tls_files.key = "KEY"
        self.tls_files.cert = "CERT"
        self.tls_files.cas = ["CA"]
        return self
