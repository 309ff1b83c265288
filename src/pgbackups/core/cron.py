"""Cron expressions for backup schedules: five fields, an allow-list grammar, UTC.

``minute hour day-of-month month day-of-week``; each field is ``*``, a number, a range
``a-b``, any of these with a step ``/n``, or a comma list of them. Nothing else (no
names such as ``mon``, no ``@daily``, no ``L``/``W``/``#``): a schedule is a setting an
operator types, and a small grammar is one that cannot surprise. Day-of-week 0 and 7 are
Sunday. As in Vixie cron, when both day fields are restricted, a day matches when
*either* does.

Written here rather than taken from PyPI (croniter): the charm vendors the core and would
have to ship one more dependency for about a hundred lines; and what the core needs is
only "the latest scheduled minute at or before now", which is a bounded walk backwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# (name, lowest, highest) of each field, in order.
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_ITEM_RE = re.compile(r"(\*|\d{1,2}(?:-\d{1,2})?)(?:/(\d{1,2}))?")
MAX_LENGTH = 100
# The walk backwards looks at most this far: every valid expression matches at least once
# in any 8 years (29 February needs a leap year; 2100 is not one, hence 8 and not 4).
_LOOKBACK = timedelta(days=366 * 8)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression: the set of values each field accepts."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 folded into 0)
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, when: datetime) -> bool:
        weekday = (when.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
        in_days, in_weekdays = when.day in self.days, weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def matches(self, when: datetime) -> bool:
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and when.month in self.months
            and self._day_matches(when)
        )

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        """The latest scheduled minute at or before ``now`` (seconds dropped); None when
        there is none in the look-back (an impossible date such as 31 February)."""
        when = now.replace(second=0, microsecond=0)
        floor = when - _LOOKBACK
        while when >= floor:
            if not (when.month in self.months and self._day_matches(when)):
                when = when.replace(hour=0, minute=0) - timedelta(minutes=1)
                continue
            if when.hour not in self.hours:
                when = when.replace(minute=0) - timedelta(minutes=1)
                continue
            if when.minute in self.minutes:
                return when
            when -= timedelta(minutes=1)
        return None


class CronError(ValueError):
    """Why an expression was refused (one line, fit for a message)."""


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM_RE.fullmatch(item)
        if match is None:
            raise CronError(f"{name} {item!r} is not *, N, N-M, or one of them with /STEP")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise CronError(f"{name} step must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(part) for part in span.split("-"))
        else:
            first = int(span)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise CronError(f"{name} {item!r} is outside {low}-{high} or reversed")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(text: str) -> CronSchedule:
    """Parse ``minute hour dom month dow``; raises :class:`CronError`."""
    if len(text) > MAX_LENGTH or any(not " " <= c <= "~" for c in text):
        raise CronError(f"a schedule is printable ASCII of at most {MAX_LENGTH} characters")
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f"a schedule has 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(parts)}: {text[:40]!r}"
        )
    sets = [
        _field(part, name, low, high)
        for part, (name, low, high) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(0 if d == 7 else d for d in sets[4])
    return CronSchedule(
        text=" ".join(parts),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )
