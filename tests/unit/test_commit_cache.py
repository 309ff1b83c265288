"""The WAL commit cache kept between processes (adapters/pgbackrest.py): an answer
comes from the file only for an object key that carries its content's checksum, and a
file that cannot be read is ignored. The program is one that does not exist: a read that
reached pgBackRest fails, so an answer proves it came from the cache."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgbackups.adapters.pgbackrest import PgBackRest
from pgbackups.adapters.processes import current_user
from pgbackups.core.archive import ArchivedSegment
from pgbackups.core.host import BackupToolError

SHA = "0123456789abcdef0123456789abcdef01234567"
KEY = f"archive/local.x/15-1/0000000100000000/000000010000000000000005-{SHA}.zst"
SEGMENT = ArchivedSegment(1, 5, 100, KEY)
AT = datetime(2026, 12, 2, 12, 0, 1, tzinfo=UTC)
LATER = datetime(2026, 12, 2, 12, 0, 9, tzinfo=UTC)


def _tool(cache: Path) -> PgBackRest:
    return PgBackRest(
        "/nonexistent/pgbackrest.conf",
        "local.x",
        user=current_user(),
        program="/nonexistent/pgbackrest",
        commit_cache=cache,
    )


def test_a_cached_segment_is_not_read_again(tmp_path: Path) -> None:
    cache = tmp_path / "wal-commits.json"
    records = [[0x5000100, AT.isoformat()], [0x5000200, LATER.isoformat()]]
    cache.write_text(json.dumps({KEY: records}))
    tool = _tool(cache)
    assert tool.last_commit_time(SEGMENT) == LATER
    assert tool.last_commit_time(SEGMENT, "0/5000200") == AT  # only records before it


def test_a_new_window_end_is_read_not_guessed(tmp_path: Path) -> None:
    """Another segment (a window that moved on) is not in the cache: it is read, and
    here the read fails, as it must without pgBackRest."""
    cache = tmp_path / "wal-commits.json"
    cache.write_text(json.dumps({KEY: [[0x5000100, AT.isoformat()]]}))
    newer = ArchivedSegment(1, 6, 100, KEY.replace("05-", "06-"))
    with pytest.raises(BackupToolError):
        _tool(cache).last_commit_time(newer)


def test_keys_without_a_checksum_and_broken_files_are_ignored(tmp_path: Path) -> None:
    cache = tmp_path / "wal-commits.json"
    plain = "archive/local.x/15-1/0000000100000000/000000010000000000000005.zst"
    cache.write_text(json.dumps({plain: [[1, AT.isoformat()]]}))
    with pytest.raises(BackupToolError):
        _tool(cache).last_commit_time(ArchivedSegment(1, 5, 100, plain))
    cache.write_text("{not json")
    with pytest.raises(BackupToolError):
        _tool(cache).last_commit_time(SEGMENT)
