"""pgBackRest: the configuration file, the commands, and what they answer.

Three layers, each usable alone:

- :func:`render_config` turns a :class:`PgBackRestConfig` into the text of
  ``pgbackrest.conf`` (pure); :func:`write_config` and :func:`write_ca_chain` put
  files on disk, owned by the database user, atomically.
- :func:`parse_info` turns ``pgbackrest info --output=json`` into
  :class:`~pgbackups.core.repository.StanzaInfo` records (pure);
  :func:`parse_history_listing` does the same for ``repo-ls`` of ``.history`` files.
- :class:`PgBackRest` runs the commands as the database user with timeouts and
  implements :class:`pgbackups.core.host.BackupTool`.

Facts about pgBackRest 2.45 (Debian 12) this module relies on, all checked against the
installed program (``pgbackrest help backup <option>``):

- ``repo-bundle`` exists (since 2.39); ``repo-retention-full-type=time`` exists;
  ``archive-async`` / ``archive-push-queue-max`` exist (they need ``spool-path``).
- ``repo-block`` exists in 2.45 but is marked "FOR BETA TESTING ONLY": it is rendered
  only for 2.46 and later (see :class:`PgBackRestFeatures`).
- 2.45 has no S3 storage-class option: ``storage-class`` is rendered only when the
  installed build lists such an option (:func:`detect_features`).
- The S3 driver is HTTPS only and does not match IP SANs: ``repo1-s3-endpoint`` is the
  endpoint's host name (use ``localhost``, not ``127.0.0.1``), the port goes into
  ``repo1-storage-port``.
- ``info`` exits 0 for a missing stanza and for an unreachable repository; the JSON
  ``status.code`` says what happened (1 missing stanza path, 2 no valid backups,
  3 missing stanza data, 99 other: the repository could not be read).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pgbackups.adapters import processes
from pgbackups.adapters.files import write_atomically
from pgbackups.adapters.processes import OsUser
from pgbackups.core import redact
from pgbackups.core.archive import SEGMENTS_PER_XLOGID, ArchivedSegment, ArchiveListing
from pgbackups.core.host import BackupToolError, CommandResult, RestoreTarget
from pgbackups.core.ids import label_to_id
from pgbackups.core.policy import Retention
from pgbackups.core.redact import REDACTED
from pgbackups.core.repository import (
    BackupRecord,
    StanzaInfo,
    TimelineBranch,
    TimelineRecord,
    VerifiedBackup,
    VerifyReport,
    lsn_value,
    parse_history_file,
)
from pgbackups.core.settings import CIPHER_TYPE, S3Settings, ca_chain_text

log = logging.getLogger(__name__)
# Segment objects whose commits are kept between processes: only keys that carry the
# content's checksum (archive/<stanza>/<pg>-<n>/<dir>/<segment>-<40 hex>[.ext]).
_CACHED_KEY_RE = re.compile(r"archive/[^\s]+/[0-9A-F]{24}-[0-9a-f]{40}(\.[a-z0-9]+)?")
COMMIT_CACHE_ENTRIES = 16

PROGRAM = "pgbackrest"
# Reads an archived segment's transaction records (the recoverable window's latest point).
PG_WALDUMP = "/usr/lib/postgresql/15/bin/pg_waldump"
# pgBackRest refuses an S3 repository without a region; AWS's default region is what
# every S3-compatible server (MinIO, Ceph, rclone...) accepts when it has no notion of one.
DEFAULT_REGION = "us-east-1"
BACKUP_TYPES = ("full", "diff", "incr")
UNKNOWN_ERROR = "unknown error, see the pgBackRest log"

# Options whose values are secrets, wherever they appear (config file, argv, output).
_HIDDEN_OPTIONS = (
    r"(?:repo\d+-)?(?:s3-key|s3-key-secret|s3-token|cipher-pass|azure-key|gcs-key)"
    r"|key-secret|secret-key|access-key"
)
_SECRET_NAME_RE = re.compile(_HIDDEN_OPTIONS, re.IGNORECASE)
# A piece every match of _HIDDEN_OPTIONS holds (lower case): text holding none of them
# cannot match, and a substring test skips the regex over a large listing.
_HIDDEN_OPTION_PIECES = (
    "s3-key",
    "s3-token",
    "cipher-pass",
    "azure-key",
    "gcs-key",
    "key-secret",
    "secret-key",
    "access-key",
)
# In output a value ends at a space (we cannot know more): known secrets are removed
# whole before this pattern runs (see scrub).
_SECRET_OPTION_RE = re.compile(
    rf"\b({_HIDDEN_OPTIONS})(\s*[=:]\s*)(?!<redacted>)(\S+)", re.IGNORECASE
)
_ERROR_LINE_RE = re.compile(r"(ERROR: \[\d+\]: .*?)\s*$")
_LOG_PREFIX_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} P\d+\s+")
_S3_CODE_RE = re.compile(r"<Code>([^<]{1,100})</Code>")
_HISTORY_RE = re.compile(r"(?:^|/)([0-9A-Fa-f]{8})\.history$")
_VERSION_RE = re.compile(r"pgBackRest (\d+)\.(\d+)")


# ---------------------------------------------------------------------------
# Versions and features


@dataclass(frozen=True)
class PgBackRestFeatures:
    """What the installed pgBackRest accepts (the renderer only emits what it accepts)."""

    version: tuple[int, int] = (2, 45)
    # The name of the S3 storage-class option when the build has one (2.45 has none).
    storage_class_option: str | None = None

    @property
    def bundle(self) -> bool:
        return self.version >= (2, 39)

    @property
    def block_incremental(self) -> bool:
        # Present but "FOR BETA TESTING ONLY" in 2.45; production-ready from 2.46.
        return self.version >= (2, 46)


def parse_version(text: str) -> tuple[int, int] | None:
    """``pgBackRest 2.45`` (or ``pgBackRest 2.58.0``) → ``(2, 45)``."""
    match = _VERSION_RE.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def detect_features(
    *, user: OsUser | None = None, program: str = PROGRAM, timeout: float = 15.0
) -> PgBackRestFeatures:
    """Ask the installed pgBackRest its version and options (falls back to 2.45's).

    A successful answer is kept per (user, program) for the life of the process: it costs
    two subprocesses, and the charm asks on every configuration change. A failed probe
    is not kept, so a probe made before pgBackRest is installed does not stick.
    """
    key = (user, program)
    if key in _PROBED_FEATURES:
        return _PROBED_FEATURES[key]
    result = processes.run([program, "version"], user=user, timeout=timeout)
    version = parse_version(result.stdout) if result.ok else None
    if version is None:
        log.warning("could not read the pgBackRest version; assuming 2.45")
    storage_class: str | None = None
    listing = processes.run([program, "help", "backup"], user=user, timeout=timeout)
    if listing.ok:
        match = re.search(r"--(repo-(?:s3-)?storage-class)\b", listing.stdout)
        storage_class = match.group(1) if match else None
    features = PgBackRestFeatures(version=version or (2, 45), storage_class_option=storage_class)
    if version is not None and listing.ok:
        _PROBED_FEATURES[key] = features
    return features


_PROBED_FEATURES: dict[tuple[OsUser | None, str], PgBackRestFeatures] = {}


# ---------------------------------------------------------------------------
# Configuration


def default_process_max(cpus: int | None = None) -> int:
    """``min(4, max(1, cpus))``: enough parallelism without starving PostgreSQL.

    Used for backup and for restore. Measured on 2 CPUs (docs/performance.md, 517 MB
    database, zst, rclone S3): a full backup at process-max 1 took 1.23x the time it took
    at 2, a restore 1.39x. Beyond 2 CPUs nothing was measured here: hence the cap of 4,
    which leaves PostgreSQL CPUs on larger machines while a backup runs.
    """
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    return min(4, max(1, count))


@dataclass(frozen=True)
class TlsServerConfig:
    """This unit's pgBackRest TLS server, and the client certificate it presents to peers.

    ``address`` is where the server listens. ``allowed_clients`` are the common names of
    the client certificates allowed to use this stanza (``tls-server-auth``). The same
    certificate and key are used as the client certificate when reaching a peer.
    """

    address: str
    cert_file: str
    key_file: str
    ca_file: str
    port: int = 8432
    allowed_clients: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerHost:
    """Another unit's PostgreSQL, reached through its pgBackRest TLS server (``pgN-host``).

    ``host`` must be a DNS name: pgBackRest 2.45 does not match IP SANs.
    """

    host: str
    pg_path: str
    port: int = 8432  # its TLS server port
    pg_port: int = 5432
    pg_socket_path: str | None = None


@dataclass(frozen=True)
class LocalPeer:
    """Another PostgreSQL instance of the cluster on this same machine (``pgN-path`` with no
    ``pgN-host``): pgBackRest reaches it directly. The local runtime uses this so that a
    leader that is not the primary finds the primary without a TLS server."""

    pg_path: str
    pg_port: int
    pg_socket_path: str | None = None


@dataclass(frozen=True)
class PgBackRestConfig:
    stanza: str
    pg_path: str
    s3: S3Settings | None = None  # None: no repository (pg and TLS server sections only)
    pg_port: int = 5432
    pg_socket_path: str | None = None
    pg_user: str = "postgres"
    log_path: str = "/var/log/pgbackrest"
    lock_path: str = "/tmp/pgbackrest"
    spool_path: str = "/var/spool/pgbackrest"
    ca_file: str | None = None  # the S3 CA chain on disk (see write_ca_chain)
    # zst: the smallest repository, near lz4's speed, twice gz's. Full backup of a 517 MB
    # database, half incompressible (docs/performance.md): repository zst 228 MB, gz 232,
    # lz4 248, none 518; time vs zst at process-max 1 / 2: lz4 0.80x / 0.86x, gz 1.94x /
    # 1.79x, none 1.31x at 2. lz4 is faster on loopback; zst's 8% fewer bytes are what an
    # S3 bill and a real network see (not measured here).
    compress_type: str = "zst"
    process_max: int = field(default_factory=default_process_max)  # see default_process_max
    restore_process_max: int = field(default_factory=default_process_max)
    # Asynchronous archive-push (batches, process-max workers, a spool queue): under pgbench
    # at full speed (1966 tps, 4.94 MB/s of WAL) at most 1 segment waited to be archived and
    # the newest archived WAL was at most 10.7 s old (docs/performance.md).
    archive_async: bool = True
    # The queue cap is what keeps an unreachable S3 from filling pg_wal: past it WAL is
    # dropped (a PITR gap, logged) instead of accumulating. 1 GiB holds 3.6 minutes of the
    # heaviest load measured here (4.94 MB/s of WAL), 80 minutes at 0.22 MB/s (5 tps).
    archive_push_queue_max: str = "1GiB"
    retention_history_days: int = 365
    retention: Retention | None = None  # None: s3.delete_older_than_days, time-based
    io_timeout: int | None = None  # seconds; pgBackRest's default is 60
    tls: TlsServerConfig | None = None
    peers: tuple[PeerHost, ...] = ()
    local_peers: tuple[LocalPeer, ...] = ()  # numbered after ``peers``
    features: PgBackRestFeatures = field(default_factory=PgBackRestFeatures)
    extra_global: tuple[tuple[str, str], ...] = ()  # appended to [global] as given


# pgBackRest's option names, and the printable ASCII its values are made of here. The
# settings are checked when they are parsed (core.settings); this is the second line:
# no value may hold a character that ends a line (pgBackRest splits on "\n", Python's
# splitlines on eight more) or that is not plain text, and no key may be anything but a
# name, whatever a caller builds.
_OPTION_KEY_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_OPTION_VALUE_RE = re.compile(r"[\x20-\x7e]*")
_STANZA_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_key(key: str) -> str:
    if _OPTION_KEY_RE.fullmatch(key) is None:
        raise ValueError(f"pgbackrest.conf option name {key!r} is not [a-z0-9-]")
    return key


def _check_value(key: str, value: str) -> str:
    if _OPTION_VALUE_RE.fullmatch(value) is None:
        # The value is not shown: it may be a secret.
        raise ValueError(
            f"pgbackrest.conf option {key} has a value that is not printable ASCII "
            "(a line break or a control character)"
        )
    return value


def _section(name: str, options: Iterable[tuple[str, object]]) -> list[str]:
    lines = [f"[{name}]"]
    for key, value in options:
        if value is None:
            continue
        text = ("y" if value else "n") if isinstance(value, bool) else str(value)
        lines.append(f"{_check_key(key)}={_check_value(key, text)}")
    return lines


def _repo_options(s3: S3Settings, cfg: PgBackRestConfig) -> list[tuple[str, object]]:
    endpoint_port = _explicit_port(s3.endpoint)
    options: list[tuple[str, object]] = [
        ("repo1-type", "s3"),
        ("repo1-path", s3.path or "/"),
        ("repo1-s3-bucket", s3.bucket),
        ("repo1-s3-endpoint", s3.endpoint_host),
        ("repo1-storage-port", endpoint_port),
        ("repo1-s3-region", s3.region or DEFAULT_REGION),
        ("repo1-s3-uri-style", s3.uri_style),
        ("repo1-s3-key", s3.access_key),
        ("repo1-s3-key-secret", s3.secret_key),
        ("repo1-storage-ca-file", cfg.ca_file if s3.tls_ca_chain and cfg.ca_file else None),
    ]
    if s3.cipher_pass:
        # In this 0640 root:db file like the S3 keys: never in argv or an environment.
        options += [("repo1-cipher-type", CIPHER_TYPE), ("repo1-cipher-pass", s3.cipher_pass)]
    if s3.storage_class and cfg.features.storage_class_option:
        option = cfg.features.storage_class_option.replace("repo-", "repo1-", 1)
        options.append((option, s3.storage_class))
    # The operator's retention wins over the S3 settings' delete-older-than-days (time).
    # pgBackRest expires after every successful backup with these, and on ``expire``.
    if cfg.retention is not None:
        options += [
            ("repo1-retention-full-type", cfg.retention.full_type),
            ("repo1-retention-full", cfg.retention.full),
            ("repo1-retention-diff", cfg.retention.diff),
        ]
    else:
        options += [
            ("repo1-retention-full-type", "time"),
            ("repo1-retention-full", s3.delete_older_than_days),
        ]
    options.append(("repo1-retention-history", cfg.retention_history_days))
    # Bundling packs small files into few S3 objects: without it a full backup of a 517 MB
    # database took 1.58x as long (about 1000 files, one request each; docs/performance.md).
    if cfg.features.bundle:
        options.append(("repo1-bundle", True))
    # Block incremental (2.46+) is detected, not assumed: Debian 12's 2.45 has it only as a
    # beta, so the benchmark could not measure it here and it is not rendered there.
    if cfg.features.block_incremental:
        options.append(("repo1-block", True))
    return options


def _explicit_port(endpoint: str) -> int | None:
    try:
        return urlsplit(endpoint).port
    except ValueError:
        return None


def render_config(cfg: PgBackRestConfig) -> str:
    """The text of ``pgbackrest.conf`` for ``cfg``. Pure: same input, same text.

    It holds the S3 secret: write it with :func:`write_config` (0640, database user).
    """
    if cfg.peers and cfg.tls is None:
        raise ValueError("peers are reached over the TLS server: a TLS configuration is needed")
    if _STANZA_RE.fullmatch(cfg.stanza) is None:
        raise ValueError(f"invalid stanza name {cfg.stanza!r}")

    global_opts: list[tuple[str, object]] = []
    if cfg.s3 is not None:
        global_opts += _repo_options(cfg.s3, cfg)
    global_opts += [
        ("log-path", cfg.log_path),
        ("lock-path", cfg.lock_path),
        ("spool-path", cfg.spool_path),
        ("log-level-console", "info"),
        ("log-level-file", "detail"),
        ("start-fast", True),
        ("compress-type", cfg.compress_type),
        ("process-max", cfg.process_max),
        ("archive-async", cfg.archive_async),
        ("io-timeout", cfg.io_timeout),
    ]
    if cfg.peers:
        global_opts.append(("backup-standby", True))
    if cfg.tls is not None:
        global_opts += [
            ("tls-server-address", cfg.tls.address),
            ("tls-server-port", cfg.tls.port),
            ("tls-server-cert-file", cfg.tls.cert_file),
            ("tls-server-key-file", cfg.tls.key_file),
            ("tls-server-ca-file", cfg.tls.ca_file),
        ]
        global_opts += [
            ("tls-server-auth", f"{_check_value('tls-server-auth', cn)}={cfg.stanza}")
            for cn in cfg.tls.allowed_clients
        ]
    global_opts += list(cfg.extra_global)

    stanza_opts: list[tuple[str, object]] = [
        ("pg1-path", cfg.pg_path),
        ("pg1-port", cfg.pg_port),
        ("pg1-socket-path", cfg.pg_socket_path),
        ("pg1-user", cfg.pg_user),
    ]
    for index, peer in enumerate(cfg.peers, start=2):
        assert cfg.tls is not None
        pg = f"pg{index}"
        stanza_opts += [
            (f"{pg}-host", peer.host),
            (f"{pg}-host-type", "tls"),
            (f"{pg}-host-port", peer.port),
            (f"{pg}-host-ca-file", cfg.tls.ca_file),
            (f"{pg}-host-cert-file", cfg.tls.cert_file),
            (f"{pg}-host-key-file", cfg.tls.key_file),
            (f"{pg}-path", peer.pg_path),
            (f"{pg}-port", peer.pg_port),
            (f"{pg}-socket-path", peer.pg_socket_path),
            (f"{pg}-user", cfg.pg_user),
        ]
    for index, local in enumerate(cfg.local_peers, start=2 + len(cfg.peers)):
        pg = f"pg{index}"
        stanza_opts += [
            (f"{pg}-path", local.pg_path),
            (f"{pg}-port", local.pg_port),
            (f"{pg}-socket-path", local.pg_socket_path),
            (f"{pg}-user", cfg.pg_user),
        ]

    lines = [
        "# Written by pgbackups; it is rewritten whenever the settings change.",
        "# It holds the S3 secret key: keep it readable by the database user only.",
    ]
    sections = [_section("global", global_opts)]
    if cfg.archive_async:
        queue = [("archive-push-queue-max", cfg.archive_push_queue_max)]
        sections.append(_section("global:archive-push", queue))
    sections.append(_section("global:restore", [("process-max", cfg.restore_process_max)]))
    sections.append(_section(cfg.stanza, stanza_opts))
    # Joined, never re-split: splitting rendered text would turn any line-breaking
    # character a value might hold into a line of its own.
    for index, section in enumerate(sections):
        lines += [*([""] if index else []), *section]
    return "\n".join(lines) + "\n"


def write_config(
    text: str, path: str | os.PathLike[str], owner: OsUser | None, *, mode: int = 0o640
) -> None:
    """Write ``pgbackrest.conf`` atomically, ``mode`` (0640 or 0600), owned by ``owner``.

    The file is created with its final mode and owner before the secret is written into
    it, then renamed over the old one, so no reader ever sees a partial or open file.
    """
    if mode & 0o007:
        raise ValueError("pgbackrest.conf holds a secret: it must not be world-accessible")
    write_atomically(text, path, owner, mode)


def write_ca_chain(
    settings: S3Settings, path: str | os.PathLike[str], owner: OsUser | None
) -> str | None:
    """Write the settings' CA chain (PEM) to ``path``; return the path, None without a chain."""
    if not settings.tls_ca_chain:
        return None
    write_atomically(ca_chain_text(settings), path, owner, 0o644)
    return str(path)


# ---------------------------------------------------------------------------
# Parsing


def _aware(epoch: Any) -> datetime:
    return datetime.fromtimestamp(int(epoch or 0), UTC)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _timeline_of(wal: str) -> int:
    try:
        return int(wal[:8], 16)
    except ValueError:
        return 0


def _backup_record(stanza: str, raw: Mapping[str, Any]) -> BackupRecord:
    label = str(raw["label"])
    archive = raw.get("archive") or {}
    lsn = raw.get("lsn") or {}
    timestamp = raw.get("timestamp") or {}
    info = raw.get("info") or {}
    repository = info.get("repository") or {}
    error = bool(raw.get("error", False))
    error_message = ""
    if error:
        files = raw.get("error-list") or []
        if isinstance(files, list) and files:
            shown = ", ".join(str(f) for f in files[:3])
            more = f" and {len(files) - 3} more" if len(files) > 3 else ""
            error_message = f"page checksum errors in {shown}{more}"
        else:
            error_message = f"the backup has errors (see pgbackrest info --set={label})"
    wal_start = str(archive.get("start") or "")
    return BackupRecord(
        label=label,
        backup_id=label_to_id(label),
        type=str(raw.get("type") or ""),
        stanza=stanza,
        error=error,
        error_message=error_message,
        lsn_start=str(lsn.get("start") or ""),
        lsn_stop=str(lsn.get("stop") or ""),
        timeline=_timeline_of(wal_start) if wal_start else 0,
        wal_start=wal_start,
        wal_stop=str(archive.get("stop") or ""),
        reference=tuple(str(r) for r in (raw.get("reference") or ())),
        prior=str(raw["prior"]) if raw.get("prior") else None,
        start=_aware(timestamp.get("start")),
        stop=_aware(timestamp.get("stop")),
        size=_int(info.get("size")),
        delta=_int(info.get("delta")),
        repo_size=_int(repository.get("size")),
        repo_delta=_int(repository.get("delta")),
        annotations=_annotations(raw.get("annotation")),
    )


def _annotations(raw: Any) -> tuple[tuple[str, str], ...]:
    """``"annotation": {"key": "value"}`` (2.41+; absent without any), sorted."""
    if not isinstance(raw, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in raw.items()))


def _stanza_info(raw: Mapping[str, Any]) -> StanzaInfo:
    name = str(raw.get("name") or "")
    status = raw.get("status") or {}
    code = _int(status.get("code"))
    message = str(status.get("message") or "")
    if code == 99:
        details = [
            condense(str((repo.get("status") or {}).get("message") or ""))
            for repo in raw.get("repo") or ()
            if _int((repo.get("status") or {}).get("code")) != 0
        ]
        details = [d for d in dict.fromkeys(details) if d and d != message]
        if details:
            message = f"{message}: {'; '.join(details)}" if message else "; ".join(details)
    lock = ((status.get("lock") or {}).get("backup") or {}).get("held")
    backups = sorted(
        (_backup_record(name, b) for b in raw.get("backup") or ()),
        key=lambda b: (b.start, b.label),
    )
    mins = [str(a["min"]) for a in raw.get("archive") or () if a.get("min")]
    maxes = [str(a["max"]) for a in raw.get("archive") or () if a.get("max")]
    return StanzaInfo(
        name=name,
        status_code=code,
        status_message=message,
        system_ids=tuple(int(db["system-id"]) for db in raw.get("db") or () if "system-id" in db),
        backup_lock_held=bool(lock),
        backups=tuple(backups),
        archive_min=min(mins) if mins else None,
        archive_max=max(maxes) if maxes else None,
    )


def parse_info(json_text: str) -> list[StanzaInfo]:
    """``pgbackrest info --output=json`` → one :class:`StanzaInfo` per stanza.

    Raises ValueError when the text is not the JSON list pgBackRest prints.
    """
    try:
        # strict=False: a status message can quote raw bytes (what a wrong passphrase
        # decrypted an info file to), control characters included.
        data = json.loads(json_text, strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"pgBackRest info did not print JSON ({exc.msg})") from exc
    if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
        raise ValueError("pgBackRest info printed JSON that is not a list of stanzas")
    try:
        return [_stanza_info(s) for s in data]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"pgBackRest info printed an unexpected shape ({exc!r})") from exc


def _listed_files(json_text: str) -> list[tuple[str, dict[str, Any]]]:
    """The files of a ``repo-ls --recurse --output=json`` listing: (path, entry).
    Raises ValueError when the output is not such a listing."""
    try:
        data = json.loads(json_text) if json_text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"pgBackRest repo-ls did not print JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError("pgBackRest repo-ls printed JSON that is not an object")
    return [
        (name, entry)
        for name, entry in data.items()
        if isinstance(entry, dict) and entry.get("type") == "file"
    ]


def parse_history_listing(stanza: str, json_text: str, base: str) -> list[TimelineRecord]:
    """``repo-ls <base> --recurse --output=json`` → the timelines of its ``.history`` files.

    ``base`` is the path given to ``repo-ls`` (``archive/<stanza>``); keys in the result
    are repository paths. ``backup.history`` files and anything else are skipped.
    """
    return _history_records(stanza, _listed_files(json_text), base)


def _history_records(
    stanza: str, files: list[tuple[str, dict[str, Any]]], base: str
) -> list[TimelineRecord]:
    records = []
    for name, entry in files:
        if not name.endswith(".history") or name.endswith("backup.history"):
            continue
        match = _HISTORY_RE.search(name)
        if match is None:
            continue
        records.append(
            TimelineRecord(
                stanza=stanza,
                timeline=int(match.group(1), 16),
                created=_aware(entry.get("time")),
                key=f"{base.rstrip('/')}/{name}",
            )
        )
    return sorted(records, key=lambda r: (r.timeline, r.key))


# A WAL segment object's file name: ``<timeline, log, seg: 3 x 8 hex>-<sha1>[.ext]``
# (``.partial`` and ``.backup`` files and ``.history`` files do not match).
_SEGMENT_OBJECT_RE = re.compile(
    r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})-[0-9a-f]{40}(?:\.[a-z0-9]+)?"
)


def parse_archive_listing(json_text: str, base: str) -> list[ArchivedSegment]:
    """``repo-ls <base> --recurse --output=json`` → the WAL segment objects with their
    stored sizes (an empty object is what a lost write looks like)."""
    return _segments(_listed_files(json_text), base)


def _segments(files: list[tuple[str, dict[str, Any]]], base: str) -> list[ArchivedSegment]:
    # A month of WAL is some 45,000 objects: one match per name, the numbers read from
    # its groups (as core.archive.parse_segment_name reads them).
    prefix = f"{base.rstrip('/')}/"
    segments = []
    for name, entry in files:
        match = _SEGMENT_OBJECT_RE.fullmatch(name, name.rfind("/") + 1)
        if match is None:
            continue
        timeline, log_id, seg = (int(part, 16) for part in match.groups())
        if seg >= SEGMENTS_PER_XLOGID or timeline == 0:
            continue
        segno = log_id * SEGMENTS_PER_XLOGID + seg
        segments.append(ArchivedSegment(timeline, segno, _int(entry.get("size")), prefix + name))
    return sorted(segments, key=lambda s: (s.timeline, s.segno))


# The programs that undo each repository compression (by the object's extension).
_DECOMPRESSORS = {".zst": "zstd", ".gz": "gzip", ".lz4": "lz4", ".bz2": "bzip2"}

# pg_waldump's line for a transaction record with its time, in UTC (TZ=UTC):
# ``lsn: 0/03000060, prev …, desc: COMMIT 2026-12-02 10:21:07.123456 UTC`` (ABORT
# likewise; PREPARE is not a stop point).
_XACT_TIME_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*?desc: (?:COMMIT|ABORT) "
    r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?) UTC"
)


def parse_commits(waldump_output: str) -> list[tuple[int, datetime]]:
    """(LSN as a number, time, aware UTC) of every commit and abort record in
    ``pg_waldump --rmgr=Transaction`` output, in WAL order. Recovery compares a time
    target with exactly these records (PostgreSQL's recoveryStopsBefore)."""
    found = []
    for match in _XACT_TIME_RE.finditer(waldump_output):
        text = match.group(2)
        form = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
        moment = datetime.strptime(text, form).replace(tzinfo=UTC)
        found.append((lsn_value(match.group(1)), moment))
    return found


def parse_last_commit(waldump_output: str) -> datetime | None:
    """The last commit or abort time in ``pg_waldump`` output; None when none."""
    found = parse_commits(waldump_output)
    return found[-1][1] if found else None


def _decompress(key: str, data: bytes, timeout: float) -> bytes:
    suffix = Path(key).suffix
    program = _DECOMPRESSORS.get(suffix)
    if program is None:
        return data
    result = processes.run_binary([program, "-dc"], timeout=timeout, input_bytes=data)
    if not result.ok:
        raise BackupToolError(f"{key}: {program} could not decompress it: {result.stderr.strip()}")
    return result.stdout


# ``verify --output=text --verbose`` (2.45; it exits 0 whatever it found):
#   stanza: s / status: ok|error
#     archiveId: 15-1, total WAL checked: 4, total valid WAL: 4
#       missing: 0, checksum invalid: 0, size invalid: 0, other: 0
#     backup: 20261202-103951F, status: invalid, total files checked: 964, total valid files: 963
#       missing: 0, checksum invalid: 1, size invalid: 0, other: 0
_VERIFY_STATUS_RE = re.compile(r"^status: (\S+)", re.MULTILINE)
_VERIFY_WAL_RE = re.compile(r"total WAL checked: (\d+), total valid WAL: (\d+)")
_VERIFY_BACKUP_RE = re.compile(
    r"backup: (\S+), status: ([a-z-]+), total files checked: (\d+), "
    r"total valid files: (\d+)\n\s*missing: (\d+), checksum invalid: (\d+), "
    r"size invalid: (\d+), other: (\d+)"
)


def parse_verify(stanza: str, text: str) -> VerifyReport:
    """``verify --output=text --verbose`` of one stanza. Raises ValueError when it does
    not say the stanza's status."""
    status = _VERIFY_STATUS_RE.search(text)
    if status is None:
        raise ValueError("pgBackRest verify printed no status")
    checked = valid = 0
    for match in _VERIFY_WAL_RE.finditer(text):
        checked, valid = checked + int(match.group(1)), valid + int(match.group(2))
    backups = tuple(
        VerifiedBackup(m.group(1), m.group(2), *(int(m.group(i)) for i in range(3, 9)))
        for m in _VERIFY_BACKUP_RE.finditer(text)
    )
    return VerifyReport(stanza, status.group(1) == "ok", backups, checked, valid)


# ---------------------------------------------------------------------------
# Error lines and secrets


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values (in any form :func:`redact.scrub` knows:
    raw, URL-encoded, JSON-escaped) nor the value of any ``<secret option>=value``.

    The known values go first: the option pattern only sees a value up to a space, a
    known secret is removed whole whatever it holds."""
    text = redact.scrub(text, secrets)
    # The shortcut only for ASCII text, where lower() is exactly what IGNORECASE matches
    # (Unicode case rules let a few other letters match: the long s, U+017F, for "s").
    if text.isascii() and not any(piece in text.lower() for piece in _HIDDEN_OPTION_PIECES):
        return text
    return _SECRET_OPTION_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def condense(block: str) -> str:
    """The first line of a multi-line pgBackRest message, plus the S3 error code of an
    HTTP failure found in its continuation (``... 403 (Forbidden): SignatureDoesNotMatch``).
    """
    lines = block.strip().splitlines()
    if not lines:
        return ""
    first = lines[0].rstrip()
    code = _S3_CODE_RE.search("\n".join(lines[1:]))
    if code:
        return f"{first.rstrip(':')}: {code.group(1)}"
    return first.rstrip(":") if len(lines) > 1 else first


def extract_error_line(result: CommandResult, secrets: Iterable[str] = ()) -> str:
    """The ``ERROR: [NNN]: …`` line(s) of a command's output, joined by ``'; '``.

    stderr is read first, then stdout; a message printed to both counts once. Without
    an ERROR line, the last non-empty line; without output, :data:`UNKNOWN_ERROR`.
    Never contains a secret.
    """
    secrets = tuple(secrets)
    stopped = [ln for ln in result.stderr.splitlines() if ln.startswith(STOPPED_BACKUP)]
    if stopped:  # the cause; pgBackRest's "terminated on signal" is only its consequence
        return scrub(stopped[-1], secrets)
    found: list[str] = []
    # Scrubbed before the lines are picked: a secret may span lines or be cut by condense.
    streams = [scrub(stream, secrets) for stream in (result.stderr, result.stdout)]
    for stream in streams:
        lines = stream.splitlines()
        for index, line in enumerate(lines):
            match = _ERROR_LINE_RE.search(line)
            if match is None:
                continue
            block = [match.group(1)]
            for following in lines[index + 1 : index + 60]:
                if _ERROR_LINE_RE.search(following) or _LOG_PREFIX_RE.match(following):
                    break
                block.append(following)
            text = condense("\n".join(block))
            if text not in found:
                found.append(text)
    if found:
        text = "; ".join(found)
    else:
        last = ""
        for stream in streams:
            lines = [ln.strip() for ln in stream.splitlines() if ln.strip()]
            if lines:
                last = _LOG_PREFIX_RE.sub("", lines[-1])
                break
        text = last or UNKNOWN_ERROR
    return scrub(text, secrets)


# What pgBackRest 2.45 prints when the repository and the configuration disagree on
# encryption (measured, tests/integration/test_adapters_pgbackrest.py): an encrypted
# configuration on a plain repository fails its cipher header check; a plain
# configuration reads an encrypted file as text starting with OpenSSL's "Salted__"; a
# wrong passphrase decrypts to bytes that are no INI text.
REPO_NOT_ENCRYPTED = (
    "the repository is not encrypted but an encryption passphrase is set: a repository is "
    "encrypted, or not, from its creation and cannot be switched"
)
REPO_ENCRYPTED_NOT_SET = (
    "the repository is encrypted and no encryption passphrase is set: give the passphrase "
    "it was created with"
)
REPO_UNDECRYPTABLE = (
    "the repository cannot be decrypted: its encryption passphrase is not the one set "
    "(wrong or lost); only the passphrase it was created with opens it"
)
_INFO_FILE_RE = re.compile(r"unable to load info file '([^']*)'")


def explain_cipher_problem(output: str) -> str | None:
    """A plain explanation when ``output`` (any pgBackRest output) shows an encryption
    mismatch, naming the info file; None otherwise. The decrypted garbage pgBackRest
    echoes is never repeated."""
    if "cipher header invalid" in output:
        reason = REPO_NOT_ENCRYPTED
    elif "found outside of section at line 1: Salted__" in output:
        reason = REPO_ENCRYPTED_NOT_SET
    elif "unable to load info file" in output and "found outside of section at line 1" in output:
        reason = REPO_UNDECRYPTABLE
    else:
        return None
    match = _INFO_FILE_RE.search(output)
    return f"{reason} ({match.group(1)})" if match else reason


def read_config_secrets(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The secret values in a pgbackrest.conf (to scrub them from any output)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ()
    values = []
    for line in text.split("\n"):  # pgBackRest ends a line at "\n" only
        key, equals, value = line.strip().partition("=")
        if not equals or _SECRET_NAME_RE.fullmatch(key.strip()) is None:
            continue
        # The whole rest of the line (a value may hold spaces), as written and as
        # pgBackRest reads it (trimmed).
        values += [v for v in dict.fromkeys((value, value.strip())) if v]
    return tuple(values)


# ---------------------------------------------------------------------------
# Commands

_LABEL_RE = re.compile(r"\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?")
_ANNOTATION_KEY_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_ANNOTATION_VALUE_RE = re.compile(r"[\x21-\x7e]{1,64}")


def _check_label(label: str) -> str:
    if _LABEL_RE.fullmatch(label) is None:
        raise ValueError(f"{label[:40]!r} is not a pgBackRest backup label")
    return label


def _check_annotation(key: str, value: str) -> str:
    text = f"{key}={value}"
    if _ANNOTATION_KEY_RE.fullmatch(key) is None or _ANNOTATION_VALUE_RE.fullmatch(value) is None:
        raise ValueError(f"annotation {text[:60]!r} is not key=value of plain words")
    return text


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``io`` is passed as ``--io-timeout`` to the commands that reach S3."""

    command: float = 300.0  # stanza-create, check (check waits for a WAL to archive)
    backup: float = 6 * 3600.0
    restore: float = 6 * 3600.0  # as long as a backup: it moves as many bytes
    info: float = 60.0
    ping: float = 10.0
    io: int | None = None
    # A backup whose S3 endpoint refuses or drops every new TCP connection for this long
    # is stopped (docs/reliability.md). pgBackRest alone retries each request for up to
    # about twice --io-timeout, request after request: with S3 dead a backup took 48 s
    # (--io-timeout=10, dead during the archive check) to 141 s (dead while copying) to
    # fail, the replica refusing clients all along. Lowering --io-timeout instead would
    # break backups over a slow link (it bounds every read and write, and S3 may take a
    # while to answer a big upload); opening a TCP connection is never slow on a live
    # endpoint, however slow the link, so this only stops backups whose S3 is gone.
    repository_gone: float = 10.0
    repository_probe: float = 2.0  # how often the endpoint is tried while a backup runs
    # A backup on a replica whose primary's TLS server drops every new TCP connection for
    # this long is stopped too. pgBackRest runs the backup's start and stop on the
    # primary, over that server: cut off from it, a backup waited (protocol-timeout,
    # 1830 s) for half an hour, the replica refusing clients all along (seen with the
    # primary machine's link cut: tests/e2e/test_network_faults.py). Past Patroni's TTL
    # (20 s) a primary that nobody reaches has lost its leader key and demoted itself,
    # which ends the backup's session on it anyway: the backup cannot finish.
    primary_gone: float = 30.0


def restore_options(target: RestoreTarget) -> list[str]:
    """``pgbackrest restore``'s target options, as pgBackRest 2.45 accepts them (verified on
    this project's machine, docs/restore.md): ``--target`` with ``--type=time`` only, in the
    form ``YYYY-MM-DD HH:MM:SS[.ffffff]+00`` (its backup-set selection rejects ``T``/``Z``);
    ``--target-timeline`` (written as is to ``recovery_target_timeline``, so a decimal
    number) with every type but ``immediate``; ``--target-action`` with every type but
    ``default``."""
    options = [f"--set={target.label}"] if target.label else []
    options.append(f"--type={target.type}")
    if target.target and target.type == "time":
        options.append(f"--target={target.target}")
    if target.target_action and target.type != "default":
        options.append(f"--target-action={target.target_action}")
    if target.target_timeline is not None and target.type != "immediate":
        options.append(f"--target-timeline={int(target.target_timeline)}")
    return options


def archive_get_command(config_path: str, stanza: str, pg_path: str, spool_path: str) -> str:
    """The ``restore_command`` of a restore's recovery: archive-get from ``stanza``, which
    may be another cluster's (a migration), with no section of its own in the
    configuration: ``--pg1-path`` is given as pgBackRest gives it in the command it
    writes (there it names the directory restored into, renamed before PostgreSQL runs).
    ``spool_path``: the restore's own (see :meth:`PgBackRest.restore`)."""
    words = (
        f"--config={config_path}",
        f"--stanza={stanza}",
        f"--pg1-path={pg_path}",
        f"--spool-path={spool_path}",
    )
    return f'{PROGRAM} {" ".join(shlex.quote(w) for w in words)} archive-get %f "%p"'


# What a backup stopped by :class:`RepositoryWatch` says, before its reason.
STOPPED_BACKUP = "pgbackups stopped the backup: "


def repository_address(config_path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """The S3 endpoint's host and port, as a rendered pgbackrest.conf names them."""
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except OSError:
        return None
    options = dict(line.strip().partition("=")[::2] for line in text.splitlines() if "=" in line)
    host = options.get("repo1-s3-endpoint", "").strip()
    if not host:
        return None
    port = options.get("repo1-storage-port", "").strip()
    return host, int(port) if port.isdigit() else 443


def tls_server_endpoint(address: str, default_port: int = 8432) -> tuple[str, int] | None:
    """``name:port`` or ``name`` (a TLS server address, as the workload gives it) as a
    host and port; None when it is neither."""
    name, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else default_port


class RepositoryWatch:
    """Asked every few seconds while a backup runs: the reason to stop it once the
    endpoint (S3's, or the primary's TLS server: ``what``) has refused (or not answered)
    every TCP connection for ``gone_after`` s."""

    def __init__(
        self,
        address: tuple[str, int],
        gone_after: float,
        connect_timeout: float = 5.0,
        *,
        what: str = "S3",
    ) -> None:
        self.address = address
        self.gone_after = gone_after
        self.connect_timeout = connect_timeout
        self.what = what
        self._down_since: float | None = None

    def __call__(self) -> str | None:
        host, port = self.address
        try:
            socket.create_connection(self.address, timeout=self.connect_timeout).close()
        except OSError as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                log.warning("%s at %s:%d does not answer: %s", self.what, host, port, exc)
            if now - self._down_since >= self.gone_after:
                cause = exc.strerror or type(exc).__name__
                return (
                    f"{STOPPED_BACKUP}{self.what} at {host}:{port} unreachable for "
                    f"{self.gone_after:g}s ({cause})"
                )
            return None
        self._down_since = None
        return None


def server_argv(config_path: str | os.PathLike[str], program: str = PROGRAM) -> list[str]:
    """How to start this unit's pgBackRest TLS server (a daemon; run it as the db user)."""
    return [program, f"--config={config_path}", "server"]


class PgBackRest:
    """pgBackRest run as the database user with one configuration file and stanza."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        stanza: str,
        *,
        user: OsUser | None = None,
        timeouts: Timeouts | None = None,
        secrets: Sequence[str] = (),
        program: str = PROGRAM,
        env: Mapping[str, str] | None = None,
        waldump: str = PG_WALDUMP,
        commit_cache: Path | None = None,
    ) -> None:
        self.config_path = str(config_path)
        self.stanza = stanza
        self.user = user if user is not None else processes.db_user()
        self.timeouts = timeouts or Timeouts()
        self.program = program
        self._secrets = tuple(secrets)
        self._env = dict(env or {})
        self.waldump = waldump
        # An archived segment never changes under its key (the key holds its checksum).
        self._commit_times: dict[str, list[tuple[int, datetime]]] = {}
        # The same, kept between processes (``status`` reads the window ends' WAL every
        # time): a file of ours, never the database user's (see _load_commit_cache).
        self._commit_cache = commit_cache
        self._commit_cache_loaded = False

    # -- plumbing ---------------------------------------------------------

    def secrets(self) -> tuple[str, ...]:
        return self._secrets + read_config_secrets(self.config_path)

    def argv(
        self,
        command: str,
        *options: str,
        stanza: str | None = None,
        params: Sequence[str] = (),
    ) -> list[str]:
        """``pgbackrest --config=… [--stanza=…] <options> <command> <params>``."""
        args = [self.program, f"--config={self.config_path}"]
        if stanza:
            args.append(f"--stanza={stanza}")
        return [*args, *options, command, *params]

    def run(
        self,
        argv: Sequence[str],
        timeout: float,
        *,
        give_up: Callable[[], str | None] | None = None,
        every: float = 2.0,
    ) -> CommandResult:
        """Run as the database user; the result's output is scrubbed of secrets.
        ``give_up``: see :func:`processes.run_watched`."""
        if give_up is None:
            result = processes.run(argv, user=self.user, timeout=timeout, env=self._env)
        else:
            result = processes.run_watched(
                argv, give_up=give_up, every=every, user=self.user, timeout=timeout, env=self._env
            )
        secrets = self.secrets()
        clean = CommandResult(
            args=tuple(scrub(a, secrets) for a in result.args),
            returncode=result.returncode,
            stdout=scrub(result.stdout, secrets),
            stderr=scrub(result.stderr, secrets),
            timed_out=result.timed_out,
        )
        if not clean.ok:
            log.info(
                "pgbackrest %s failed (%s): %s",
                argv[-1],
                "timed out" if clean.timed_out else f"exit {clean.returncode}",
                self.error_line(clean),
            )
        return clean

    def _io(self) -> list[str]:
        return [f"--io-timeout={self.timeouts.io}"] if self.timeouts.io else []

    # -- BackupTool -------------------------------------------------------

    def version(self) -> tuple[int, int] | None:
        result = self.run([self.program, "version"], self.timeouts.ping)
        return parse_version(result.stdout) if result.ok else None

    def stanza_create(self) -> CommandResult:
        argv = self.argv("stanza-create", *self._io(), stanza=self.stanza)
        return self.run(argv, self.timeouts.command)

    def check(self) -> CommandResult:
        return self.run(self.argv("check", *self._io(), stanza=self.stanza), self.timeouts.command)

    def backup(
        self, backup_type: str, *, on_primary: bool, primary: str | None = None
    ) -> CommandResult:
        if backup_type not in BACKUP_TYPES:
            raise ValueError(f"backup type {backup_type!r} is not one of {', '.join(BACKUP_TYPES)}")
        options = [f"--type={backup_type}", "--log-level-console=info", *self._io()]
        if on_primary:
            options.append("--no-backup-standby")
        argv = self.argv("backup", *options, stanza=self.stanza)
        watches = []
        address = repository_address(self.config_path)
        if address is not None:
            watches.append(RepositoryWatch(address, self.timeouts.repository_gone))
        endpoint = tls_server_endpoint(primary) if primary and not on_primary else None
        if endpoint is not None:
            watches.append(
                RepositoryWatch(
                    endpoint, self.timeouts.primary_gone, what="the primary's pgBackRest server"
                )
            )
        if not watches:
            return self.run(argv, self.timeouts.backup)

        def give_up() -> str | None:
            # Every watch is asked each time: each keeps its own clock of failed tries.
            reasons = [reason for watch in watches if (reason := watch()) is not None]
            return reasons[0] if reasons else None

        return self.run(
            argv, self.timeouts.backup, give_up=give_up, every=self.timeouts.repository_probe
        )

    def restore(
        self, pg_path: str, target: RestoreTarget, *, restore_command: str, spool_path: str
    ) -> CommandResult:
        """Restore ``target`` into ``pg_path`` (an empty directory: never the live data
        directory, which stays as it is until the restored copy replaces it). Recovery then
        fetches WAL with ``restore_command``, not with the command pgBackRest would write
        (it names ``pg_path``, which is renamed before PostgreSQL starts).

        ``spool_path``: a spool of the restore's own. pgBackRest's restore removes the
        spool's ``archive/<stanza>`` (a stale archive-get queue must not feed the new
        recovery); the unit's own spool is where the database, still stopping meanwhile,
        queues its last WAL for archive-push: the removal failed under it ("Directory not
        empty"), and would lose that queue's acknowledgements."""
        argv = self.argv(
            "restore",
            f"--spool-path={spool_path}",
            f"--pg1-path={pg_path}",
            *restore_options(target),
            f"--recovery-option=restore_command={restore_command}",
            "--log-level-console=info",
            *self._io(),
            stanza=target.stanza,
        )
        return self.run(argv, self.timeouts.restore)

    def info(self, stanza: str | None = None) -> list[StanzaInfo]:
        """Every stanza in the repository, or just ``stanza`` (a missing one has code 1).

        Raises BackupToolError when pgBackRest fails, times out, prints something that is
        not its JSON, or cannot read the repository (status code 99).
        """
        argv = self.argv("info", "--output=json", *self._io(), stanza=stanza)
        result = self.run(argv, self.timeouts.info)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            stanzas = parse_info(result.stdout)
        except ValueError as exc:
            explained = explain_cipher_problem(result.stdout)
            if explained:
                raise BackupToolError(
                    f"pgBackRest could not read the repository: {explained}"
                ) from exc
            raise BackupToolError(str(exc)) from exc
        for item in stanzas:
            if item.status_code == 99:
                # The whole output: the status message keeps only the first line.
                explained = explain_cipher_problem(result.stdout)
                reason = explained or scrub(item.status_message, self.secrets())
                raise BackupToolError(f"pgBackRest could not read the repository: {reason}")
        return stanzas

    def timelines(self, stanza: str) -> list[TimelineRecord]:
        """Timelines from the ``.history`` files under ``archive/<stanza>/`` only."""
        base = f"archive/{stanza}"
        options = ["--recurse", r"--filter=\.history$", "--output=json", *self._io()]
        argv = self.argv("repo-ls", *options, params=[base])
        result = self.run(argv, self.timeouts.info)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            return parse_history_listing(stanza, result.stdout, base)
        except ValueError as exc:
            raise BackupToolError(str(exc)) from exc

    def archive_segments(self, stanza: str) -> list[ArchivedSegment]:
        """Every WAL segment object under ``archive/<stanza>/``, with its stored size."""
        base = f"archive/{stanza}"
        options = ["--recurse", r"--filter=[0-9A-F]{24}-", "--output=json", *self._io()]
        argv = self.argv("repo-ls", *options, params=[base])
        result = self.run(argv, self.timeouts.info)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            return parse_archive_listing(result.stdout, base)
        except ValueError as exc:
            raise BackupToolError(str(exc)) from exc

    def archive(self, stanza: str) -> ArchiveListing:
        """Timelines and WAL segments from one ``repo-ls`` of ``archive/<stanza>/``
        (``--filter`` applies after pgBackRest has listed everything: two filtered
        listings cost two whole listings)."""
        base = f"archive/{stanza}"
        argv = self.argv("repo-ls", "--recurse", "--output=json", *self._io(), params=[base])
        result = self.run(argv, self.timeouts.info)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            files = _listed_files(result.stdout)
        except ValueError as exc:
            raise BackupToolError(str(exc)) from exc
        return ArchiveListing(
            tuple(_history_records(stanza, files, base)), tuple(_segments(files, base))
        )

    def info_and_archive(self, stanza: str) -> tuple[list[StanzaInfo], ArchiveListing | None]:
        """:meth:`info` of every stanza and :meth:`archive` of ``stanza``, run side by
        side: two pgBackRest processes, each mostly waiting on S3 (a month of backups
        and WAL: about 0.6 s and 1.4 s here, 2 s one after the other). The listing is
        None when ``info`` shows no such stanza (its failure then says nothing). Raises
        BackupToolError when ``info`` fails, or the listing of a stanza that exists."""
        found: list[ArchiveListing | BackupToolError] = []

        def list_archive() -> None:
            try:
                found.append(self.archive(stanza))
            except BackupToolError as exc:
                found.append(exc)

        # A thread started here runs where its starter runs (a unit's machine, locally).
        worker = threading.Thread(target=list_archive, name="archive-listing", daemon=True)
        worker.start()
        try:
            stanzas = self.info()
        finally:
            worker.join()  # bounded: the listing has its own timeout
        if not any(s.name == stanza and s.exists for s in stanzas):
            return stanzas, None
        if not found:
            raise BackupToolError("the archive listing did not finish")
        if isinstance(found[0], BackupToolError):
            raise found[0]
        return stanzas, found[0]

    def history(self, record: TimelineRecord) -> tuple[TimelineBranch, ...]:
        """The branches in ``record``'s ``.history`` file (``repo-get``, as the stanza's
        repository holds it: history files are stored uncompressed)."""
        argv = self.argv("repo-get", *self._io(), params=[record.key])
        result = self.run(argv, self.timeouts.info)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            return parse_history_file(result.stdout)
        except ValueError as exc:
            raise BackupToolError(f"{record.key}: {exc}") from exc

    def expire(self) -> CommandResult:
        argv = self.argv("expire", "--log-level-console=info", *self._io(), stanza=self.stanza)
        return self.run(argv, self.timeouts.command)

    def annotate(self, label: str, annotations: Mapping[str, str]) -> CommandResult:
        """``annotate --set=LABEL --annotation=k=v``: keys and values are ours (checked
        here again: no "=" in a key, printable ASCII without spaces)."""
        options = [f"--set={_check_label(label)}", *self._io()]
        for key, value in sorted(annotations.items()):
            options.append(f"--annotation={_check_annotation(key, value)}")
        return self.run(self.argv("annotate", *options, stanza=self.stanza), self.timeouts.info)

    def last_commit_time(
        self, segment: ArchivedSegment, before_lsn: str | None = None
    ) -> datetime | None:
        """The time of the last transaction commit or abort written in an archived WAL
        segment (what a time target is compared with) — only among records before
        ``before_lsn`` when given — None when it holds none. The object is read with
        ``repo-get`` (which decrypts an encrypted repository), decompressed by the
        program of its extension and read by ``pg_waldump``, in a private temporary
        folder of ours. Raises BackupToolError."""
        self._load_commit_cache()
        records = self._commit_times.get(segment.key)
        if records is None:
            records = self._read_commits(segment)
            self._commit_times[segment.key] = records
            self._save_commit_cache()
        limit = lsn_value(before_lsn) if before_lsn else None
        found = [moment for lsn, moment in records if limit is None or lsn < limit]
        return found[-1] if found else None

    def _load_commit_cache(self) -> None:
        """The commits read by earlier processes, by object key. Never stale: a segment's
        object key ends with the SHA-1 of its content (``<segment>-<sha1>.<ext>``), so a
        key names the same bytes and the same commits for ever; a window that moved
        ends in a segment whose key is not cached yet, and that one is read. A file
        that cannot be read or parsed is ignored (the WAL is read again)."""
        if self._commit_cache_loaded or self._commit_cache is None:
            return
        self._commit_cache_loaded = True
        try:
            data = json.loads(self._commit_cache.read_text())
            for key, records in data.items():
                if _CACHED_KEY_RE.fullmatch(key):
                    self._commit_times.setdefault(
                        key, [(int(lsn), datetime.fromisoformat(at)) for lsn, at in records]
                    )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.info("WAL commit cache %s ignored: %s", self._commit_cache, exc)

    def _save_commit_cache(self) -> None:
        if self._commit_cache is None:
            return
        # The newest keys only (segment names sort by time): a window needs a few ends.
        keys = sorted(k for k in self._commit_times if _CACHED_KEY_RE.fullmatch(k))
        kept = {
            k: [[lsn, at.isoformat()] for lsn, at in self._commit_times[k]]
            for k in keys[-COMMIT_CACHE_ENTRIES:]
        }
        try:
            write_atomically(json.dumps(kept), self._commit_cache, None, 0o600)
        except OSError as exc:
            log.info("WAL commit cache %s not written: %s", self._commit_cache, exc)

    def _read_commits(self, segment: ArchivedSegment) -> list[tuple[int, datetime]]:
        argv = self.argv("repo-get", *self._io(), params=[segment.key])
        got = processes.run_binary(argv, user=self.user, timeout=self.timeouts.info, env=self._env)
        if not got.ok:
            reason = scrub(got.stderr, self.secrets()).strip().splitlines()
            raise BackupToolError(f"{segment.key}: {reason[-1] if reason else 'repo-get failed'}")
        raw = _decompress(segment.key, got.stdout, self.timeouts.info)
        with tempfile.TemporaryDirectory(prefix="pgbackups-wal-") as folder:
            path = Path(folder) / segment.name
            path.write_bytes(raw)
            # TZ: pg_waldump prints times in its own zone, named; UTC parses without a table.
            result = processes.run(
                [self.waldump, "--rmgr=Transaction", str(path)],
                timeout=self.timeouts.info,
                env={"TZ": "UTC"},
            )
        records = parse_commits(result.stdout)
        if not records and not result.ok and "desc:" not in result.stdout:
            why = (result.stderr or result.stdout).strip().splitlines()
            raise BackupToolError(f"pg_waldump {segment.name}: {why[-1] if why else 'failed'}")
        return records

    def verify(self) -> VerifyReport:
        """pgBackRest ``verify`` of this stanza: every backup's files and the archive's WAL
        against their checksums (2.45 has no ``--set``: the whole stanza is read).
        Raises BackupToolError when it fails or prints no status."""
        argv = self.argv("verify", "--output=text", "--verbose", *self._io(), stanza=self.stanza)
        result = self.run(argv, self.timeouts.backup)
        if not result.ok:
            raise BackupToolError(self.error_line(result))
        try:
            return parse_verify(self.stanza, result.stdout)
        except ValueError as exc:
            raise BackupToolError(str(exc)) from exc

    def server_ping(self, host: str) -> bool:
        """Whether the TLS server at ``host`` (``name`` or ``name:port``) answers."""
        name, port = host, ""
        if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():
            name, port = host.rsplit(":", 1)
        # pgBackRest retries a refused connection for about twice the I/O timeout.
        options = [f"--io-timeout={max(1, int(self.timeouts.ping / 3))}"]
        if port:
            options.append(f"--tls-server-port={port}")
        argv = self.argv("server-ping", *options, params=[name])
        return self.run(argv, self.timeouts.ping + 5).ok

    def error_line(self, result: CommandResult) -> str:
        explained = explain_cipher_problem(result.stderr + "\n" + result.stdout)
        return explained or extract_error_line(result, self.secrets())

    # -- TLS server ---------------------------------------------------------

    def start_server(self, log_file: str | os.PathLike[str]) -> int:
        """Start the TLS server as the database user; return its PID (stop it by PID)."""
        return processes.spawn(
            server_argv(self.config_path, self.program),
            log_file=Path(log_file),
            user=self.user,
            env=self._env,
        )
