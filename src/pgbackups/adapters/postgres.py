"""PostgreSQL facts the hooks need: system identifier, timeline, recovery, liveness.

The system identifier comes from ``pg_controldata <data dir>`` (run as the database
user: it works while the server is stopped) or from SQL; the rest from SQL over the
unix socket with psycopg 3, always with a connect timeout. psycopg is imported by the
functions that use it, not here: it costs about 50 ms, which commands that never open a
connection (``--help``, ``status``, a backup) would pay (docs/performance.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, LiteralString

from pgbackups.adapters import processes
from pgbackups.adapters.processes import OsUser
from pgbackups.core.archive_health import ArchiverStats, dropped_segments

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

log = logging.getLogger(__name__)

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
CONNECT_TIMEOUT = 5  # seconds
_SYSTEM_ID_RE = re.compile(r"^Database system identifier:\s*(\d+)\s*$", re.MULTILINE)


def connect(
    socket_dir: str,
    port: int,
    user: str = "postgres",
    dbname: str = "postgres",
    *,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> Connection:
    """An autocommit connection over the unix socket in ``socket_dir``."""
    import psycopg  # on first use: see the module docstring

    return psycopg.connect(
        host=socket_dir,
        port=port,
        user=user,
        dbname=dbname,
        connect_timeout=connect_timeout,
        autocommit=True,
        application_name="pgbackups",
    )


def parse_controldata_system_id(text: str) -> int | None:
    match = _SYSTEM_ID_RE.search(text)
    return int(match.group(1)) if match else None


def _scalar(conn: Connection, query: LiteralString) -> Any:
    # Queries here are literals of this module, never built from input.
    import psycopg  # on first use: see the module docstring

    row = conn.execute(query).fetchone()
    if row is None:
        raise psycopg.DataError(f"no row from {query!r}")
    return row[0]


def system_identifier(
    source: str | Connection,
    *,
    user: OsUser | None = None,
    bin_dir: str = DEFAULT_BIN_DIR,
    timeout: float = 30.0,
) -> int | None:
    """The cluster's system identifier, from a data directory or a connection.

    With a path, ``pg_controldata`` runs as ``user`` (default: the database user).
    None when it cannot be read (logged).
    """
    import psycopg  # on first use: see the module docstring

    if not isinstance(source, str):
        try:
            return int(_scalar(source, "SELECT system_identifier FROM pg_control_system()"))
        except psycopg.Error as exc:
            log.warning("could not read the system identifier: %s", exc)
            return None
    run_as = user if user is not None else processes.db_user()
    result = processes.run([f"{bin_dir}/pg_controldata", source], user=run_as, timeout=timeout)
    if not result.ok:
        log.warning(
            "pg_controldata %s failed: %s", source, (result.stderr or result.stdout).strip()
        )
        return None
    return parse_controldata_system_id(result.stdout)


def request_fast_shutdown(
    data_dir: str,
    *,
    user: OsUser | None = None,
    bin_dir: str = DEFAULT_BIN_DIR,
    timeout: float = 10.0,
) -> bool:
    """Ask the PostgreSQL of ``data_dir`` for a fast shutdown (``pg_ctl stop -m fast``,
    the one Patroni asks for: clients cut, a shutdown checkpoint, the WAL ready for
    archiving archived) and return without waiting for it. True when the signal went;
    False (logged) when no server ran or pg_ctl failed."""
    run_as = user if user is not None else processes.db_user()
    result = processes.run(
        [f"{bin_dir}/pg_ctl", "stop", "-D", data_dir, "-m", "fast", "--no-wait"],
        user=run_as,
        timeout=timeout,
    )
    if not result.ok:
        log.info("pg_ctl stop %s: %s", data_dir, (result.stderr or result.stdout).strip())
    return result.ok


def current_timeline(conn: Connection) -> int:
    """The timeline of the last checkpoint (a number, never compared as text)."""
    return int(_scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"))


def timeline_history(conn: Connection, timeline: int) -> str | None:
    """The text of ``timeline``'s ``.history`` file in ``pg_wal`` (where recovery ended
    and which parent it branched from); None for timeline 1, which has none, or when the
    file is not there."""
    if timeline <= 1:
        return None
    row = conn.execute(
        "SELECT pg_read_file(%s, 0, 1048576, true)", (f"pg_wal/{timeline:08X}.history",)
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def archiver_stats(conn: Connection, spool_out: str) -> ArchiverStats:
    """``pg_stat_archiver``, the ``.ready`` segments in ``pg_wal/archive_status``, and the
    drop notices among pgBackRest's spool ``.ok`` files in ``spool_out``. The spool is read
    by PostgreSQL (the database user, as superuser), so root opens nothing there."""
    import psycopg  # on first use: see the module docstring

    row = conn.execute(
        "SELECT archived_count, last_archived_wal, last_archived_time,"
        " failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver"
    ).fetchone()
    ready = conn.execute(
        "SELECT count(*), min(name), min(modification) FROM pg_ls_archive_statusdir()"
        " WHERE name LIKE '%.ready'"
    ).fetchone()
    # Only .ok files: pgBackRest writes a notice into the .ok of a dropped segment.
    notices = conn.execute(
        "SELECT name, pg_read_file(%(d)s || '/' || name, 0, 4096, true)"
        " FROM pg_ls_dir(%(d)s, true, false) AS name WHERE name LIKE '%%.ok'",
        {"d": spool_out},
    ).fetchall()
    if row is None or ready is None:
        raise psycopg.DataError("pg_stat_archiver returned no row")
    oldest = str(ready[1]).removesuffix(".ready") if ready[1] else None
    return ArchiverStats(
        archived_count=int(row[0] or 0),
        last_archived_wal=row[1],
        last_archived_time=row[2],
        failed_count=int(row[3] or 0),
        last_failed_wal=row[4],
        last_failed_time=row[5],
        ready_count=int(ready[0] or 0),
        oldest_ready_wal=oldest,
        oldest_ready_time=ready[2],
        dropped=dropped_segments((str(n), str(t or "")) for n, t in notices),
    )


def read_archiver_stats(
    socket_dir: str, port: int, spool_out: str, user: str = "postgres"
) -> ArchiverStats | None:
    """:func:`archiver_stats` over the unix socket; None when PostgreSQL does not answer."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user) as conn:
            return archiver_stats(conn, spool_out)
    except psycopg.Error as exc:
        log.debug("archiver not readable on %s:%s: %s", socket_dir, port, exc)
        return None


def in_recovery(conn: Connection) -> bool:
    return bool(_scalar(conn, "SELECT pg_is_in_recovery()"))


def accepts_connections(
    socket_dir: str,
    port: int,
    user: str = "postgres",
    dbname: str = "postgres",
    *,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> bool:
    """Whether a client can connect and run a query right now."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user, dbname, connect_timeout=connect_timeout) as conn:
            _scalar(conn, "SELECT 1")
            return True
    except psycopg.Error as exc:
        log.debug("postgres on %s:%s does not accept connections: %s", socket_dir, port, exc)
        return False


def read_in_recovery(
    socket_dir: str, port: int, user: str = "postgres", *, connect_timeout: int = CONNECT_TIMEOUT
) -> bool | None:
    """``pg_is_in_recovery()`` over the unix socket; None when PostgreSQL does not answer
    (still starting, or gone)."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user, connect_timeout=connect_timeout) as conn:
            return in_recovery(conn)
    except psycopg.Error as exc:
        log.debug("recovery state not readable on %s:%s: %s", socket_dir, port, exc)
        return None


def switch_wal(socket_dir: str, port: int, user: str = "postgres") -> bool:
    """``pg_switch_wal()`` over the unix socket; False when PostgreSQL does not answer."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT pg_switch_wal()")
            return True
    except psycopg.Error as exc:
        log.debug("pg_switch_wal() failed on %s:%s: %s", socket_dir, port, exc)
        return False


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as
    PostgreSQL's own ``scram_build_secret``): a role's password is set with it, so the
    password itself never reaches the server, its logs or ``pg_stat_activity``."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


# What Patroni's bootstrap grants its rewind user (pg_rewind reads files through these).
REWIND_FUNCTIONS: tuple[LiteralString, ...] = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


@dataclass(frozen=True)
class Role:
    """One of Patroni's users, as its bootstrap makes it."""

    name: str
    password: str = field(repr=False)
    replication: bool = False  # LOGIN REPLICATION (else LOGIN)
    rewind: bool = False  # EXECUTE on REWIND_FUNCTIONS


def set_role_passwords(
    socket_dir: str, port: int, roles: Sequence[Role], user: str = "postgres"
) -> str | None:
    """Give each role its password (created when it does not exist): what Patroni's
    bootstrap does for its users, here for a database restored from a backup, possibly
    another cluster's, whose roles have that cluster's passwords. The password travels as
    its SCRAM verifier. None when done, else PostgreSQL's reason."""
    import psycopg  # on first use: see the module docstring

    try:
        _set_role_passwords(socket_dir, port, roles, user)
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def _set_role_passwords(socket_dir: str, port: int, roles: Sequence[Role], user: str) -> None:
    from psycopg import sql

    with connect(socket_dir, port, user) as conn:
        for role in roles:
            found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,))
            exists = found.fetchone() is not None
            if exists and role.replication:
                text = sql.SQL("ALTER ROLE {} WITH LOGIN REPLICATION PASSWORD {}")
            elif exists:
                text = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}")
            elif role.replication:
                text = sql.SQL("CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD {}")
            else:
                text = sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}")
            verifier = sql.Literal(scram_verifier(role.password))
            conn.execute(text.format(sql.Identifier(role.name), verifier))
            for function in REWIND_FUNCTIONS if role.rewind else ():
                grant = sql.SQL("GRANT EXECUTE ON FUNCTION " + function + " TO {}")
                conn.execute(grant.format(sql.Identifier(role.name)))


def read_timeline(
    socket_dir: str, port: int, user: str = "postgres", *, connect_timeout: int = CONNECT_TIMEOUT
) -> int | None:
    """:func:`current_timeline` over the unix socket; None when PostgreSQL does not answer."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user, connect_timeout=connect_timeout) as conn:
            return current_timeline(conn)
    except psycopg.Error as exc:
        log.debug("timeline not readable on %s:%s: %s", socket_dir, port, exc)
        return None


def read_streaming_timeline(
    socket_dir: str, port: int, user: str = "postgres", *, connect_timeout: int = CONNECT_TIMEOUT
) -> int | None:
    """The timeline a standby's WAL receiver streams (``pg_stat_wal_receiver``); None when
    it does not stream or PostgreSQL does not answer."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user, connect_timeout=connect_timeout) as conn:
            row = conn.execute(
                "SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'"
            ).fetchone()
    except psycopg.Error as exc:
        log.debug("WAL receiver not readable on %s:%s: %s", socket_dir, port, exc)
        return None
    return None if row is None or row[0] is None else int(row[0])


def read_timeline_history(
    socket_dir: str, port: int, timeline: int, user: str = "postgres"
) -> str | None:
    """:func:`timeline_history` over the unix socket; None when PostgreSQL does not answer."""
    import psycopg  # on first use: see the module docstring

    try:
        with connect(socket_dir, port, user) as conn:
            return timeline_history(conn, timeline)
    except psycopg.Error as exc:
        log.debug(
            "history of timeline %s not readable on %s:%s: %s", timeline, socket_dir, port, exc
        )
        return None


def admits_tcp_client(
    host: str, port: int, user: str, password: str, *, connect_timeout: int = 3
) -> bool | None:
    """What a TCP client with a password sees now: True let in, False rejected by a
    ``reject`` rule of pg_hba, None anything else (down, no rule, wrong password)."""
    import psycopg  # on first use: see the module docstring

    try:
        with psycopg.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname="postgres",
            connect_timeout=connect_timeout,
        ):
            return True
    except psycopg.OperationalError as exc:
        return False if "pg_hba.conf rejects" in str(exc) else None
