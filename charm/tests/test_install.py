"""The install hook on a fresh machine, with the charm's real factories: only what runs a
program (the charm's ``runner``) is a stand-in, and the OS user ``postgres`` exists only
once ``apt-get install`` ran, as on a fresh Ubuntu machine. The unit's folders are made
for real, in a temporary directory."""

from __future__ import annotations

import dataclasses
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ops import testing

import workload
from charm import AWAITING_MEMBER, PgBackupsCharm, machine_adapters
from pgbackups.core.host import CommandResult
from workload import MachinePaths, apt_packages

VERSION = "16.9-0ubuntu0.24.04.1"
LOCK_HELD = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 812"
REAL_GETPWNAM = pwd.getpwnam


@dataclass
class FreshMachine:
    """Records the commands the charm runs; ``apt-get install`` "creates" ``postgres``
    (as root's entry: the folders made for it stay this test's to remove)."""

    failed_installs: int = 0  # how many apt-get installs fail on the dpkg lock first
    commands: list[tuple[str, ...]] = field(default_factory=list)
    packages_installed: bool = False

    def run(self, args: Any, **_: Any) -> CommandResult:
        argv = tuple(str(a) for a in args)
        self.commands.append(argv)
        if argv[0] == "apt-get" and "install" in argv:
            if self.failed_installs:
                self.failed_installs -= 1
                return CommandResult(argv, 100, "", LOCK_HELD)
            self.packages_installed = True
        if argv[0] == "dpkg-query":
            return CommandResult(argv, 0, VERSION, "")
        return CommandResult(argv, 0, "", "")

    def getpwnam(self, name: str) -> pwd.struct_passwd:
        if name == "postgres":
            if not self.packages_installed:
                raise KeyError(f"getpwnam(): name not found: '{name}'")
            return REAL_GETPWNAM("root")
        return REAL_GETPWNAM(name)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FreshMachine:
    fresh = FreshMachine()
    paths = MachinePaths(
        state_dir=str(tmp_path / "state"),
        etc_dir=str(tmp_path / "etc"),
        log_dir=str(tmp_path / "log"),
        systemd_dir=str(tmp_path / "systemd"),
        socket_dir=str(tmp_path / "run"),
    )
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(PgBackupsCharm, "machine_paths", paths)
    monkeypatch.setattr(PgBackupsCharm, "runner", fresh.run)
    monkeypatch.setattr(pwd, "getpwnam", fresh.getpwnam)
    return fresh


def apt_runs(machine: FreshMachine) -> list[tuple[str, ...]]:
    return [c for c in machine.commands if c[0] == "apt-get"]


def test_install_on_a_fresh_machine_looks_up_postgres_only_after_apt(
    machine: FreshMachine, tmp_path: Path
) -> None:
    # The real factories: the installer, the TLS files (built with the charm).
    assert PgBackupsCharm.adapters_factory is machine_adapters
    c = testing.Context(PgBackupsCharm)
    out = c.run(c.on.install(), testing.State())
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    assert out.workload_version == VERSION
    for run in apt_runs(machine):  # both wait for the dpkg lock
        assert run[1:3] == ("-o", "DPkg::Lock::Timeout=600"), run
    assert [r[3] for r in apt_runs(machine)] == ["update", "install"]
    packages = apt_packages(PgBackupsCharm.machine_paths.pg_version)
    assert ("apt-mark", "hold", *packages) in machine.commands
    assert (tmp_path / "state" / "raft").is_dir()
    assert list((tmp_path / "systemd").iterdir())


def test_a_held_dpkg_lock_fails_the_hook_and_the_retry_installs(machine: FreshMachine) -> None:
    machine.failed_installs = 1
    c = testing.Context(PgBackupsCharm)
    with pytest.raises(testing.errors.UncaughtCharmError, match="Juju retries"):
        c.run(c.on.install(), testing.State())
    c2 = testing.Context(PgBackupsCharm)
    out = c2.run(c2.on.install(), testing.State())
    assert out.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    assert [r[3] for r in apt_runs(machine)] == ["update", "install", "update", "install"]


OS_RELEASES = {
    "ubuntu-24.04": 'NAME="Ubuntu"\nID=ubuntu\nVERSION_ID="24.04"\n',
    "ubuntu-22.04": 'ID=ubuntu\nVERSION_ID="22.04"\n',
    "debian-12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "centos-9": 'PRETTY_NAME="CentOS Stream 9"\nID="centos"\nVERSION_ID="9"\n',
}


@pytest.mark.parametrize(
    ("system", "version"),
    [("ubuntu-24.04", "16"), ("ubuntu-22.04", "14"), ("debian-12", "15"), ("centos-9", "")],
)
def test_the_postgresql_version_is_the_one_the_system_ships(
    tmp_path: Path, system: str, version: str
) -> None:
    release = tmp_path / "os-release"
    release.write_text(OS_RELEASES[system])
    fields = workload.read_os_release(str(release))
    assert workload.postgresql_version(fields) == version
    if version:
        assert workload.unsupported_system(fields) is None
        assert apt_packages(version)[:2] == (
            f"postgresql-{version}",
            f"postgresql-client-{version}",
        )


def test_an_unknown_system_blocks_the_install_and_installs_nothing(
    machine: FreshMachine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    release = tmp_path / "os-release"
    release.write_text(OS_RELEASES["centos-9"])
    monkeypatch.setattr(workload, "OS_RELEASE", str(release))
    monkeypatch.setattr(
        PgBackupsCharm,
        "machine_paths",
        dataclasses.replace(PgBackupsCharm.machine_paths, pg_version=""),
    )
    c = testing.Context(PgBackupsCharm)
    out = c.run(c.on.install(), testing.State())
    assert out.unit_status == testing.BlockedStatus(
        "unsupported system CentOS Stream 9 (supported: ubuntu 24.04, ubuntu 22.04, debian 12)"
    )
    assert machine.commands == []
    # start does not try to run a PostgreSQL that was never installed
    peers = testing.PeerRelation("database-peers")
    out = c.run(c.on.start(), testing.State(relations={peers}, unit_status=out.unit_status))
    assert machine.commands == []
    assert out.unit_status == testing.BlockedStatus(
        "unsupported system CentOS Stream 9 (supported: ubuntu 24.04, ubuntu 22.04, debian 12)"
    )
