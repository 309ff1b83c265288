"""Shared fixtures for tests that run real clusters (etcd, S3, Patroni/PostgreSQL).

- ``pgbackups_home``: a per-session ``$PGBACKUPS_HOME`` under /tmp that the ``postgres``
  user can traverse (pytest's own tmp dirs are 0700 for root). Never /var/lib/pgbackups.
- ``make_cluster`` (per test) / ``make_module_cluster`` (per module): factories that bring
  a cluster up through the Python API and always purge it at teardown.
- ``run_cli``: runs ``python -m pgbackups ...`` with that home; returns CompletedProcess.
"""

from __future__ import annotations

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
from pgbackups.local.runtime.cluster import Cluster, down, up

CliRunner = Callable[..., "subprocess.CompletedProcess[str]"]

ClusterMaker = Callable[..., Cluster]


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
