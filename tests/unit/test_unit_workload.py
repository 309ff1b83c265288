"""The shared workload's own decisions: what it renders from a unit's facts, and how it
drives its services (a recording ServiceRunner; Patroni itself is met in tests/e2e)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackups.adapters import processes
from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.adapters.pgbackrest import PgBackRestFeatures, render_config
from pgbackups.core.host import Recovery, TlsMaterial, WorkloadConfig, WorkloadError
from pgbackups.core.settings import S3Settings
from pgbackups.workload import moveaside
from pgbackups.workload.dcs import with_dcs
from pgbackups.workload.layout import PeerLayout, UnitFacts, UnitLayout
from pgbackups.workload.services import Service
from pgbackups.workload.workload import (
    UnitWorkload,
    patroni_yaml,
    pgbackrest_config,
    postmaster_argv,
)

TLS = TlsMaterial("/tls/ca.crt", "/tls/unit.crt", "/tls/unit.key")
BACKUP_TLS = TlsMaterial("/pgbr-tls/ca.crt", "/pgbr-tls/unit.crt", "/pgbr-tls/unit.key")
SETTINGS = S3Settings(bucket="backups", access_key="AK", secret_key="SK", path="/pg")
PASSWORDS = PatroniPasswords("su", "repl", "rew", "rest")


def layout(root: str = "/u/0", **changes: Any) -> UnitLayout:
    base = UnitLayout(
        unit="main/0",
        scope="main",
        member="main-0",
        stanza="local.main",
        address="127.0.0.1",
        data_dir=f"{root}/data",
        socket_dir=f"{root}/sock",
        bin_dir="/usr/lib/postgresql/15/bin",
        patroni_config=f"{root}/patroni.yml",
        pgbackrest_config=f"{root}/pgbackrest.conf",
        pgpass=f"{root}/pgpass",
        s3_ca_file=f"{root}/s3-ca.pem",
        pgbackrest_log_dir=f"{root}/pgbackrest/log",
        pgbackrest_lock_dir=f"{root}/pgbackrest/lock",
        pgbackrest_spool_dir=f"{root}/pgbackrest/spool",
        patroni_log_dir=None,
        pg_port=5432,
        rest_port=8008,
        tls_server_listen="127.0.0.1",
        tls_server_host="localhost",
        tls_server_port=8432,
    )
    return replace(base, **changes)


def peer(i: int) -> PeerLayout:
    return PeerLayout(
        member=f"main-{i}",
        cert_name=f"main-{i}",
        address="127.0.0.1",
        tls_server_host="localhost",
        tls_server_port=8432 + i,
        data_dir=f"/u/{i}/data",
        pg_port=5432 + i,
        socket_dir=f"/u/{i}/sock",
    )


def facts(*, tls: bool = True, peers: int = 2, **changes: Any) -> UnitFacts:
    return UnitFacts(
        layout=layout(**changes),
        peers=tuple(peer(i) for i in range(1, peers + 1)),
        tls=TLS if tls else None,
        passwords=PASSWORDS,
        backup_tls=BACKUP_TLS if tls else None,
    )


def conf(f: UnitFacts, **config: Any) -> str:
    wanted = WorkloadConfig(**{"s3": SETTINGS, "stanza": "local.main", **config})
    return render_config(pgbackrest_config(f, wanted, ca_file=None, features=PgBackRestFeatures()))


# --- rendering --------------------------------------------------------------------------


def test_pgbackrest_with_tls_servers_reaches_peers_through_theirs() -> None:
    text = conf(facts(), tls_server=True)
    assert "tls-server-address=127.0.0.1" in text and "tls-server-port=8432" in text
    assert "pg2-host=localhost" in text and "pg2-host-port=8433" in text
    assert "pg3-path=/u/2/data" in text
    assert "tls-server-auth=main-1=local.main" in text
    assert "tls-server-auth=main-2=local.main" in text


def test_pgbackrest_tls_servers_trust_the_backup_ca_only_never_the_providers() -> None:
    text = conf(facts(), tls_server=True)
    for option in ("tls-server", "pg2-host", "pg3-host"):
        assert f"{option}-ca-file=/pgbr-tls/ca.crt" in text
        assert f"{option}-cert-file=/pgbr-tls/unit.crt" in text
        assert f"{option}-key-file=/pgbr-tls/unit.key" in text
    assert "/tls/" not in text
    assert [line for line in text.splitlines() if "-auth=" in line] == [
        "tls-server-auth=main-1=local.main",
        "tls-server-auth=main-2=local.main",
    ]


def test_pgbackrest_without_tls_reaches_peers_on_this_machine_directly() -> None:
    text = conf(facts(peers_share_machine=True), tls_server=False)
    assert "pg2-path=/u/1/data" in text and "pg2-host" not in text
    assert "tls-server" not in text


def test_pgbackrest_without_tls_has_no_peers_on_other_machines() -> None:
    text = conf(facts(peers_share_machine=False), tls_server=False)
    assert "pg2-" not in text and "tls-server" not in text


def test_pgbackrest_tls_wanted_but_no_certificate_renders_no_server() -> None:
    text = conf(facts(tls=False), tls_server=True)
    assert "tls-server" not in text and "pg2-host" not in text


@dataclass
class SectionDcs:
    section: Mapping[str, Any]
    forgotten: list[str] = field(default_factory=list)

    def patroni_section(self, facts: UnitFacts) -> Mapping[str, Any]:
        return self.section

    def forget_member(self, facts: UnitFacts, address: str) -> None:
        self.forgotten.append(address)

    def remove_cluster(self, facts: UnitFacts) -> bool:
        return False  # as the charm's Raft: patronictl removes the keys


def test_patroni_yaml_carries_the_hosts_dcs_in_place_of_etcd3() -> None:
    dcs = SectionDcs({"raft": {"self_addr": "10.0.0.1:2222"}})
    rendered = yaml.safe_load(patroni_yaml(facts(), dcs, WorkloadConfig(None, None, False)))
    assert "etcd3" not in rendered and rendered["raft"] == {"self_addr": "10.0.0.1:2222"}
    keys = list(rendered)
    assert keys.index("restapi") < keys.index("raft") < keys.index("bootstrap")
    assert rendered["postgresql"]["data_dir"] == "/u/0/data"
    assert rendered["restapi"]["listen"] == "127.0.0.1:8008"


def test_with_dcs_replaces_every_dcs_key_once() -> None:
    out = with_dcs({"a": 1, "etcd": {}, "etcd3": {}, "b": 2}, {"raft": {}})
    assert list(out) == ["a", "raft", "b"]
    assert with_dcs({"a": 1}, {"etcd3": {"hosts": []}}) == {"a": 1, "etcd3": {"hosts": []}}


def test_patroni_yaml_needs_the_passwords() -> None:
    f = replace(facts(), passwords=None)
    with pytest.raises(WorkloadError, match="passwords"):
        patroni_yaml(f, SectionDcs({}), WorkloadConfig(None, None, False))


# --- services ----------------------------------------------------------------------------


@dataclass
class RecordingServices:
    running: set[Service] = field(default_factory=set)
    failed: set[Service] = field(default_factory=set)
    stuck: bool = False  # stop leaves it running / start does not make it run
    calls: list[str] = field(default_factory=list)

    def start(self, service: Service) -> None:
        self.calls.append(f"start {service}")
        if not self.stuck:
            self.running.add(service)

    def stop(self, service: Service) -> None:
        self.calls.append(f"stop {service}")
        if not self.stuck:
            self.running.discard(service)

    def restart(self, service: Service) -> None:
        self.calls.append(f"restart {service}")

    def start_recovery(self, argv: Sequence[str], log_file: str) -> None:
        self.calls.append(f"start_recovery {' '.join(argv)} > {log_file}")
        if not self.stuck:
            self.running.add(Service.RECOVERY)

    def is_running(self, service: Service) -> bool:
        return service in self.running

    def has_failed(self, service: Service) -> bool:
        return service in self.failed


def workload(services: RecordingServices, f: UnitFacts | None = None) -> UnitWorkload:
    the_facts = f or facts()
    return UnitWorkload(
        lambda: the_facts,
        services,
        SectionDcs({}),
        db_user=processes.current_user(),
        cluster_initialised=lambda: True,
    )


def test_start_and_stop_the_database() -> None:
    services = RecordingServices()
    w = workload(services)
    w.start_database()
    assert services.running == {Service.PATRONI}
    w.stop_database()
    assert services.running == set()
    assert services.calls == ["start patroni", "stop patroni"]


def test_a_database_that_does_not_start_or_stop_is_an_error() -> None:
    services = RecordingServices(stuck=True)
    w = workload(services)
    with pytest.raises(WorkloadError, match="does not run after its start"):
        w.start_database()
    services.running.add(Service.PATRONI)
    with pytest.raises(WorkloadError, match="still runs after its stop"):
        w.stop_database()


def test_the_tls_server_needs_a_certificate() -> None:
    services = RecordingServices()
    w = workload(services, facts(tls=False))
    with pytest.raises(WorkloadError, match="no certificate"):
        w.start_tls_server()
    assert services.calls == []
    w.stop_tls_server()
    assert services.calls == ["stop pgbackrest-server"]


def test_a_patroni_that_exited_is_a_failed_bootstrap() -> None:
    services = RecordingServices(failed={Service.PATRONI})
    assert workload(services).bootstrap_failed() is True


def test_the_hosts_memory_answers_cluster_initialised() -> None:
    assert workload(RecordingServices()).is_cluster_initialised() is True


def test_departed_members_go_through_the_dcs() -> None:
    dcs = SectionDcs({})
    f = facts()
    w = UnitWorkload(lambda: f, RecordingServices(), dcs, db_user=processes.current_user())
    w.forget_dcs_member("10.0.0.9")
    assert dcs.forgotten == ["10.0.0.9"]


def test_data_moves_through_the_layouts_data_dir(tmp_path: Path) -> None:
    f = facts(root=str(tmp_path))
    (tmp_path / "data").mkdir()
    w = workload(RecordingServices(), f)
    moved = w.move_data_aside()
    assert moved is not None and Path(moved).parent == tmp_path
    w.move_data_back(moved)
    assert (tmp_path / "data").is_dir()
    with pytest.raises(WorkloadError):
        w.remove_moved_data(str(tmp_path / "data"))


def test_moved_data_is_removed_by_a_process_of_its_own_and_only_that(tmp_path: Path) -> None:
    f = facts(root=str(tmp_path))
    Path(f.layout.pgbackrest_log_dir).mkdir(parents=True, exist_ok=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base").mkdir()
    (tmp_path / "data" / "base" / "1").write_bytes(b"x" * 4096)
    w = workload(RecordingServices(), f)
    moved = w.move_data_aside()
    assert moved is not None
    (tmp_path / "data").mkdir()  # the restored copy in its place
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the database's")
    (Path(moved) / "link").symlink_to(outside)  # rm removes the link, never enters it
    w.remove_moved_data_later(moved)  # returns at once: the removal is not waited for
    # Renamed first: a removal stopped half-way leaves a name that says so.
    assert not Path(moved).exists()
    deadline = time.monotonic() + 30
    while left := [p.name for p in tmp_path.iterdir() if ".removing-" in p.name]:
        assert time.monotonic() < deadline, f"{left} still there"
        time.sleep(0.05)
    assert (tmp_path / "data").is_dir()
    assert (outside / "keep").read_text() == "not the database's"
    # Anything but a moved-aside directory is refused before a process starts.
    for wrong in (tmp_path / "data", outside):
        with pytest.raises(WorkloadError):
            w.remove_moved_data_later(str(wrong))
    fake = tmp_path / "data.before-restore-20261203T000000Z"  # a link with a moved name
    fake.symlink_to(outside)
    with pytest.raises(WorkloadError, match="is not a directory"):
        w.remove_moved_data_later(str(fake))
    assert (tmp_path / "data").is_dir() and (outside / "keep").exists()


# --- a restore beside the data directory: PostgreSQL started as Patroni last started it --

BIN = "/usr/lib/postgresql/15/bin"
PATRONI_OPTS = (
    f'{BIN}/postgres "-D" "/u/0/data" "--config-file=/u/0/data/postgresql.conf" '
    '"--listen_addresses=10.201.1.10" "--port=5432" "--cluster_name=main" '
    '"--wal_level=replica" "--hot_standby=on" "--max_connections=100"\n'
)


def test_the_postmaster_starts_as_patroni_last_started_it() -> None:
    argv = postmaster_argv(PATRONI_OPTS, "/u/0/data", BIN)
    assert argv[:3] == [f"{BIN}/postgres", "-D", "/u/0/data"]
    assert "--listen_addresses=10.201.1.10" in argv
    assert len(argv) == 10


@pytest.mark.parametrize(
    "opts",
    [
        None,
        "",
        '/bin/sh "-c" "id"',
        f'{BIN}/postgres "-D" "/elsewhere"',
        f'{BIN}/postgres "-D" "/u/0/data" "--config-file=/tmp/evil.conf"',
        f'{BIN}/postgres "-D" "/u/0/data" "--port=5432; id"',
        f'{BIN}/postgres "-D" "/u/0/data" "-c" "archive_command=id"',
        f'{BIN}/postgres "-D" "/u/0/data" "--archive_command=sh x"',
        f'{BIN}/postgres "-D" "/u/0/data" "unterminated',
    ],
    ids=["missing", "empty", "other-program", "other-data", "other-config", "shell",
         "short-option", "space", "quote"],
)  # fmt: skip
def test_a_postmaster_line_the_database_user_could_have_changed_is_refused(
    opts: str | None,
) -> None:
    with pytest.raises(WorkloadError, match=r"postmaster\.opts"):
        postmaster_argv(opts, "/u/0/data", BIN)


def test_recovery_is_none_once_patroni_runs() -> None:
    services = RecordingServices(running={Service.PATRONI, Service.RECOVERY})
    assert workload(services).recovery() is None


def test_recovery_never_started_is_none() -> None:
    assert workload(RecordingServices()).recovery() is None


def test_a_recovery_that_exited_says_postgresqls_last_fatal_line(tmp_path: Path) -> None:
    f = facts(root=str(tmp_path))
    log_dir = Path(f.layout.pgbackrest_log_dir)  # Patroni logs to its standard error here
    log_dir.mkdir(parents=True)
    (log_dir / "postgresql-recovery.log").write_text(
        "LOG:  starting point-in-time recovery\n"
        "FATAL:  recovery ended before configured recovery target was reached\n"
        "LOG:  database system is shut down\n"
    )
    services = RecordingServices(failed={Service.RECOVERY})
    assert workload(services, f).recovery() == Recovery(
        Recovery.ENDED, "recovery ended before configured recovery target was reached"
    )


def test_the_restored_copy_takes_the_place_with_patronis_files(tmp_path: Path) -> None:
    """As the database user (here: whoever runs the test): Patroni's configuration comes
    from the old data, pg_hba lets in only the superuser over the socket until Patroni
    takes over, and nothing of the old data is changed."""
    f = facts(root=str(tmp_path))
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgresql.conf").write_text("include 'postgresql.base.conf'\n")
    (data / "pg_ident.conf").write_text("pgbackups postgres postgres\n")
    (data / "pg_hba.conf").write_text("host all all 0.0.0.0/0 scram-sha-256\n")
    w = workload(RecordingServices(), f)
    staging = moveaside.make_staging(data, os.getuid(), os.getgid())
    (staging / "postgresql.conf").write_text("the backup's\n")
    moved = w.swap_in_restored()
    assert moveaside.is_moved_copy(data, Path(moved))
    assert (data / "postgresql.conf").read_text() == "include 'postgresql.base.conf'\n"
    assert (data / "pg_ident.conf").read_text() == "pgbackups postgres postgres\n"
    assert (data / "pg_hba.conf").read_text() == "local all postgres peer map=pgbackups\n"
    assert (Path(moved) / "pg_hba.conf").read_text().startswith("host all all")


def test_the_recovery_postmaster_is_started_from_the_moved_copys_line(tmp_path: Path) -> None:
    f = facts(root=str(tmp_path))
    data = tmp_path / "data"
    moved = tmp_path / "data.before-restore-20261202T190000Z"
    moved.mkdir()
    (moved / "postmaster.opts").write_text(PATRONI_OPTS.replace("/u/0/data", str(data)))
    services = RecordingServices()
    workload(services, f).start_recovery(str(moved))
    (call,) = services.calls
    assert call.startswith(f"start_recovery {BIN}/postgres -D {data} --config-file=")
    assert call.endswith(f"> {f.layout.pgbackrest_log_dir}/postgresql-recovery.log")
    with pytest.raises(WorkloadError, match="not a data directory moved aside"):
        workload(services, f).start_recovery(str(data))
