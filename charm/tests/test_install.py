"""The install and start hooks on a fresh machine, with the charm's real factories: only
what runs a program (the charm's ``runner``: apt, dpkg, systemctl) is a stand-in, and the
OS user ``postgres`` exists only once ``apt-get install`` ran, as on a fresh Ubuntu
machine. The unit's folders and configuration files are written for real, in a
temporary directory; a crash while building the adapters fails these tests."""

from __future__ import annotations

import dataclasses
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops import testing

import workload
from charm import (
    AWAITING_MEMBER,
    PASSWORD_KEYS,
    SECRET_ID_KEY,
    WAITING_FOR_PASSWORDS,
    PgBackupsCharm,
    machine_adapters,
)
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


# --- start, with the same real factories ----------------------------------------------

ADDRESS = "127.0.0.93"  # nothing listens there: Patroni's REST answers "refused" at once
PATRONI_UNIT = "pgbackups-patroni.service"
RAFT_UNIT = "pgbackups-raft.service"


@dataclass
class BootingMachine(FreshMachine):
    """Also systemd: a unit is active once ``systemctl enable --now`` started it."""

    active: set[str] = field(default_factory=set)

    def run(self, args: Any, **kwargs: Any) -> CommandResult:
        argv = tuple(str(a) for a in args)
        if argv[:1] == ("systemctl",) and len(argv) > 1:
            self.commands.append(argv)
            if argv[1:3] == ("enable", "--now"):
                self.active.add(argv[3])
            elif argv[1:3] == ("disable", "--now"):
                self.active.discard(argv[3])
            elif argv[1] == "is-active":
                return CommandResult(argv, 0 if argv[-1] in self.active else 3, "", "")
            return CommandResult(argv, 0, "", "")
        return super().run(args, **kwargs)


@pytest.fixture
def booting(machine: FreshMachine, monkeypatch: pytest.MonkeyPatch) -> BootingMachine:
    fresh = BootingMachine()
    monkeypatch.setattr(PgBackupsCharm, "runner", fresh.run)
    # Nothing runs behind the recorded systemctl: start's wait for Patroni ends at once.
    monkeypatch.setattr(PgBackupsCharm, "member_wait_seconds", 0.0)
    monkeypatch.setattr(pwd, "getpwnam", fresh.getpwnam)
    return fresh


def fresh_unit(*, leader: bool, app_data: dict[str, str] | None = None) -> testing.State:
    return testing.State(
        leader=leader,
        relations=[testing.PeerRelation("database-peers", local_app_data=app_data or {})],
        networks={
            testing.Network(
                "database-peers",
                bind_addresses=[testing.BindAddress([testing.Address(ADDRESS)])],
                ingress_addresses=[ADDRESS],
                egress_subnets=[f"{ADDRESS}/32"],
            )
        },
    )


def test_install_then_start_on_the_leader_bootstraps_patroni(
    booting: BootingMachine, tmp_path: Path
) -> None:
    # Every adapter is the charm's own (the workload, pgBackRest, the TLS files, the
    # application's CA made by openssl); only what runs a program is recorded.
    assert PgBackupsCharm.adapters_factory is machine_adapters
    c = testing.Context(PgBackupsCharm)
    out = c.run(c.on.install(), fresh_unit(leader=True))
    c2 = testing.Context(PgBackupsCharm)
    out2 = c2.run(c2.on.start(), out)
    assert out2.unit_status == testing.WaitingStatus(AWAITING_MEMBER)
    assert out2.deferred == []
    enable = ("systemctl", "enable", "--now", PATRONI_UNIT)
    assert enable in booting.commands
    install = next(
        i for i, c in enumerate(booting.commands) if c[:2] == ("apt-get", "-o") and "install" in c
    )
    assert install < booting.commands.index(enable)
    # Its Raft member first (Patroni is its client), both enabled for the next boot.
    raft_start = ("systemctl", "enable", "--now", RAFT_UNIT)
    assert raft_start in booting.commands
    assert booting.commands.index(raft_start) < booting.commands.index(enable)
    assert booting.active == {RAFT_UNIT, PATRONI_UNIT}
    unit_file = (tmp_path / "systemd" / RAFT_UNIT).read_text()
    raft_yaml = tmp_path / "etc" / "raft.yaml"
    assert f"ExecStart=/usr/bin/patroni_raft_controller {raft_yaml}" in unit_file
    # The leader bootstraps alone: its member has no partner yet, on its own address;
    # Patroni reaches it as a client (no self_addr: in no quorum; no bind_addr).
    member = yaml.safe_load(raft_yaml.read_text())["raft"]
    assert member["self_addr"] == member["bind_addr"] == f"{ADDRESS}:2222"
    assert member["partner_addrs"] == []
    assert member["data_dir"] == str(tmp_path / "state" / "raft")
    assert stat.S_IMODE(raft_yaml.stat().st_mode) == 0o640  # it holds the Raft password
    config = yaml.safe_load((tmp_path / "etc" / "patroni.yaml").read_text())
    assert config["raft"] == {
        "partner_addrs": [f"{ADDRESS}:2222"],
        "password": member["password"],
    }
    assert any(ADDRESS in rule for rule in config["postgresql"]["pg_hba"])
    # The passwords and the pgBackRest CA are in the application's secret, not the bag.
    peers: dict[str, str] = dict(out2.get_relations("database-peers")[0].local_app_data)
    assert peers[SECRET_ID_KEY] in {s.id for s in out2.secrets}
    assert not set(PASSWORD_KEYS) & set(peers)


def test_start_on_a_non_leader_before_the_cluster_waits_and_starts_nothing(
    booting: BootingMachine,
) -> None:
    c = testing.Context(PgBackupsCharm)
    out = c.run(c.on.install(), fresh_unit(leader=False))
    c2 = testing.Context(PgBackupsCharm)
    out2 = c2.run(c2.on.start(), out)
    assert out2.unit_status == testing.WaitingStatus(WAITING_FOR_PASSWORDS)
    assert len(out2.deferred) == 1
    assert not [c for c in booting.commands if c[:3] == ("systemctl", "enable", "--now")]


def test_the_stop_hook_stops_patroni_then_its_raft_member(
    booting: BootingMachine,
) -> None:
    c = testing.Context(PgBackupsCharm)
    out = c.run(c.on.install(), fresh_unit(leader=True))
    out = testing.Context(PgBackupsCharm).run(c.on.start(), out)
    started = len(booting.commands)
    testing.Context(PgBackupsCharm).run(c.on.stop(), out)
    stops = [cmd for cmd in booting.commands[started:] if cmd[1:3] == ("disable", "--now")]
    # Patroni first (nothing of this unit acts in the cluster), then its member (a
    # removed member still running would call elections); the last unit has no partner
    # to leave the Raft group through.
    assert stops == [
        ("systemctl", "disable", "--now", PATRONI_UNIT),
        ("systemctl", "disable", "--now", RAFT_UNIT),
    ]
    assert booting.active == set()


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
