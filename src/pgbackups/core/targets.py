"""Restore targets: what ``backup-id`` and ``restore-to-time`` ask for, as a pgBackRest restore.

Pure functions, no host: the restore action
(:func:`pgbackups.core.handlers.restore.on_restore`) lists the repository, then asks
:func:`choose_target` which backup set, recovery type, target time and timeline to use.
The rules (docs/restore.md):

- ``backup-id`` alone: the end of that backup (``--type=immediate``);
- ``backup-id`` + a time: that backup's timeline, replayed up to the time;
- ``backup-id`` + ``latest``: all archived WAL of that backup's timeline (``--type=default``);
- a time alone: the newest *point* at or before the time, on its timeline, where a point
  is the end of a finished backup or the start of a timeline that a restore created;
- ``latest`` alone: the newest timeline, from the newest backup taken on it (there must be
  one);
- the id of a timeline (a ``restore`` row of list-backups) + a time or ``latest``: that
  timeline (a time is required).

Times are accepted in PostgreSQL's form or as ISO 8601; a time without a zone is UTC. They
become aware UTC datetimes, and are handed to pgBackRest as ``YYYY-MM-DD HH:MM:SS.ffffff+00``,
the one form pgBackRest 2.45 itself parses. Timelines are integers everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from pgbackups.core import messages as msg
from pgbackups.core.ids import format_id, normalise_id
from pgbackups.core.repository import BackupRecord, TimelineBranch, TimelineRecord, lsn_value

LATEST = "latest"

# What a timeline's ``.history`` file says (its parents and where it left each), or None
# when it could not be read: then the choice falls back to timestamps.
Ancestry = Callable[[TimelineRecord], Sequence[TimelineBranch] | None]

# Restore types (pgBackRest's --type)
IMMEDIATE = "immediate"
TIME = "time"
DEFAULT = "default"

ACCEPTED_FORMS = (
    "YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM]] (PostgreSQL, e.g. 2026-11-28 14:00:00+00), "
    "ISO 8601 (e.g. 2026-11-28T14:00:00Z, 2026-11-28T16:00:00.5+02:00) or 'latest'; "
    "a time without a zone is UTC"
)

# Messages (the first ones are the reference operator's, kept for scripts).
BAD_FORMAT = "Bad restore-to-time format"
TIMELINE_NEEDS_TIME = "Cannot restore to the timeline without restore-to-time parameter"
NO_BASE_ON_LATEST = "There is no base backup created from the latest timeline"
NO_BACKUPS = "There is no finished backup to restore"
BEFORE_FIRST = "restore-to-time is before the first backup ended"
BEFORE_BACKUP_END = "restore-to-time is before the end of the backup"
BEFORE_TIMELINE = "restore-to-time is before the timeline began"
IN_THE_FUTURE = "restore-to-time is in the future"
NO_BASE_FOR_TIMELINE = "There is no backup to restore the timeline from"
SEVERAL_STANZAS = "The repository holds backups of several clusters; give a backup-id"

_TIME_RE = re.compile(
    r"""^(?P<date>\d{4}-\d{2}-\d{2})
        [ Tt]
        (?P<time>\d{2}:\d{2}:\d{2})
        (?:\.(?P<fraction>\d{1,6}))?
        (?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?$""",
    re.VERBOSE,
)


# ---------------------------------------------------------------------------
# Times


def parse_time(text: str) -> datetime:
    """An accepted time (not ``latest``) as an aware UTC datetime.

    Raises ValueError whose message is ``Bad restore-to-time format: ...`` naming the
    accepted forms.
    """
    value = text.strip()
    match = _TIME_RE.match(value)
    if match is None:
        raise ValueError(_bad_format(text))
    fraction = (match["fraction"] or "").ljust(6, "0")
    try:
        moment = datetime.strptime(
            f"{match['date']} {match['time']}.{fraction or '000000'}", "%Y-%m-%d %H:%M:%S.%f"
        )
        moment = moment.replace(tzinfo=_zone(match["zone"]))
    except ValueError as exc:
        raise ValueError(_bad_format(text)) from exc
    return moment.astimezone(UTC)


def _zone(zone: str | None) -> timezone:
    if zone is None or zone in ("Z", "z"):
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 15 or minutes > 59:  # PostgreSQL's limits for a zone offset
        raise ValueError("offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _bad_format(text: str) -> str:
    return f"{BAD_FORMAT}: {text.strip()!r}. Use {ACCEPTED_FORMS}"


def pgbackrest_time(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff+00``: what pgBackRest 2.45 parses for its backup-set
    selection and what PostgreSQL reads as ``recovery_target_time``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def describe_time(moment: datetime) -> str:
    """A time in messages: the backup-id form, with fractions when there are some."""
    utc = moment.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return format_id(utc)


@dataclass(frozen=True)
class Request:
    """The action's parameters, checked for form only (no repository needed)."""

    backup_id: str  # "" when not given
    latest: bool
    time: datetime | None  # aware UTC; None with ``latest`` or without restore-to-time

    @property
    def has_time(self) -> bool:
        return self.latest or self.time is not None


def parse_request(backup_id: str, restore_to_time: str, now: datetime) -> Request | str:
    """The request, or why it is malformed: a bad time format, or a time in the future.

    ``backup-id`` is only stripped here; it is matched against the repository later.
    """
    requested = backup_id.strip()
    raw = restore_to_time.strip()
    if not raw:
        return Request(requested, latest=False, time=None)
    if raw.lower() == LATEST:
        return Request(requested, latest=True, time=None)
    try:
        moment = parse_time(raw)
    except ValueError as exc:
        return str(exc)
    if moment > now:
        return f"{IN_THE_FUTURE}: {describe_time(moment)} (now {describe_time(now)})"
    return Request(requested, latest=False, time=moment)


# ---------------------------------------------------------------------------
# The choice


@dataclass(frozen=True)
class Chosen:
    """The pgBackRest restore that reaches the target (see host.RestoreTarget)."""

    stanza: str
    label: str  # --set: the backup set restored
    type: str  # immediate | time | default
    target: str | None = None  # --target (type time), pgBackRest's form
    timeline: int | None = None  # --target-timeline (types time and default)
    description: str = ""  # for the log

    @property
    def restore_to_time(self) -> str:
        """The app-bag value of ``restore-to-time``."""
        if self.type == TIME:
            return self.target or ""
        if self.type == DEFAULT:
            return LATEST
        return ""


@dataclass(frozen=True)
class _Point:
    """Where a restore can start from: the end of a backup, the start of a timeline."""

    time: datetime
    timeline: int
    stanza: str
    backup: BackupRecord | None = None
    history: TimelineRecord | None = None


def choose_target(
    backups: Iterable[BackupRecord],
    timelines: Iterable[TimelineRecord],
    request: Request,
    *,
    own_stanza: str,
    ancestry: Ancestry | None = None,
) -> Chosen | str:
    """Which backup set, type, target and timeline reach ``request``; or why none does.

    Failed backups are never chosen. ``backup-id`` may name a backup (either id form) or
    a timeline (the ``restore`` row of list-backups). ``ancestry`` is asked only when a
    restore onto a timeline needs a base backup from before the timeline began.
    """
    finished = [b for b in backups if b.finished]
    histories = list(timelines)
    if request.backup_id:
        return _from_id(finished, histories, request, own_stanza, ancestry)
    stanza = _stanza_for_time(finished, own_stanza)
    if stanza is None:
        stanzas = sorted({b.stanza for b in finished})
        return f"{SEVERAL_STANZAS} (stanzas: {', '.join(stanzas)})"
    finished = [b for b in finished if b.stanza == stanza]
    histories = [t for t in histories if t.stanza == stanza]
    if not finished:
        return NO_BACKUPS
    if request.latest:
        return _latest(finished, histories, stanza)
    assert request.time is not None
    return _nearest(finished, histories, request.time, stanza, ancestry)


def _stanza_for_time(finished: Sequence[BackupRecord], own: str) -> str | None:
    """Our own stanza when it has backups, else the only stanza that has some."""
    stanzas = {b.stanza for b in finished}
    if own in stanzas or not stanzas:
        return own
    if len(stanzas) == 1:
        return stanzas.pop()
    return None


def _from_id(
    finished: Sequence[BackupRecord],
    histories: Sequence[TimelineRecord],
    request: Request,
    own_stanza: str,
    ancestry: Ancestry | None,
) -> Chosen | str:
    invalid = f"{msg.INVALID_BACKUP_ID}: {request.backup_id}"
    try:
        wanted = normalise_id(request.backup_id)
    except ValueError:
        return invalid
    candidates = [b for b in finished if b.backup_id == wanted]
    if candidates:
        best = min(candidates, key=lambda b: (b.stanza != own_stanza, b.label != request.backup_id))
        return _from_backup(best, request)
    rows = [t for t in histories if format_id(t.created) == wanted]
    if rows:
        row = min(rows, key=lambda t: (t.stanza != own_stanza, -t.timeline))
        return _from_timeline(finished, row, request, ancestry)
    return invalid


def _from_backup(backup: BackupRecord, request: Request) -> Chosen | str:
    if request.latest:
        return Chosen(
            backup.stanza,
            backup.label,
            DEFAULT,
            timeline=backup.timeline,
            description=f"backup {backup.backup_id} and all WAL of timeline {backup.timeline}",
        )
    if request.time is None:
        return Chosen(
            backup.stanza,
            backup.label,
            IMMEDIATE,
            description=f"the end of backup {backup.backup_id}",
        )
    return _time_target(backup, backup.timeline, request.time)


def _time_target(base: BackupRecord, timeline: int, moment: datetime) -> Chosen | str:
    if moment < base.stop:
        return (
            f"{BEFORE_BACKUP_END}: {describe_time(moment)} is before backup {base.backup_id} "
            f"ended ({describe_time(base.stop)})"
        )
    return Chosen(
        base.stanza,
        base.label,
        TIME,
        target=pgbackrest_time(moment),
        timeline=timeline,
        description=(
            f"{describe_time(moment)} on timeline {timeline}, from backup {base.backup_id}"
        ),
    )


def _from_timeline(
    finished: Sequence[BackupRecord],
    row: TimelineRecord,
    request: Request,
    ancestry: Ancestry | None,
) -> Chosen | str:
    if not request.has_time:
        return TIMELINE_NEEDS_TIME
    base = _base_for_timeline(finished, row, ancestry)
    if base is None:
        return f"{NO_BASE_FOR_TIMELINE}: timeline {row.timeline}"
    if request.latest:
        return Chosen(
            row.stanza,
            base.label,
            DEFAULT,
            timeline=row.timeline,
            description=f"all WAL of timeline {row.timeline}, from backup {base.backup_id}",
        )
    assert request.time is not None
    if request.time < row.created:
        return (
            f"{BEFORE_TIMELINE}: {describe_time(request.time)} is before timeline "
            f"{row.timeline} began ({format_id(row.created)})"
        )
    return _time_target(base, row.timeline, request.time)


def _base_for_timeline(
    finished: Sequence[BackupRecord], row: TimelineRecord, ancestry: Ancestry | None
) -> BackupRecord | None:
    """The backup set a restore onto ``row``'s timeline starts from: the newest finished
    backup of its stanza that ended before the timeline began, on the timeline's own path.

    The path is what the ``.history`` file says: a backup on a parent timeline is on it
    only if it stopped before the timeline left that parent (its ``lsn_stop`` at or before
    the switch LSN); PostgreSQL refuses any other (``requested timeline N is not a child of
    this server's history``). Without the file, timestamps decide (docs/restore.md).
    """
    candidates = [
        b
        for b in finished
        if b.stanza == row.stanza and b.timeline <= row.timeline and b.stop <= row.created
    ]
    branches = ancestry(row) if ancestry is not None and candidates else None
    if branches is not None:
        candidates = [b for b in candidates if _on_path(b, row.timeline, branches)]
    return max(candidates, key=lambda b: (b.stop, b.timeline), default=None)


def _on_path(backup: BackupRecord, timeline: int, branches: Sequence[TimelineBranch]) -> bool:
    if backup.timeline == timeline:
        return True
    left_at = [b.switch_lsn for b in branches if b.parent == backup.timeline]
    if not left_at:
        return False  # a timeline that is not an ancestor of this one
    try:
        return lsn_value(backup.lsn_stop) <= lsn_value(left_at[0])
    except ValueError:
        return False  # no stop LSN to compare: never guess


def _latest(
    finished: Sequence[BackupRecord], histories: Sequence[TimelineRecord], stanza: str
) -> Chosen | str:
    newest = max([b.timeline for b in finished] + [t.timeline for t in histories])
    on_newest = [b for b in finished if b.timeline == newest]
    if not on_newest:
        return f"{NO_BASE_ON_LATEST}: timeline {newest}; take a backup first"
    base = max(on_newest, key=lambda b: b.stop)
    return Chosen(
        stanza,
        base.label,
        DEFAULT,
        timeline=newest,
        description=f"all WAL of timeline {newest}, from backup {base.backup_id}",
    )


def _nearest(
    finished: Sequence[BackupRecord],
    histories: Sequence[TimelineRecord],
    moment: datetime,
    stanza: str,
    ancestry: Ancestry | None,
) -> Chosen | str:
    points = [_Point(b.stop, b.timeline, stanza, backup=b) for b in finished]
    points += [_Point(t.created, t.timeline, stanza, history=t) for t in histories]
    before = [p for p in points if p.time <= moment]
    if not before:
        first = min(finished, key=lambda b: b.stop)
        return (
            f"{BEFORE_FIRST}: {describe_time(moment)} is before backup {first.backup_id} "
            f"ended ({describe_time(first.stop)})"
        )
    # The newest point; at the same moment the higher timeline (as numbers: 10 > 9).
    point = max(before, key=lambda p: (p.time, p.timeline))
    if point.backup is not None:
        return _time_target(point.backup, point.timeline, moment)
    assert point.history is not None
    base = _base_for_timeline(finished, point.history, ancestry)
    if base is None:
        return f"{NO_BASE_FOR_TIMELINE}: timeline {point.timeline}"
    return _time_target(base, point.timeline, moment)
