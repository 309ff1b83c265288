"""The operator's backup policy: retention, schedules and the archiving lag threshold.

Raw options arrive as a string map from the host (the charm's config options; the local
runtime's ``pgbackups retention`` and ``pgbackups schedule`` commands). They are checked
here against allow-lists, before anything is rendered or scheduled; an option the host
does not set is absent (an empty value counts as absent, as Juju's unset string does).

Retention (pgBackRest's ``repo1-retention-*``): ``retention-full`` backups (count) or days
(time), ``retention-diff`` differential backups. pgBackRest expires after every
successful backup when retention is set, and ``expire`` applies it on demand. Without
``retention-full``, the S3 settings' ``delete-older-than-days`` applies (time-based), as
before; with it, this policy wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pgbackups.core import cron

RETENTION_FULL = "retention-full"
RETENTION_FULL_TYPE = "retention-full-type"
RETENTION_DIFF = "retention-diff"
ARCHIVE_LAG_THRESHOLD = "archive-lag-threshold"
# The backup type (create-backup's words) each schedule option starts.
SCHEDULE_OPTIONS = {
    "full-schedule": "full",
    "differential-schedule": "differential",
    "incremental-schedule": "incremental",
}
OPTIONS = (
    RETENTION_FULL,
    RETENTION_FULL_TYPE,
    RETENTION_DIFF,
    *SCHEDULE_OPTIONS,
    ARCHIVE_LAG_THRESHOLD,
)
RETENTION_TYPES = ("count", "time")
# pgBackRest 2.45's bounds of repo1-retention-full and repo1-retention-diff.
RETENTION_MIN, RETENTION_MAX = 1, 9999999
# Seconds the oldest WAL segment may wait to be archived before the primary says so. With
# archive_timeout at 60 s and asynchronous pushes, a healthy primary's oldest segment
# waits well under a minute (docs/performance.md: at most 10.7 s at full load).
DEFAULT_ARCHIVE_LAG_THRESHOLD = 300
LAG_MIN, LAG_MAX = 30, 86400
_NUMBER_RE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Retention:
    """What pgBackRest keeps: ``full`` backups (count) or days (time); ``diff`` differentials."""

    full: int
    full_type: str = "count"
    diff: int | None = None

    def describe(self) -> str:
        unit = "days" if self.full_type == "time" else "backups"
        text = f"full: {self.full} {unit} ({self.full_type})"
        return text + (f", differential: {self.diff}" if self.diff is not None else "")


@dataclass(frozen=True)
class BackupPolicy:
    retention: Retention | None = None
    schedules: Mapping[str, cron.CronSchedule] = field(default_factory=dict)  # by backup type
    archive_lag_threshold: int = DEFAULT_ARCHIVE_LAG_THRESHOLD  # seconds


# The start of every refusal's message (the charm's Blocked status says it).
INVALID_OPTIONS = "Invalid backup options"


@dataclass(frozen=True)
class PolicyProblem:
    invalid: tuple[str, ...]

    def message(self) -> str:
        return f"{INVALID_OPTIONS}: " + "; ".join(self.invalid)


def _number(key: str, text: str, low: int, high: int, invalid: list[str]) -> int | None:
    if _NUMBER_RE.fullmatch(text) is None or not low <= int(text) <= high:
        invalid.append(f"{key} {text[:20]!r} is not a whole number from {low} to {high}")
        return None
    return int(text)


def parse_policy(raw: Mapping[str, str]) -> BackupPolicy | PolicyProblem:
    """Validate every option (unknown names included); the policy, or every problem."""
    invalid: list[str] = []
    values = {k: v.strip() for k, v in raw.items() if isinstance(v, str) and v.strip()}
    for key in values:
        if key not in OPTIONS:
            invalid.append(f"unknown option {key[:40]!r}; known: {', '.join(OPTIONS)}")
    full = diff = None
    if RETENTION_FULL in values:
        full = _number(
            RETENTION_FULL, values[RETENTION_FULL], RETENTION_MIN, RETENTION_MAX, invalid
        )
    if RETENTION_DIFF in values:
        diff = _number(
            RETENTION_DIFF, values[RETENTION_DIFF], RETENTION_MIN, RETENTION_MAX, invalid
        )
    full_type = values.get(RETENTION_FULL_TYPE, "count")
    if full_type not in RETENTION_TYPES:
        invalid.append(f"{RETENTION_FULL_TYPE} {full_type[:20]!r} is not count or time")
    # retention-full-type alone is harmless (the charm's config always has its default).
    if RETENTION_FULL not in values and RETENTION_DIFF in values:
        invalid.append(f"{RETENTION_FULL} is needed with {RETENTION_DIFF}")
    schedules: dict[str, cron.CronSchedule] = {}
    for option, backup_type in SCHEDULE_OPTIONS.items():
        if option in values:
            try:
                schedules[backup_type] = cron.parse(values[option])
            except cron.CronError as exc:
                invalid.append(f"{option}: {exc}")
    lag = DEFAULT_ARCHIVE_LAG_THRESHOLD
    if ARCHIVE_LAG_THRESHOLD in values:
        lag = (
            _number(ARCHIVE_LAG_THRESHOLD, values[ARCHIVE_LAG_THRESHOLD], LAG_MIN, LAG_MAX, invalid)
            or lag
        )
    if invalid:
        return PolicyProblem(tuple(invalid))
    retention = None if full is None else Retention(full, full_type, diff)
    return BackupPolicy(retention=retention, schedules=schedules, archive_lag_threshold=lag)


def policy_or_default(raw: Mapping[str, str]) -> BackupPolicy:
    """The policy, or the default one when the options are invalid: nothing is expired
    and nothing is scheduled by options that were refused (the host says why)."""
    parsed = parse_policy(raw)
    return parsed if isinstance(parsed, BackupPolicy) else BackupPolicy()
