"""Backup ids (docs/behaviour/backup-ids.md).

The user-facing id is the backup's start time in UTC, ``YYYY-MM-DDTHH:MM:SSZ``. It maps
one-to-one to the pgBackRest label: ``YYYYMMDD-HHMMSSF`` for a full backup,
``<full label>_YYYYMMDD-HHMMSSD|I`` for a differential or incremental one. Both forms
are accepted as input.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

USER_ID_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_LABEL_STAMP_FORMAT = "%Y%m%d-%H%M%S"
_LABEL_RE = re.compile(r"^(?:(\d{8}-\d{6})F_)?(\d{8}-\d{6})([FDI])$")
_USER_ID_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def is_label(text: str) -> bool:
    return _LABEL_RE.match(text) is not None


def is_user_id(text: str) -> bool:
    return _USER_ID_RE.match(text) is not None


def label_time(label: str) -> datetime:
    """The time a label names: the part after ``_`` for a differential or incremental."""
    match = _LABEL_RE.match(label)
    if match is None:
        raise ValueError(f"{label!r} is not a pgBackRest backup label")
    return datetime.strptime(match.group(2), _LABEL_STAMP_FORMAT).replace(tzinfo=UTC)


def label_to_id(label: str) -> str:
    return label_time(label).strftime(USER_ID_FORMAT)


def format_id(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(USER_ID_FORMAT)


def parse_id(text: str) -> datetime:
    """The moment a user id names. Raises ValueError naming the accepted forms."""
    text = text.strip()
    if is_label(text):
        return label_time(text)
    if is_user_id(text):
        return datetime.strptime(text, USER_ID_FORMAT).replace(tzinfo=UTC)
    raise ValueError(
        f"{text!r} is not a backup id; use YYYY-MM-DDTHH:MM:SSZ (e.g. 2026-11-28T14:39:26Z) "
        "or a pgBackRest label (e.g. 20261128-143926F)"
    )


def normalise_id(text: str) -> str:
    """Either accepted form, as the user-facing id."""
    return format_id(parse_id(text))
