"""The backup options (core/policy.py) and cron schedules (core/cron.py): allow-lists,
with every refusal named; cron's latest scheduled minute at or before a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgbackups.core import cron
from pgbackups.core.policy import (
    DEFAULT_ARCHIVE_LAG_THRESHOLD,
    BackupPolicy,
    PolicyProblem,
    Retention,
    parse_policy,
    policy_or_default,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_no_options_is_the_default_policy() -> None:
    assert parse_policy({}) == BackupPolicy()
    assert parse_policy({"retention-full": "", "full-schedule": "  "}) == BackupPolicy()
    assert BackupPolicy().archive_lag_threshold == DEFAULT_ARCHIVE_LAG_THRESHOLD


def test_retention_by_count_and_by_time() -> None:
    policy = parse_policy({"retention-full": "4"})
    assert isinstance(policy, BackupPolicy)
    assert policy.retention == Retention(4, "count", None)
    assert policy.retention.describe() == "full: 4 backups (count)"
    policy = parse_policy(
        {"retention-full": "30", "retention-full-type": "time", "retention-diff": "7"}
    )
    assert isinstance(policy, BackupPolicy) and policy.retention is not None
    assert policy.retention.describe() == "full: 30 days (time), differential: 7"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"retention-full": "0"}, "retention-full '0' is not a whole number from 1 to 9999999"),
        ({"retention-full": "-1"}, "retention-full '-1' is not a whole number"),
        ({"retention-full": "4\nrepo1-path=/x"}, "retention-full '4\\nrepo1-path=/x' is not"),
        ({"retention-full": "10000000"}, "is not a whole number from 1 to 9999999"),
        ({"retention-full": "2", "retention-full-type": "weekly"}, "is not count or time"),
        ({"retention-diff": "2"}, "retention-full is needed with retention-diff"),
        ({"full-schedule": "0 2 * *"}, "full-schedule: a schedule has 5 fields"),
        ({"incremental-schedule": "61 * * * *"}, "minute '61' is outside 0-59"),
        ({"full-schedule": "@daily"}, "a schedule has 5 fields"),
        ({"full-schedule": "0 2 * * mon"}, "day-of-week 'mon' is not"),
        ({"full-schedule": "*/0 * * * *"}, "minute step must be at least 1"),
        ({"full-schedule": "5-1 * * * *"}, "outside 0-59 or reversed"),
        ({"archive-lag-threshold": "5"}, "archive-lag-threshold '5' is not a whole number"),
        ({"retention": "2"}, "unknown option 'retention'"),
    ],
)
def test_refused_options_are_named(options: dict[str, str], problem: str) -> None:
    parsed = parse_policy(options)
    assert isinstance(parsed, PolicyProblem)
    assert problem in parsed.message()
    assert policy_or_default(options) == BackupPolicy()


def test_a_retention_type_alone_retains_as_before() -> None:
    # The charm's config always carries retention-full-type's default.
    assert parse_policy({"retention-full-type": "count"}) == BackupPolicy()


def test_every_problem_is_reported_at_once() -> None:
    parsed = parse_policy({"retention-full": "x", "full-schedule": "x"})
    assert isinstance(parsed, PolicyProblem) and len(parsed.invalid) == 2


@pytest.mark.parametrize(
    ("expression", "now", "latest"),
    [
        ("* * * * *", "2026-12-02 10:17:42", "2026-12-02 10:17:00"),
        ("0 2 * * *", "2026-12-02 10:17:00", "2026-12-02 02:00:00"),
        ("0 2 * * *", "2026-12-02 01:59:59", "2026-12-01 02:00:00"),
        ("*/15 * * * *", "2026-12-02 10:44:00", "2026-12-02 10:30:00"),
        ("5,35 9-17 * * 1-5", "2026-12-05 12:00:00", "2026-12-04 17:35:00"),  # Sat -> Fri
        ("0 3 * * 0", "2026-12-02 10:00:00", "2026-11-29 03:00:00"),  # Sunday
        ("0 3 * * 7", "2026-12-02 10:00:00", "2026-11-29 03:00:00"),  # 7 is Sunday too
        ("0 0 1 * *", "2026-12-02 10:00:00", "2026-12-01 00:00:00"),
        ("0 0 29 2 *", "2026-12-02 10:00:00", "2024-02-29 00:00:00"),
        # Both day fields restricted: either matches (Vixie cron).
        ("0 0 15 * 3", "2026-12-04 00:00:00", "2026-12-02 00:00:00"),
        ("30 4/6 * * *", "2026-12-02 09:00:00", "2026-12-02 04:30:00"),
    ],
)
def test_latest_scheduled_minute(expression: str, now: str, latest: str) -> None:
    schedule = cron.parse(expression)
    assert schedule.latest_at_or_before(at(now)) == at(latest)


def test_an_impossible_date_never_runs() -> None:
    assert cron.parse("0 0 31 2 *").latest_at_or_before(at("2026-12-02 10:00:00")) is None
