"""What a pgBackRest repository holds, as typed records.

The ``pgbackrest`` adapter builds these from ``info --output=json`` and from the
archive's ``.history`` files; the hook handlers read them. Timelines are integers
everywhere (the reference compared hex strings, so ``"10" < "9"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class BackupRecord:
    label: str  # pgBackRest label: 20261128-143926F, <full>_20261128-144435I
    # user-facing id: start time in UTC, 2026-11-28T14:39:26Z (docs/behaviour/backup-ids.md)
    backup_id: str
    type: str  # full | diff | incr
    stanza: str
    error: bool
    error_message: str  # why it failed, when pgBackRest says ("" otherwise)
    lsn_start: str
    lsn_stop: str
    timeline: int  # from archive.start, as a number
    wal_start: str
    wal_stop: str
    reference: tuple[str, ...]  # labels this backup depends on, oldest first
    prior: str | None
    start: datetime  # aware, UTC
    stop: datetime  # aware, UTC
    size: int  # database size in bytes
    delta: int
    repo_size: int
    repo_delta: int
    # pgBackRest's annotations (``--annotation``/``annotate``), e.g. ("trigger", "scheduled")
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def finished(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class StanzaInfo:
    name: str
    status_code: int  # 0 ok; 1 missing stanza path; 2 no valid backups; ...
    status_message: str
    system_ids: tuple[int, ...]  # PostgreSQL system identifiers recorded in the stanza
    backup_lock_held: bool
    backups: tuple[BackupRecord, ...]  # oldest first
    archive_min: str | None
    archive_max: str | None

    @property
    def exists(self) -> bool:
        # code 1 = "missing stanza path": the stanza was never created here.
        return self.status_code != 1


@dataclass(frozen=True)
class TimelineRecord:
    """A timeline that a restore (or a promotion) created: ``archive/<stanza>/<id>/N.history``."""

    stanza: str
    timeline: int
    created: datetime  # the history object's mtime, aware, UTC
    key: str  # the repository path of the history file


@dataclass(frozen=True)
class TimelineBranch:
    """One line of a ``.history`` file: the timeline was left at ``switch_lsn`` (X/Y)."""

    parent: int
    switch_lsn: str


def lsn_value(lsn: str) -> int:
    """A PostgreSQL LSN ``X/Y`` (hex) as a number, to compare positions in the WAL.
    Raises ValueError for anything else."""
    high, sep, low = lsn.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {lsn!r}")
    return (int(high, 16) << 32) + int(low, 16)


def parse_history_file(text: str) -> tuple[TimelineBranch, ...]:
    """A PostgreSQL ``.history`` file: ``<parent timeline>\t<switch LSN>\t<reason>`` per
    line, oldest first; comments (``#``) and blank lines are skipped. Raises ValueError."""
    branches = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            parent, switch_lsn = int(fields[0]), fields[1]
            lsn_value(switch_lsn)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"history file line {number} is not 'timeline LSN': {line!r}") from exc
        branches.append(TimelineBranch(parent, switch_lsn))
    return tuple(branches)


@dataclass(frozen=True)
class VerifiedBackup:
    """pgBackRest ``verify``'s finding for one backup: its files checked against the
    checksums and sizes of its manifest."""

    label: str
    status: str  # pgBackRest's: valid | invalid | ...
    files_checked: int
    files_valid: int
    missing: int
    checksum_invalid: int
    size_invalid: int
    other: int

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def problems(self) -> str:
        """``1 file with an invalid checksum, 2 missing``: what is wrong, "" when nothing."""
        parts = []
        for count, what in (
            (self.missing, "missing"),
            (self.checksum_invalid, "with an invalid checksum"),
            (self.size_invalid, "with an invalid size"),
            (self.other, "unreadable"),
        ):
            if count:
                parts.append(f"{count} file{'s' if count > 1 else ''} {what}")
        return ", ".join(parts) or ("" if self.valid else self.status)


@dataclass(frozen=True)
class VerifyReport:
    """pgBackRest ``verify`` of one stanza: each backup, and the archive's WAL."""

    stanza: str
    ok: bool  # pgBackRest's overall status
    backups: tuple[VerifiedBackup, ...]
    wal_checked: int
    wal_valid: int
