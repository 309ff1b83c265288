"""The passwords a restore gives the restored database's users (Patroni's bootstrap did
this after its own restore), against a real PostgreSQL 15: each role logs in with its
new password over scram-sha-256 and with no other, a missing role is created with its
attributes, and the password itself reaches neither the server's log nor its catalog
(only its SCRAM verifier travels)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from realservers import Postgres

from pgbackups.adapters import postgres
from pgbackups.adapters.processes import OsUser

pytestmark = pytest.mark.real


def _login(pg: Postgres, user: str, password: str) -> bool:
    try:
        with psycopg.connect(
            host=str(pg.socket_dir), port=pg.port, user=user, password=password,
            dbname="postgres", connect_timeout=5,
        ):  # fmt: skip
            return True
    except psycopg.OperationalError:
        return False


def test_restored_users_get_this_clusters_passwords(
    make_postgres: Callable[..., Postgres], db_user: OsUser
) -> None:
    pg = make_postgres("roles", {"log_statement": "'all'"})
    # As a cluster restored from a backup: the replication user with another password.
    pg.psql("CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD 'the-old-clusters'", db_user)
    hba = pg.data_dir / "pg_hba.conf"
    hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    pg.psql("SELECT pg_reload_conf()", db_user)
    roles = [
        postgres.Role("replicator", "new-replication-secret", replication=True),
        postgres.Role("rewind_user", "new-rewind-secret", rewind=True),
    ]
    assert postgres.set_role_passwords(str(pg.socket_dir), pg.port, roles) is None

    assert _login(pg, "replicator", "new-replication-secret")
    assert not _login(pg, "replicator", "the-old-clusters")
    assert _login(pg, "rewind_user", "new-rewind-secret")
    flags = pg.psql(
        "SELECT rolname, rolreplication, rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$4096:%' "
        "FROM pg_authid WHERE rolname IN ('replicator', 'rewind_user') ORDER BY 1",
        db_user,
    )
    assert flags.splitlines() == ["replicator|t|t|t", "rewind_user|f|t|t"]
    granted = pg.psql(
        "SELECT count(*) FROM pg_proc p WHERE has_function_privilege('rewind_user', p.oid, "
        "'EXECUTE') AND p.proname IN ('pg_ls_dir', 'pg_stat_file', 'pg_read_binary_file')",
        db_user,
    )
    assert int(granted) >= 4
    logged = pg.log_file.read_text(errors="replace")
    assert "ALTER ROLE" in logged, "log_statement = all: the statements are in the log"
    assert "new-replication-secret" not in logged and "new-rewind-secret" not in logged


def test_no_server_is_a_reason_not_an_exception() -> None:
    problem = postgres.set_role_passwords("/nonexistent", 1, [postgres.Role("r", "x")])
    assert problem
