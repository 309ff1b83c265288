"""Backup ids (docs/behaviour/backup-ids.md): the user id and the pgBackRest label, both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pgbackups.core.ids import (
    format_id,
    is_label,
    is_user_id,
    label_time,
    label_to_id,
    normalise_id,
    parse_id,
)


@pytest.mark.parametrize(
    ("label", "user_id"),
    [
        ("20261128-143926F", "2026-11-28T14:39:26Z"),
        ("20261128-143926F_20261128-144435D", "2026-11-28T14:44:35Z"),
        ("20261128-143926F_20261129-000001I", "2026-11-29T00:00:01Z"),
    ],
)
def test_label_to_id(label: str, user_id: str) -> None:
    assert is_label(label)
    assert label_to_id(label) == user_id
    assert normalise_id(label) == user_id
    assert normalise_id(user_id) == user_id
    assert label_time(label).tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-28",
        "2026-11-28 14:39:26",
        "2026-11-28T14:39:26",
        "20261128-143926",
        "20261128-143926X",
        "x20261128-143926F",
        "yesterday",
    ],
)
def test_malformed_ids(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DDTHH:MM:SSZ"):
        parse_id(text)


def test_label_time_rejects_non_labels() -> None:
    with pytest.raises(ValueError, match="not a pgBackRest backup label"):
        label_time("2026-11-28T14:39:26Z")


def test_format_id_converts_to_utc() -> None:
    moment = datetime(2026, 11, 28, 16, 39, 26, tzinfo=timezone(timedelta(hours=2)))
    assert format_id(moment) == "2026-11-28T14:39:26Z"


def test_parse_id_strips_and_is_aware() -> None:
    assert parse_id(" 2026-11-28T14:39:26Z ") == datetime(2026, 11, 28, 14, 39, 26, tzinfo=UTC)
    assert is_user_id("2026-11-28T14:39:26Z")
    assert not is_user_id("20261128-143926F")


def test_ids_order_like_times() -> None:
    labels = ["20261128-143926F", "20261128-143926F_20261128-144435D", "20261201-000000F"]
    assert sorted(labels, key=label_time) == labels
