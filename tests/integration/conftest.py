"""Real servers for the adapter tests: a CA, ``rclone serve s3`` over TLS, PostgreSQL 15.

Everything runs as the database user (``postgres`` when the suite runs as root), under
a private directory in /tmp that the database user can traverse, and is stopped by the
PID recorded when it was started. Certificates and the S3 server's command line and
environment come from the local runtime (:mod:`pgbackups.local.machinery.tls`,
:mod:`pgbackups.local.machinery.s3server`); the credentials reach rclone through its environment.
rclone runs from a copy in that directory, as the runtime's does: the checkout (and its
virtualenv) may be somewhere the database user cannot enter, such as /root.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from realservers import (
    PG_BIN,
    Certs,
    Postgres,
    S3Server,
    free_port,
    owned_dir,
    tail,
    wait_for,
)

from pgbackups.adapters import postgres, processes
from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery import programs, s3server, tls

MakePostgres = Callable[..., Postgres]


@pytest.fixture(scope="session")
def db_user() -> OsUser:
    return processes.db_user()


@pytest.fixture(scope="session")
def workdir(db_user: OsUser) -> Iterator[Path]:
    """A directory the database user can traverse (pytest's own tmp is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="pgbackups-it-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - the database user must traverse it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workdir: Path, db_user: OsUser) -> Certs:
    d = workdir / "tls"
    d.mkdir(mode=0o755)
    ca_cert, ca_key = d / "ca.crt", d / "ca.key"
    tls.create_ca(ca_cert, ca_key, "pgbackups integration CA")
    s3_cert, s3_key = d / "s3.crt", d / "s3.key"
    tls.issue_cert(
        ca_cert=ca_cert,
        ca_key=ca_key,
        cert=s3_cert,
        key=s3_key,
        common_name="localhost",
        owner=db_user,
    )
    return Certs(d, ca_cert, ca_key, s3_cert, s3_key)


@pytest.fixture(scope="session")
def s3(workdir: Path, certs: Certs, db_user: OsUser) -> Iterator[S3Server]:
    """``rclone serve s3`` over TLS for ``localhost``, as the database user."""
    base = owned_dir(workdir / "s3", db_user, 0o755)
    data = owned_dir(base / "data", db_user)
    cache = owned_dir(base / "cache", db_user)
    port = free_port()
    credentials = s3server.S3Credentials.generate()
    argv = s3server.argv(
        programs.install_rclone(workdir),
        data_dir=data,
        port=port,
        cert=certs.s3_cert,
        key=certs.s3_key,
        cache_dir=cache,
    )
    log_file = base / "rclone.log"
    pid = processes.spawn(argv, log_file=log_file, user=db_user, env=s3server.env(credentials))
    try:
        wait_for(lambda: s3server.is_ready(port, certs.ca_cert), 15, "rclone serve s3")
    except TimeoutError:
        processes.stop(pid, timeout=5)
        raise RuntimeError(f"rclone did not start:\n{tail(log_file)}") from None
    yield S3Server(port, credentials, certs.ca_pem, data, pid)
    processes.stop(pid, timeout=10)


@pytest.fixture(scope="module")
def make_postgres(workdir: Path, db_user: OsUser) -> Iterator[MakePostgres]:
    """Start a plain PostgreSQL 15 (unix socket only) with extra settings; stopped by PID.

    With ``replica_of``, the new server is a streaming replica made by pg_basebackup.
    """
    started: list[int] = []

    def make(name: str, settings: dict[str, str], replica_of: Postgres | None = None) -> Postgres:
        base = owned_dir(workdir / "pg" / name, db_user, 0o755)
        data = base / "data"
        sock = owned_dir(base / "sock", db_user, 0o755)
        port = free_port()
        if replica_of is None:
            argv = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
            argv.append("-N")
        else:
            argv = [str(PG_BIN / "pg_basebackup"), "-D", str(data), "-h",
                    str(replica_of.socket_dir), "-p", str(replica_of.port), "-U", "postgres",
                    "-X", "stream", "-R", "-c", "fast"]  # fmt: skip
        init = processes.run(argv, user=db_user, timeout=120)
        assert init.ok, init.stderr
        conf = {
            "listen_addresses": "''",
            "port": str(port),
            "unix_socket_directories": f"'{sock}'",
            "wal_level": "replica",
            "max_wal_senders": "3",
            "fsync": "off",
            "shared_buffers": "16MB",
            **settings,
        }
        with open(data / "postgresql.conf", "a", encoding="utf-8") as handle:
            handle.writelines(f"{k} = {v}\n" for k, v in conf.items())
        log_file = base / "postgres.log"
        pid = processes.spawn([str(PG_BIN / "postgres"), "-D", str(data)], log_file=log_file,
                              user=db_user)  # fmt: skip
        started.append(pid)
        try:
            wait_for(
                lambda: postgres.accepts_connections(str(sock), port, connect_timeout=1),
                30,
                "postgres",
            )
        except TimeoutError:
            raise RuntimeError(f"postgres did not start:\n{tail(log_file)}") from None
        return Postgres(data, sock, port, pid, log_file)

    yield make
    for pid in reversed(started):
        processes.stop(pid, timeout=30, sig=signal.SIGINT)  # fast shutdown
