"""The PostgreSQL adapter's readers when no server answers (no socket in the folder): each
says "no answer" (None/False) rather than raising. psycopg is imported on first use in
that module, so a reader whose ``except psycopg.Error`` had no import raised NameError
here instead (the restore's re-creating units and the archive check met it)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbackups.adapters import postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


READERS: dict[str, Callable[[str, int], object]] = {
    "read_archiver_stats": lambda d, p: postgres.read_archiver_stats(d, p, d),
    "accepts_connections": lambda d, p: postgres.accepts_connections(d, p, connect_timeout=2),
    "read_timeline": postgres.read_timeline,
    "switch_wal": postgres.switch_wal,
    "read_in_recovery": lambda d, p: postgres.read_in_recovery(d, p, connect_timeout=2),
    "read_streaming_timeline": lambda d, p: postgres.read_streaming_timeline(
        d, p, connect_timeout=2
    ),
    "read_timeline_history": lambda d, p: postgres.read_timeline_history(d, p, 2),
}


def test_every_reader_is_listed() -> None:
    readers = {n for n in dir(postgres) if n.startswith("read_")} | {
        "accepts_connections",
        "switch_wal",
    }
    assert readers == set(READERS)


@pytest.mark.parametrize("name", sorted(READERS))
def test_no_server_reads_as_no_answer(name: str, tmp_path: Path) -> None:
    assert READERS[name](str(tmp_path), _free_port()) in (None, False)
