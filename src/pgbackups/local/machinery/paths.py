"""Where a local cluster keeps its files, and how they are owned.

Layout under ``$PGBACKUPS_HOME`` (run as root: ``root`` owns what says nothing else, and
``db`` is the ``postgres`` user; run as anyone else, that user owns everything)::

    bin/rclone                        0755  copy of the S3 server binary (run by db)
    clusters/<name>/                  0755  state.json, peers.json (0600), locks
      secrets/                        0700  passwords.json, s3-access-key, s3-secret-key,
                                            s3-settings.json (0600): read by root only
      tls/                            0755  ca.crt, ca.key (0600), s3.crt, s3.key (0640 :db),
                                            etcd.crt, etcd-client.crt, etcd.key and
                                            etcd-client.key (0600 db: etcd and Patroni)
      etcd/                    db     0700  data/, etcd.log
      s3/                      db     0700  data/<bucket>, cache/, rclone.log
      units/<i>/                root:db 0750  patroni.yml, pgbackrest.conf (0640 :db),
                                            s3-ca-chain.pem (0644)
        tls/                  root:db 0750  unit.crt (0644), unit.key (0640 :db)
        postgresql/            db     0700  data/ (and data.before-restore-*), pgpass
        log/                   db     0700  patroni.log (Patroni's and PostgreSQL's output)
        sock/                  db     0700  PostgreSQL's socket
        pgbackrest/            db     0700  log/, lock/, spool/ (made by db itself)

Root writes only into its own directories; in a database user's directory it only makes
the directory itself (``ensure_dir``: no link followed, owner checked) and never a file
or anything deeper (docs/security.md, "Files and privileges").
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters import files
from pgbackups.adapters.processes import OsUser
from pgbackups.local.errors import PgbackupsError, UsageError

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
DEFAULT_NAME = "main"  # the cluster a command means without --name
DEFAULT_ROOT_HOME = Path("/var/lib/pgbackups")


def pgbackups_home() -> Path:
    """``$PGBACKUPS_HOME``; else /var/lib/pgbackups for root, else the XDG state dir.
    Checked by :func:`check_home` (a bad one is a :class:`UsageError`)."""
    env = os.environ.get("PGBACKUPS_HOME")
    if env:
        return check_home(Path(env), "PGBACKUPS_HOME")
    if os.geteuid() == 0:
        return check_home(DEFAULT_ROOT_HOME)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return check_home(Path(xdg) / "pgbackups")


def check_home(home: Path, what: str = "the pgbackups home") -> Path:
    """``home`` made absolute and free of links, once it is safe for root to use.

    Root writes secrets and configuration under the home and runs what is in it, so,
    as sshd does for its files, the home (when it exists) must be a root-owned directory
    no group or other user can write, and so must every existing directory above it
    (one others may write is accepted only with the sticky bit, like /tmp: nobody but
    root can then rename or remove root's entries in it). Nothing is created or changed
    here. As another user only ``home`` being absolute is checked.
    """
    if not home.is_absolute():
        raise UsageError(f"{what} must be an absolute path (got {str(home)!r})")
    # Used as resolved (the data directory is reached without following a link: see
    # workload.moveaside), and checked so: a link on the way is judged by where it leads.
    real = Path(os.path.realpath(home))
    if os.geteuid() != 0:
        return real
    for current in (real, *real.parents):
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue  # created later by root (0755), below the checked ancestors
        except OSError as exc:
            raise UsageError(f"{what} {home}: cannot check {current}: {exc.strerror}") from exc
        problem = _unsafe_for_root(st, is_home=current == real)
        if problem:
            where = "" if current == real else f" (at {current})"
            raise UsageError(
                f"{what} {home} is not safe for root{where}: {problem}; use a directory "
                "that root owns and only root can write, in such directories all the way up"
            )
    return real


def _unsafe_for_root(st: os.stat_result, *, is_home: bool) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if mode & 0o022 and (is_home or not mode & stat.S_ISVTX):
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
        return f"writable by {who} (mode {mode:o})"
    return None


def make_home(home: Path) -> None:
    """Create the checked home (and missing parents, 0755) if it does not exist, then
    check it again (someone may have raced us in a sticky /tmp); an existing directory's
    mode and owner are left as they are."""
    if home.is_dir():
        return
    # Below ancestors check_home found root's and written by no one else (or sticky).
    os.makedirs(home.parent, mode=0o755, exist_ok=True)
    created = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(home, 0o755)
        created = True
    check_home(home)
    if created:  # its mode was cut by the umask; the database user must enter it
        ensure_dir(home, mode=0o755)


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
    def postgres_dir(self) -> Path:
        """The database user's: the data directory's parent (Patroni renames the data
        directory there when a bootstrap fails) and Patroni's pgpass."""
        return self.root / "postgresql"

    @property
    def data_dir(self) -> Path:
        return self.postgres_dir / "data"

    @property
    def patroni_config(self) -> Path:
        return self.root / "patroni.yml"

    @property
    def pgbackrest_config(self) -> Path:
        return self.root / "pgbackrest.conf"

    @property
    def pgpass(self) -> Path:
        """Patroni writes it, as the database user."""
        return self.postgres_dir / "pgpass"

    @property
    def s3_ca_file(self) -> Path:
        return self.root / "s3-ca-chain.pem"

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
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    @property
    def agent_busy(self) -> Path:
        """Present while the agent runs an update-status pass (it holds the lock)."""
        return self.root / "agent.busy"

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
    """Create ``path`` (its parent must exist) and set its mode and owner, following no
    link (:func:`pgbackups.adapters.files.ensure_dir`); a link or a directory of another
    owner is refused."""
    try:
        return files.ensure_dir(path, mode, owner)
    except files.UnsafePath as exc:
        raise PgbackupsError(str(exc)) from exc


def make_dirs_as(user: OsUser, paths: Sequence[Path], mode: int = 0o700) -> None:
    """Create directories inside a directory of ``user`` as ``user`` itself: root never
    makes or changes anything deeper than one level in a database user's directory."""
    try:
        files.make_dirs_as(user, paths, mode)
    except files.UnsafePath as exc:
        raise PgbackupsError(str(exc)) from exc


def write_file(path: Path, text: str, *, mode: int = 0o600, owner: OsUser | None = None) -> None:
    """Write atomically (a new temporary file, then rename); the mode and owner are set
    before any byte is written, and a link planted in a db-user folder is not followed."""
    files.write_atomically(text, path, owner, mode)


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
