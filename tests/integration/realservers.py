"""Helpers and handles for the real servers of the integration tests (see conftest.py)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.adapters.processes import OsUser
from pgbackups.core.settings import S3Settings
from pgbackups.local.machinery import s3server, tls

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def owned_dir(path: Path, user: OsUser, mode: int = 0o750) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if not user.is_current:
        os.chown(path, user.uid, user.gid)
    return path


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca_cert: Path
    ca_key: Path
    s3_cert: Path
    s3_key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    def issue(self, name: str, owner: OsUser, *, client_auth: bool = True) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        tls.issue_cert(
            ca_cert=self.ca_cert,
            ca_key=self.ca_key,
            cert=cert,
            key=key,
            common_name=name,
            dns_names=("localhost",),
            client_auth=client_auth,
            owner=owner,
        )
        return cert, key


@dataclass
class S3Server:
    port: int
    credentials: s3server.S3Credentials
    ca_pem: str
    data_dir: Path
    pid: int
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    def settings(self, bucket: str, **overrides: object) -> S3Settings:
        values: dict[str, object] = {
            "bucket": bucket,
            "access_key": self.credentials.access_key,
            "secret_key": self.credentials.secret_key,
            "endpoint": self.endpoint,
            "path": "/it",
            "uri_style": "path",
            "tls_ca_chain": (self.ca_pem,),
        }
        values.update(overrides)
        return S3Settings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Postgres:
    data_dir: Path
    socket_dir: Path
    port: int
    pid: int
    log_file: Path

    def psql(self, sql: str, user: OsUser) -> str:
        result = processes.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            user=user,
            timeout=60,
        )
        assert result.ok, result.stderr
        return result.stdout.strip()
