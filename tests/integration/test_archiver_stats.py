"""The archiver's facts as update-status reads them, against real PostgreSQL 15 and
pgBackRest 2.45 with asynchronous archiving: a push that fails shows in
``pg_stat_archiver`` with the segments waiting; a queue over ``archive-push-queue-max``
is dropped and announced in the spool's ``.ok`` files (what pgbackups reads); the
repository's archive then has exactly that hole."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from realservers import Postgres, owned_dir, wait_for

from pgbackups.adapters import postgres, processes
from pgbackups.adapters.pgbackrest import PgBackRest, Timeouts
from pgbackups.adapters.processes import OsUser
from pgbackups.core import archive, archive_health
from pgbackups.core.archive_health import ArchiverStats

pytestmark = pytest.mark.real

STANZA = "it.archiving"


def _conf(base: Path, pg_data: Path, sock: Path, port: int) -> str:
    # A posix repository: a push fails at once when it is not writable, and the queue
    # cap (16 MiB, one segment) is crossed by two segments.
    return "\n".join(
        [
            "[global]",
            "repo1-type=posix",
            f"repo1-path={base / 'repo'}",
            f"spool-path={base / 'spool'}",
            f"log-path={base / 'log'}",
            f"lock-path={base / 'lock'}",
            "archive-async=y",
            "archive-timeout=5",
            "",
            "[global:archive-push]",
            "archive-push-queue-max=16MiB",
            "",
            f"[{STANZA}]",
            f"pg1-path={pg_data}",
            f"pg1-socket-path={sock}",
            f"pg1-port={port}",
            "",
        ]
    )


def _stats(pg: Postgres, base: Path) -> ArchiverStats:
    out = str(base / "spool" / "archive" / STANZA / "out")
    stats = postgres.read_archiver_stats(str(pg.socket_dir), pg.port, out)
    assert stats is not None
    return stats


def _switch(pg: Postgres, db_user: OsUser, n: int = 1) -> None:
    for _ in range(n):
        # Two statements: the insert commits in the segment that the switch closes.
        pg.psql("INSERT INTO t SELECT generate_series(1, 100)", db_user)
        pg.psql("SELECT pg_switch_wal()", db_user)


def _as_db_user(db_user: OsUser, *argv: str) -> None:
    result = processes.run(list(argv), user=db_user, timeout=10)
    assert result.ok, result.stderr


def test_failing_then_dropped_then_healthy(
    workdir: Path, db_user: OsUser, make_postgres: Callable[..., Postgres]
) -> None:
    base = owned_dir(workdir / "archiving", db_user, 0o750)
    for sub in ("repo", "spool", "log", "lock"):
        owned_dir(base / sub, db_user)
    conf = base / "pgbackrest.conf"
    pg = make_postgres(
        "archiving",
        {
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'",
        },
    )
    conf.write_text(_conf(base, pg.data_dir, pg.socket_dir, pg.port))
    conf.chmod(0o644)
    tool = PgBackRest(conf, STANZA, user=db_user, timeouts=Timeouts(command=60, info=30))
    created = tool.stanza_create()
    assert created.ok, tool.error_line(created)
    pg.psql("CREATE TABLE t (id int)", db_user)
    _switch(pg, db_user)
    wait_for(lambda: _stats(pg, base).ready_count == 0, 30, "the first segments archived")
    healthy = _stats(pg, base)
    now = datetime.now(UTC)
    assert healthy.last_archived_wal is not None and healthy.dropped == ()
    assert archive_health.archiving_problem(healthy, now=now, lag_threshold=300) is None

    # The repository refuses writes: pushes fail, segments wait.
    _as_db_user(db_user, "chmod", "000", str(base / "repo" / "archive"))
    _switch(pg, db_user)
    wait_for(lambda: _stats(pg, base).failed_count > 0, 60, "a failed push")
    failing = _stats(pg, base)
    assert failing.ready_count >= 1 and failing.oldest_ready_time is not None
    assert failing.last_failed_wal == failing.oldest_ready_wal
    problem = archive_health.archiving_problem(failing, now=datetime.now(UTC), lag_threshold=300)
    assert problem is not None and problem.startswith("WAL archiving failing since ")

    # More WAL than the queue cap: pgBackRest drops the queue and announces each segment.
    _switch(pg, db_user, 3)
    wait_for(lambda: len(_stats(pg, base).dropped) >= 2, 90, "drop notices in the spool")
    # PostgreSQL is told they were archived: nothing waits, nothing failed since.
    wait_for(lambda: _stats(pg, base).ready_count == 0, 60, "the dropped segments acknowledged")
    dropped = _stats(pg, base)
    assert (
        archive_health.archiving_problem(dropped, now=datetime.now(UTC), lag_threshold=300) is None
    )
    holes = archive_health.holes_of(dropped.dropped)

    # The repository works again: new segments arrive, the dropped ones never do.
    _as_db_user(db_user, "chmod", "750", str(base / "repo" / "archive"))
    time.sleep(1)
    _switch(pg, db_user)
    wait_for(lambda: _stats(pg, base).ready_count == 0, 60, "archiving to work again")
    wait_for(lambda: _stats(pg, base).dropped == (), 60, "pgBackRest to clear its notices")
    gaps = archive.gaps(tool.archive_segments(STANZA))
    missing = archive_health.holes_of(p.segment for p in gaps)
    assert holes and all(
        any(h.first >= m.first and h.last <= m.last for m in missing) for h in holes
    )
    healed = _stats(pg, base)
    assert (
        archive_health.archiving_problem(healed, now=datetime.now(UTC), lag_threshold=300) is None
    )
