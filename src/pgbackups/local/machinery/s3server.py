"""The cluster's S3 server: ``rclone serve s3`` over TLS, with generated credentials.

The credentials reach rclone through its environment (``RCLONE_AUTH_KEY``; rclone reads
every flag from ``RCLONE_<FLAG>``), never through its command line.

An acknowledged PUT is in the data directory: rclone runs without its VFS write cache
(``--vfs-cache-mode off``), so it answers a PUT once the object is a file in the backing
directory, not when it is in a cache that is written back seconds later. With the
write cache, a server killed or stopped within seconds of a pgBackRest push served the
last objects as 0-byte bodies after a restart (docs/reliability.md, "The local S3 server").
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import string
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BUCKET = "pgbackups"
ACCESS_KEY_LEN = 20
SECRET_KEY_LEN = 40


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> S3Credentials:
        upper = string.ascii_uppercase + string.digits
        alnum = string.ascii_letters + string.digits
        return cls(
            "".join(secrets.choice(upper) for _ in range(ACCESS_KEY_LEN)),
            "".join(secrets.choice(alnum) for _ in range(SECRET_KEY_LEN)),
        )


def argv(
    rclone: Path,
    *,
    data_dir: Path,
    port: int,
    cert: Path,
    key: Path,
    cache_dir: Path,
    host: str = "127.0.0.1",
) -> list[str]:
    return [
        str(rclone), "serve", "s3", str(data_dir),
        "--addr", f"{host}:{port}",
        "--cert", str(cert),
        "--key", str(key),
        "--vfs-cache-mode", "off",
        # Off writes nothing here; the flag keeps rclone away from the database
        # user's home and from a write cache an older pgbackups left (see leftovers).
        "--cache-dir", str(cache_dir),
        "--config", "/dev/null",
    ]  # fmt: skip


def cache_leftovers(cache_dir: Path) -> list[Path]:
    """Files left in the write-back cache by an rclone that ran with ``--vfs-cache-mode
    writes`` (pgbackups before docs/reliability.md). Only read, never followed out of
    ``cache_dir`` (it belongs to the database user)."""
    found: list[Path] = []
    for root, _dirs, files in os.walk(cache_dir / "vfs"):
        found.extend(Path(root) / name for name in files)
    return sorted(found)


def env(credentials: S3Credentials) -> dict[str, str]:
    # rclone reads a list flag from the environment as CSV: quote the pair so that it
    # stays one "key,secret" entry.
    return {"RCLONE_AUTH_KEY": f'"{credentials.access_key},{credentials.secret_key}"'}


def is_ready(
    port: int,
    ca_file: Path,
    timeout: float = 1.0,
    host: str = "127.0.0.1",
    server_name: str = "localhost",
) -> bool:
    """The server at ``host`` completes a TLS handshake for ``server_name`` with a cert
    from our CA."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=server_name),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False
