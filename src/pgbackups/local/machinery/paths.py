"""Where a local cluster keeps its files, and how they are owned.

Layout under ``$PGBACKUPS_HOME``::

    bin/rclone                          copy of the S3 server binary (executable by postgres)
    clusters/<name>/state.json          ports, pids, leader, statuses (no secrets)
    clusters/<name>/secrets/            0700 db user: passwords.json, s3-access-key, s3-secret-key
    clusters/<name>/tls/                ca.crt, ca.key (0600), s3.crt, s3.key (0600 db user),
                                        etcd.crt, etcd.key, etcd-client.crt, etcd-client.key
                                        (keys 0600 db user)
    clusters/<name>/etcd/{data,etcd.log}
    clusters/<name>/s3/{data/<bucket>,cache,rclone.log}
    clusters/<name>/units/<i>/{data,patroni.yml,pgbackrest.conf,pgpass,log/,sock/,tls/,
                               pgbackrest/{log,lock,spool}}
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters.files import write_atomically
from pgbackups.adapters.processes import OsUser
from pgbackups.local.errors import PgbackupsError, UsageError

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
DEFAULT_NAME = "main"  # the cluster a command means without --name
DEFAULT_ROOT_HOME = Path("/var/lib/pgbackups")


def pgbackups_home() -> Path:
    """``$PGBACKUPS_HOME``; else /var/lib/pgbackups for root, else the XDG state dir."""
    env = os.environ.get("PGBACKUPS_HOME")
    if env:
        return Path(env).absolute()
    if os.geteuid() == 0:
        return DEFAULT_ROOT_HOME
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "pgbackups"


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"bad cluster name {name!r}: use a lowercase letter, then up to 30 of "
            "[a-z0-9-] (e.g. main)"
        )
    return name


@dataclass(frozen=True)
class UnitPaths:
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def patroni_config(self) -> Path:
        return self.root / "patroni.yml"

    @property
    def pgbackrest_config(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def patroni_log(self) -> Path:
        """Patroni's and PostgreSQL's output (the spawned process's stdout/stderr)."""
        return self.log_dir / "patroni.log"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls_cert(self) -> Path:
        return self.tls_dir / "unit.crt"

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / "unit.key"

    @property
    def pgbackrest_dir(self) -> Path:
        return self.root / "pgbackrest"

    @property
    def pgbackrest_log(self) -> Path:
        return self.pgbackrest_dir / "log"

    @property
    def pgbackrest_lock(self) -> Path:
        return self.pgbackrest_dir / "lock"

    @property
    def pgbackrest_spool(self) -> Path:
        return self.pgbackrest_dir / "spool"


@dataclass(frozen=True)
class ClusterPaths:
    home: Path
    name: str

    @property
    def root(self) -> Path:
        return self.home / "clusters" / self.name

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".state.lock"

    @property
    def op_lock_file(self) -> Path:
        return self.root / ".op.lock"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def passwords_file(self) -> Path:
        return self.secrets_dir / "passwords.json"

    @property
    def s3_access_key_file(self) -> Path:
        return self.secrets_dir / "s3-access-key"

    @property
    def s3_secret_key_file(self) -> Path:
        return self.secrets_dir / "s3-secret-key"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def s3_cert(self) -> Path:
        return self.tls_dir / "s3.crt"

    @property
    def s3_key(self) -> Path:
        return self.tls_dir / "s3.key"

    @property
    def etcd_cert(self) -> Path:
        """etcd's certificate, on its client and peer ports."""
        return self.tls_dir / "etcd.crt"

    @property
    def etcd_key(self) -> Path:
        return self.tls_dir / "etcd.key"

    @property
    def etcd_client_cert(self) -> Path:
        """What etcd's clients (Patroni, patronictl, the CLI) present to it."""
        return self.tls_dir / "etcd-client.crt"

    @property
    def etcd_client_key(self) -> Path:
        return self.tls_dir / "etcd-client.key"

    @property
    def etcd_dir(self) -> Path:
        return self.root / "etcd"

    @property
    def etcd_data(self) -> Path:
        return self.etcd_dir / "data"

    @property
    def etcd_log(self) -> Path:
        return self.etcd_dir / "etcd.log"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def s3_data(self) -> Path:
        return self.s3_dir / "data"

    @property
    def s3_cache(self) -> Path:
        return self.s3_dir / "cache"

    @property
    def s3_log(self) -> Path:
        return self.s3_dir / "rclone.log"

    @property
    def units_dir(self) -> Path:
        return self.root / "units"

    def unit(self, index: int) -> UnitPaths:
        return UnitPaths(self.units_dir / str(index))


def clusters_dir(home: Path) -> Path:
    return home / "clusters"


def ensure_dir(path: Path, *, mode: int = 0o755, owner: OsUser | None = None) -> Path:
    """Create ``path`` (and parents, 0755) and set its mode and owner."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None and not owner.is_current:
        os.chown(path, owner.uid, owner.gid)
    return path


def write_file(path: Path, text: str, *, mode: int = 0o600, owner: OsUser | None = None) -> None:
    """Write atomically (a new temporary file, then rename); the mode and owner are set
    before any byte is written, and a link planted in a db-user folder is not followed."""
    write_atomically(text, path, owner, mode)


def check_traversable(path: Path, user: OsUser) -> None:
    """The database user must be able to enter every parent of ``path``."""
    if user.is_current:
        return
    current = path
    while True:
        if current.exists():
            st = current.stat()
            if st.st_uid == user.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == user.gid:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise PgbackupsError(
                    f"user {user.name} cannot enter {current} (mode {stat.S_IMODE(st.st_mode):o});"
                    " set PGBACKUPS_HOME to a directory it can traverse"
                )
        if current.parent == current:
            return
        current = current.parent
