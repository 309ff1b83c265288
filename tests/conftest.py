"""Shared fixtures for tests that run real clusters (etcd, S3, Patroni/PostgreSQL).

- ``pgbackups_home``: a per-session ``$PGBACKUPS_HOME`` under /tmp that the ``postgres``
  user can traverse (pytest's own tmp dirs are 0700 for root). Never /var/lib/pgbackups.
- ``make_cluster`` (per test) / ``make_module_cluster`` (per module): factories that bring
  a cluster up through the Python API and always purge it at teardown.
- ``run_cli``: runs ``python -m pgbackups ...`` with that home; returns CompletedProcess.
- ``tmpfs``: mounts small tmpfs file systems (a disk that fills up for real) and always
  unmounts them at teardown, also when the test failed.
- Machines: as root (where namespaces work) every cluster the suite makes runs its units,
  S3 and etcd as machines (``PGBACKUPS_MACHINES=1``, which the CLI subprocesses inherit);
  a module or test marked ``loopback`` makes its clusters on 127.0.0.1 instead (the
  loopback smoke). ``PGBACKUPS_TEST_MACHINES=0`` runs the whole suite on loopback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgbackups.adapters import processes
from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery import netns
from pgbackups.local.runtime.cluster import MACHINES_ENV, Cluster, down, up

CliRunner = Callable[..., "subprocess.CompletedProcess[str]"]

ClusterMaker = Callable[..., Cluster]


def _machines_wanted() -> bool:
    return os.environ.get("PGBACKUPS_TEST_MACHINES", "1") != "0" and netns.available() is None


@contextlib.contextmanager
def _machines_env(on: bool) -> Iterator[None]:
    old = os.environ.get(MACHINES_ENV)
    os.environ[MACHINES_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MACHINES_ENV, None)
        else:
            os.environ[MACHINES_ENV] = old


@pytest.fixture(scope="module", autouse=True)
def _module_machines(request: pytest.FixtureRequest) -> Iterator[None]:
    """Module-scoped clusters are made before any test's own fixture runs: the module's
    mark decides for them."""
    loopback = any(m.name == "loopback" for m in request.node.iter_markers())
    with _machines_env(_machines_wanted() and not loopback):
        yield


@pytest.fixture(autouse=True)
def _test_machines(request: pytest.FixtureRequest) -> Iterator[None]:
    loopback = request.node.get_closest_marker("loopback") is not None
    with _machines_env(_machines_wanted() and not loopback):
        yield


@pytest.fixture(scope="session")
def pgbackups_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="pgbackups-test-", dir="/tmp"))
    home.chmod(0o755)  # the database user must enter it
    old = os.environ.get("PGBACKUPS_HOME")
    os.environ["PGBACKUPS_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("PGBACKUPS_HOME", None)
        else:
            os.environ["PGBACKUPS_HOME"] = old
        shutil.rmtree(home, ignore_errors=True)


def _kill_leftovers(cluster: Cluster) -> None:
    """Last resort after a failed purge: stop every recorded process that is still ours."""
    try:
        state = cluster.state()
    except PgbackupsError:
        return
    records = [u.process for u in state.units.values()] + list(state.processes.values())
    for rec in records:
        if rec is not None and rec.is_ours():
            processes.stop(rec.pid, timeout=30)


class ClusterFactory:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.clusters: list[Cluster] = []

    def __call__(self, name: str = "main", *, units: int = 1, tls: bool = False) -> Cluster:
        cluster = Cluster(name, self.home)
        self.clusters.append(cluster)
        return up(name, units=units, tls=tls, home=self.home)

    def teardown(self) -> None:
        for cluster in reversed(self.clusters):
            if not cluster.exists():
                continue
            try:
                down(cluster.name, purge=True, home=self.home)
            except (PgbackupsError, OSError):
                _kill_leftovers(cluster)
                shutil.rmtree(cluster.paths.root, ignore_errors=True)


@pytest.fixture
def make_cluster(pgbackups_home: Path) -> Iterator[ClusterMaker]:
    factory = ClusterFactory(pgbackups_home)
    try:
        yield factory
    finally:
        factory.teardown()


@pytest.fixture(scope="module")
def make_module_cluster(pgbackups_home: Path) -> Iterator[ClusterMaker]:
    factory = ClusterFactory(pgbackups_home)
    try:
        yield factory
    finally:
        factory.teardown()


@pytest.fixture(scope="session")
def run_cli(pgbackups_home: Path) -> CliRunner:
    def run(
        *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ, PGBACKUPS_HOME=str(pgbackups_home))
        if env:
            full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "pgbackups", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )

    return run


class Tmpfs:
    """Small tmpfs mounts for one test: a real file system that really fills up."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def mount(self, path: Path, size: str, *, mode: int = 0o755) -> Path:
        """Mount a tmpfs of ``size`` (``256k``, ``64m``) at ``path`` (created if missing)."""
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size},mode={mode:o}"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, timeout=30
        )
        self.mounted.append(path)
        return path

    def resize(self, path: Path, size: str) -> None:
        """Make room the way an administrator would: grow the file system in place."""
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, timeout=30)

    @staticmethod
    def fill(directory: Path, name: str = "filler", *, leave: int = 0) -> Path:
        """Write a file in ``directory`` until the disk is full (then give back ``leave``
        bytes); returns it. Deleting it makes room again."""
        filler = directory / name
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for size in (1 << 20, 65536, 4096, 512, 1):  # to the last byte: nothing left
                block = b"\0" * size
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        if leave:
            os.truncate(filler, max(0, filler.stat().st_size - leave))
        return filler

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            # Lazy: a server a failed test left running must not keep the mount forever.
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=60)
        self.mounted.clear()


@pytest.fixture
def tmpfs() -> Iterator[Tmpfs]:
    mounts = Tmpfs()
    try:
        yield mounts
    finally:
        mounts.unmount_all()
