"""Helpers shared by the end-to-end tests (imported as a module: tests/e2e is on sys.path)."""

from __future__ import annotations

import psycopg

from pgbackups.local.runtime.cluster import Cluster


def tcp_connect(cluster: Cluster, unit_ref: str, timeout: int = 5) -> None:
    """Connect to a unit as a TCP client would (password, 127.0.0.1): raises
    psycopg.OperationalError when refused, e.g. by pg_hba while a unit is hidden."""
    unit = cluster.unit(unit_ref)
    with psycopg.connect(
        host="127.0.0.1",
        port=unit.pg_port,
        user="postgres",
        password=cluster.passwords().superuser,
        dbname="postgres",
        connect_timeout=timeout,
    ) as conn:
        conn.execute("select 1")
