"""The list-backups output (docs/behaviour/list-backups.md): rows from the repository records, as
text or JSON.

One row per backup of every stanza in the repository (a foreign stanza is listed too:
that is how a cluster is migrated), plus one ``restore`` row per timeline that a restore
created. Rows are sorted oldest first by time (as datetimes, never as strings), ties by
timeline number, so timeline 10 comes after timeline 9.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pgbackups.core.ids import format_id, label_to_id
from pgbackups.core.repository import BackupRecord, StanzaInfo, TimelineRecord
from pgbackups.core.verification import Verified

COLUMNS = (
    "backup-id",
    "action",
    "status",
    "reference-backup-id",
    "LSN start/stop",
    "start-time",
    "finish-time",
    "timeline",
    "backup-path",
    "trigger",
)
# Column widths kept from the reference table, so that scripts reading it keep working;
# ours come after a padded backup-path: ``trigger`` (who started the backup) and
# ``last-verified``.
_WIDTHS = (20, 19, 8, 20, 23, 20, 20, 8, 46, 9)
# The annotation pgbackups gives a backup it started on a schedule (pgBackRest's
# ``annotate``); a backup without one was asked for (create-backup, or by hand).
TRIGGER = "trigger"
MANUAL = "manual"
# When the verify action last read the backup and what it found ("-": never).
VERIFIED_COLUMN = "last-verified"
NEVER_VERIFIED = "-"
FORMATS = ("table", "json")

ACTION_BY_TYPE = {
    "full": "full backup",
    "diff": "differential backup",
    "incr": "incremental backup",
}
NOT_APPLICABLE = "n/a"
NO_REFERENCE = "None"


@dataclass(frozen=True)
class Row:
    backup_id: str
    action: str
    status: str
    reference_backup_id: str
    lsn: str
    start_time: str
    finish_time: str
    timeline: int
    backup_path: str
    sort_time: datetime
    trigger: str = NOT_APPLICABLE
    verified: str = NOT_APPLICABLE  # "<time> <result>", NEVER_VERIFIED, n/a (restore rows)

    def values(self) -> tuple[str, ...]:
        return (
            self.backup_id,
            self.action,
            self.status,
            self.reference_backup_id,
            self.lsn,
            self.start_time,
            self.finish_time,
            str(self.timeline),
            self.backup_path,
            self.trigger,
            self.verified,
        )

    def as_dict(self) -> dict[str, str | int | None]:
        """The row for JSON: the same keys as the table's columns, typed for scripts —
        the timeline is a number, and "None"/"n/a" cells are null."""
        typed: dict[str, str | int | None] = {}
        for column, value in zip((*COLUMNS, VERIFIED_COLUMN), self.values(), strict=True):
            typed[column] = None if value in (NO_REFERENCE, NOT_APPLICABLE) else value
        typed["timeline"] = self.timeline
        if self.verified == NEVER_VERIFIED:
            typed[VERIFIED_COLUMN] = None
        return typed


def backup_row(record: BackupRecord, verified: Verified | None = None) -> Row:
    parent = record.prior or (record.reference[-1] if record.reference else None)
    if record.error:
        status = f"failed: {record.error_message}" if record.error_message else "failed"
    else:
        status = "finished"
    return Row(
        backup_id=record.backup_id,
        action=ACTION_BY_TYPE.get(record.type, f"{record.type} backup"),
        status=status,
        reference_backup_id=label_to_id(parent) if parent else NO_REFERENCE,
        lsn=f"{record.lsn_start} / {record.lsn_stop}",
        start_time=format_id(record.start),
        finish_time=format_id(record.stop),
        timeline=record.timeline,
        backup_path=f"/{record.stanza}/{record.label}",
        sort_time=record.start,
        trigger=dict(record.annotations).get(TRIGGER, MANUAL),
        verified=f"{verified.at} {verified.result}" if verified else NEVER_VERIFIED,
    )


def timeline_row(record: TimelineRecord) -> Row:
    created = format_id(record.created)
    return Row(
        backup_id=created,
        action="restore",
        status="finished",
        reference_backup_id=NO_REFERENCE,
        lsn=NOT_APPLICABLE,
        start_time=created,
        finish_time=NOT_APPLICABLE,
        timeline=record.timeline,
        backup_path=NOT_APPLICABLE,
        sort_time=record.created,
    )


def build_rows(
    stanzas: Iterable[StanzaInfo],
    timelines: Iterable[TimelineRecord],
    verified: Mapping[str, Mapping[str, Verified]] | None = None,
) -> list[Row]:
    """``verified``: stanza → label → the last verification (core/verification.py)."""
    checked = verified or {}
    rows = [backup_row(b, checked.get(s.name, {}).get(b.label)) for s in stanzas for b in s.backups]
    rows += [timeline_row(t) for t in timelines]
    # Backups before restores at the same second: a restore row names a timeline that
    # the backup of the same second cannot depend on.
    return sorted(rows, key=lambda r: (r.sort_time, r.action == "restore", r.timeline))


def _line(values: Sequence[str]) -> str:
    cells = [f"{v:<{w}s}" for v, w in zip(values, _WIDTHS, strict=False)]
    return " | ".join([*cells, *values[len(_WIDTHS) :]])


def base_path(repository_path: str) -> str:
    return repository_path.rstrip("/") + "/backup/"


def format_table(bucket: str, repository_path: str, rows: Sequence[Row]) -> str:
    header = _line((*COLUMNS, VERIFIED_COLUMN))
    lines = [
        f"Storage bucket name: {bucket}",
        f"Backups base path: {base_path(repository_path)}",
        "",
        header,
        "-" * len(header),
    ]
    lines += [_line(r.values()) for r in rows]
    return "\n".join(lines)


def format_json(rows: Sequence[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2)
