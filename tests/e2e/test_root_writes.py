"""Root never writes, chmods, chowns or reads for the user through a link the database user
planted (docs/security.md, "Files and privileges").

As ``postgres`` (through ``processes.run(..., user=db)``, no seteuid), links are planted at
every name root has ever written, made or read in the cluster's folders, pointing at
root's canary files and folder; then every root path runs: ``up`` (daemon logs, the
unit's folders), ``s3 set`` (configuration), ``create-backup``, ``tls enable``
(certificates), a restore (the data directory moved aside and removed), ``add-unit``,
``logs`` and ``down --purge``. A plant the database user may not make (a name in one of
root's folders) is itself the fix; the canaries' content, owner and mode and the canary
folder's listing must be untouched after each step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters import processes
from pgbackups.local.runtime.cluster import Cluster

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(os.geteuid() != 0, reason="root acting for the postgres user"),
]

NAME = "links"
Cli = Callable[..., "subprocess.CompletedProcess[str]"]
SECRET = "CANARY-ROOT-ONLY"


@dataclass(frozen=True)
class Canaries:
    """Root's files a link may point at: a file, a ``.log`` file, and a folder."""

    base: Path

    @property
    def file(self) -> Path:
        return self.base / "canary.txt"

    @property
    def log(self) -> Path:
        return self.base / "canary.log"

    @property
    def folder(self) -> Path:
        return self.base / "canary-dir"

    def snapshot(self) -> dict[str, tuple[str | None, int, int, int]]:
        """Every name under the base: (content, uid, gid, mode)."""
        seen: dict[str, tuple[str | None, int, int, int]] = {}
        for path in [self.base, *sorted(self.base.rglob("*"))]:
            st = path.lstat()
            text = path.read_text() if path.is_file() else None
            seen[str(path.relative_to(self.base))] = (text, st.st_uid, st.st_gid, st.st_mode)
        return seen


@pytest.fixture(scope="module")
def canaries() -> Iterator[Canaries]:
    base = Path(tempfile.mkdtemp(prefix="pgbackups-canary-", dir="/tmp"))
    base.chmod(0o755)  # postgres may see the names (links point here), not write
    found = Canaries(base)
    found.file.write_text(f"{SECRET} file\n")
    found.file.chmod(0o600)
    found.log.write_text(f"{SECRET} log line\n")
    found.log.chmod(0o600)
    found.folder.mkdir(mode=0o755)
    (found.folder / "inner.log").write_text(f"{SECRET} inner log line\n")
    yield found
    shutil.rmtree(base)


AWAY = ".planted-away"


def plant(link: Path, target: Path) -> bool:
    """As the database user: put a symbolic link to ``target`` at ``link`` (a folder
    there is moved aside whole, a file removed). False when that user may not: the name
    is in one of root's folders."""
    script = (
        'if [ -d "$1" ] && [ ! -L "$1" ]; then mv -- "$1" "$1$3" || exit 1; '
        'else rm -f -- "$1" || exit 1; fi; ln -s -- "$2" "$1"'
    )
    result = processes.run(
        ["sh", "-c", script, "plant", str(link), str(target), AWAY], user=processes.db_user()
    )
    return result.ok


def unplant(link: Path) -> None:
    """As the database user: take a planted link away, and put back what it replaced."""
    if link.is_symlink():
        script = 'rm -f -- "$1" && if [ -e "$1$2" ]; then mv -- "$1$2" "$1"; fi'
        result = processes.run(
            ["sh", "-c", script, "unplant", str(link), AWAY], user=processes.db_user()
        )
        assert result.ok, result.stderr


class Scenario:
    def __init__(self, cli: Cli, home: Path, canaries: Canaries) -> None:
        self.cli, self.home, self.canaries = cli, home, canaries
        self.before = canaries.snapshot()
        self.planted: list[str] = []

    @property
    def root(self) -> Path:
        return self.home / "clusters" / NAME

    def unit(self, index: int) -> Path:
        return self.root / "units" / str(index)

    def plant(self, relative: str, target: Path) -> None:
        if plant(self.root / relative, target):
            self.planted.append(relative)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        words = 2 if args[0] in ("s3", "tls") else 1
        return self.cli(*args[:words], "--name", NAME, *args[words:], timeout=timeout)

    def check(self, step: str) -> None:
        assert self.canaries.snapshot() == self.before, (
            f"after {step}, root's canaries changed through a link at one of {self.planted}"
        )


@pytest.fixture(scope="module")
def scenario(
    run_cli: Cli, make_module_cluster: Any, pgbackups_home: Path, canaries: Canaries
) -> Iterator[Scenario]:
    # Registered with the shared factory, so that teardown stops every recorded PID.
    make_module_cluster.clusters.append(Cluster(NAME, pgbackups_home))
    yield Scenario(run_cli, pgbackups_home, canaries)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_links_planted_by_the_database_user_are_never_followed_by_root(
    scenario: Scenario, canaries: Canaries
) -> None:
    s = scenario
    ok(s.run("up", "--units", "1", timeout=300))
    s.check("up")

    # Configuration, certificates, the CA chain: root's names (the old layout had them in
    # the unit's folder, which was the database user's).
    for name in ("patroni.yml", "pgbackrest.conf", "s3-ca-chain.pem", "pgbackrest/s3-ca-chain.pem"):
        s.plant(f"units/0/{name}", canaries.file)
    s.plant("units/0/tls", canaries.folder)
    s.plant("secrets/s3-settings.json", canaries.file)
    ok(s.run("s3", "set"))
    s.check("s3 set (apply config)")
    backup = json.loads(ok(s.run("run", "0", "create-backup", "type=full", "--json")))
    s.check("create-backup")
    ok(s.run("tls", "enable"))
    s.check("tls enable")

    # A restore moves the data directory aside and removes it once the cluster is back.
    listing = json.loads(ok(s.run("run", "0", "list-backups", "format=json", "--json")))
    backup_id = next(
        r["backup-id"] for r in listing["results"]["backups"] if r["action"] == "full backup"
    )
    assert backup["status"] == "completed"
    ok(s.run("run", "0", "restore", f"backup-id={backup_id}", "--wait", "--timeout", "180"))
    s.check("restore")

    # Daemons' logs and the folders root makes for the database user: one at a time, as
    # each makes `up` stop early (the daemon cannot open a log that leads to root's file).
    ok(s.run("down"))
    for daemon_links in (
        {"etcd/etcd.log": canaries.file},
        {"s3/rclone.log": canaries.file, "s3/cache": canaries.folder},
        {
            "units/0/log/patroni.log": canaries.file,
            "units/0/pgbackrest/log": canaries.folder,
            "units/0/pgbackrest/lock": canaries.folder,
            "units/0/pgbackrest/spool": canaries.folder,
            "units/0/log": canaries.folder,
            "units/0/postgresql": canaries.folder,
        },
    ):
        for name, target in daemon_links.items():
            s.plant(name, target)
        s.run("up", timeout=300)  # fails or not: the canaries are what matters
        s.check(f"up with links at {sorted(daemon_links)}")
        s.run("down")
        for name in daemon_links:
            unplant(s.root / name)
    ok(s.run("up", timeout=300))
    s.check("up again")
    ok(s.run("add-unit"))
    s.check("add-unit")

    # `logs` reads the database user's files: a link to root's never shows root's text.
    s.plant("units/0/pgbackrest/log/evil.log", canaries.log)
    s.plant("units/1/log/patroni.log", canaries.log)
    s.plant("units/1/pgbackrest/log", canaries.folder)
    shown = ok(s.run("logs", "--lines", "5"))
    assert SECRET not in shown
    assert "patroni+postgresql" in shown  # the real logs are still shown
    s.check("logs")

    ok(s.run("down", "--purge"))
    s.check("down --purge")
    assert not s.root.exists()
    # The database user could plant in its own folders, not in root's.
    assert "units/0/log/patroni.log" in s.planted
    assert not any(p.startswith("units/0/tls") or p.endswith(".yml") for p in s.planted)
