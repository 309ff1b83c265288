"""The fast shutdown the workload asks for before Patroni's stop (a restore's stop on a
unit no other member runs beside), against a real PostgreSQL 15: pg_ctl returns at once,
the server ends with a shutdown checkpoint (a clean "shut down" in pg_control, which is
what Patroni and the moved-aside copy rely on), and asking again with no server is a
logged no."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from realservers import PG_BIN, Postgres, wait_for

from pgbackups.adapters import postgres, processes
from pgbackups.adapters.processes import OsUser

pytestmark = pytest.mark.real


def test_fast_shutdown_requested_without_waiting_ends_clean(
    make_postgres: Callable[..., Postgres], db_user: OsUser
) -> None:
    pg = make_postgres("fast-shutdown", {})
    assert postgres.request_fast_shutdown(str(pg.data_dir), user=db_user, bin_dir=str(PG_BIN))
    wait_for(lambda: not processes.is_alive(pg.pid), 30, "the postmaster to end")
    control = processes.run([str(PG_BIN / "pg_controldata"), str(pg.data_dir)], user=db_user)
    assert control.ok, control.stderr
    state = next(
        line for line in control.stdout.splitlines() if line.startswith("Database cluster state")
    )
    assert state.split(":", 1)[1].strip() == "shut down"
    # No server any more: pg_ctl fails, and that is a False, not an exception.
    assert not postgres.request_fast_shutdown(str(pg.data_dir), user=db_user, bin_dir=str(PG_BIN))
