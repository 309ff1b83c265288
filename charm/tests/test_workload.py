"""The machine workload's pure parts: systemd units, the Raft DCS section, the
configuration rendered through the core's real adapters, moving data aside, and the
TLS files made with openssl."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pgbackups.adapters import patroni, pgbackrest, processes
from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.core.host import CommandResult, Peer, TlsMaterial, WorkloadConfig, WorkloadError
from pgbackups.core.settings import S3Settings
from pgbackups.workload.dcs import with_dcs
from pgbackups.workload.layout import UnitFacts
from pgbackups.workload.services import Service
from pgbackups.workload.workload import patroni_member, pgbackrest_config
from raft_dcs import (
    PARTNERS_SCRIPT,
    RAFT_PORT,
    REMOVE_MEMBER_SCRIPT,
    SYSTEM_PYTHON,
    RaftDcs,
    client_section,
    member_section,
)
from systemd_services import SystemdServices, patroni_unit, raft_unit, tls_server_unit
from tls_files import DiskTlsFiles
from workload import MachinePaths, MachineWorkload, machine_facts

STANZA = "prod.pgbackups-postgresql"
SETTINGS = S3Settings(bucket="backups", access_key="AK", secret_key="SK", path="/pg")
BACKUP_TLS = TlsMaterial("/pgbr-tls/ca.crt", "/pgbr-tls/unit.crt", "/pgbr-tls/unit.key")


def facts(*, tls: bool = False, peers: int = 1, paths: MachinePaths | None = None) -> UnitFacts:
    return machine_facts(
        paths or MachinePaths(),
        app="pgbackups-postgresql",
        unit="pgbackups-postgresql/0",
        address="10.0.0.1",
        peers=tuple(
            Peer(f"pgbackups-postgresql/{i}", f"10.0.0.{i + 1}") for i in range(1, peers + 1)
        ),
        tls=TlsMaterial("/tls/ca.crt", "/tls/unit.crt", "/tls/unit.key") if tls else None,
        passwords=PatroniPasswords("su", "repl", "rew", "rest", "raft-pw"),
        stanza=STANZA,
        backup_tls=BACKUP_TLS if tls else None,
    )


def test_systemd_units_run_as_postgres() -> None:
    paths = MachinePaths()
    unit = patroni_unit(paths.patroni_config)
    assert f"ExecStart=/usr/bin/patroni {paths.patroni_config}" in unit
    assert "User=postgres" in unit and "WantedBy=multi-user.target" in unit
    server = tls_server_unit(paths.pgbackrest_config)
    assert f"--config={paths.pgbackrest_config} server" in server
    raft = raft_unit(paths.raft_config)
    assert "ExecStart=/usr/bin/patroni_raft_controller /etc/pgbackups/raft.yaml" in raft
    assert "User=postgres" in raft and "WantedBy=multi-user.target" in raft
    # At boot Patroni starts after its DCS (ordering only: the charm starts each).
    assert "After=network-online.target pgbackups-raft.service" in unit
    assert "Requires=" not in unit and "pgbackups-patroni" not in raft
    # Secrets reach the services through their files (0600/0640, postgres), never their
    # environment: a process's environment outlives the hook and is in /proc.
    for text in (unit, server, raft):
        assert "Environment" not in text and "PASSWORD" not in text.upper()


def test_paths_follow_the_postgresql_version() -> None:
    assert MachinePaths(pg_version="16").bin_dir == "/usr/lib/postgresql/16/bin"
    assert MachinePaths(pg_version="15").data_dir == "/var/lib/postgresql/15/pgbackups"


def test_raft_binds_to_the_unit_address_never_all_interfaces() -> None:
    section = member_section(facts(peers=2), MachinePaths().raft_dir)
    assert section["self_addr"] == f"10.0.0.1:{RAFT_PORT}"
    assert section["bind_addr"] == section["self_addr"]
    assert section["partner_addrs"] == [f"10.0.0.2:{RAFT_PORT}", f"10.0.0.3:{RAFT_PORT}"]
    assert section["data_dir"] == "/var/lib/pgbackups/raft"
    assert "0.0.0.0" not in yaml.safe_dump(section)  # noqa: S104 - the point of the test


def test_patroni_is_a_raft_client_of_the_members() -> None:
    section = client_section(facts(peers=2))
    # No self_addr: pysyncobj's read-only node, in no quorum, no Raft files of its own;
    # no bind_addr: it listens on nothing.
    assert set(section) == {"partner_addrs", "password"}
    assert section["partner_addrs"] == [f"10.0.0.{i}:{RAFT_PORT}" for i in (1, 2, 3)]
    # Bootstrapping alone (no peers yet): its own unit's member only.
    assert client_section(facts(peers=0))["partner_addrs"] == [f"10.0.0.1:{RAFT_PORT}"]


def test_patroni_config_from_the_core_renderer_with_raft() -> None:
    w = MachineWorkload(facts)
    f = facts()
    config = WorkloadConfig(s3=SETTINGS, stanza=STANZA, tls_server=False)
    rendered = with_dcs(patroni.render_config(patroni_member(f), config), w.dcs.patroni_section(f))
    assert "etcd3" not in rendered and "etcd" not in rendered
    assert rendered["raft"]["partner_addrs"] == ["10.0.0.1:2222", "10.0.0.2:2222"]
    assert "self_addr" not in rendered["raft"] and "bind_addr" not in rendered["raft"]
    version = MachinePaths().pg_version  # the one this system ships
    assert rendered["postgresql"]["bin_dir"] == f"/usr/lib/postgresql/{version}/bin"
    params = rendered["postgresql"]["parameters"]
    assert f"--stanza={STANZA}" in params["archive_command"]
    assert w.paths.pgbackrest_config in params["archive_command"]
    off = patroni.render_config(
        patroni_member(f), WorkloadConfig(s3=None, stanza=None, tls_server=False)
    )
    assert off["postgresql"]["parameters"]["archive_command"] == patroni.ARCHIVE_OFF_COMMAND


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbackrest, "detect_features", lambda **kw: pgbackrest.PgBackRestFeatures())
    monkeypatch.setattr(processes, "db_user", processes.current_user)


def render_pgbackrest(config: WorkloadConfig, f: UnitFacts) -> str:
    features = pgbackrest.detect_features(user=processes.db_user())
    return pgbackrest.render_config(pgbackrest_config(f, config, ca_file=None, features=features))


def test_pgbackrest_config_with_the_tls_server_and_peers(no_probe: None) -> None:
    config = WorkloadConfig(s3=SETTINGS, stanza=STANZA, tls_server=True)
    text = render_pgbackrest(config, facts(tls=True, peers=2))
    assert f"[{STANZA}]" in text
    assert "repo1-s3-bucket=backups" in text
    assert "tls-server-address=10.0.0.1" in text
    assert "pg2-host=10.0.0.2" in text and "pg3-host=10.0.0.3" in text
    # The peers are admitted by their member names, on certificates of the application's
    # own CA: never the certificates relation's CA, which other applications share.
    assert [line for line in text.splitlines() if line.startswith("tls-server-auth=")] == [
        f"tls-server-auth=pgbackups-postgresql-1={STANZA}",
        f"tls-server-auth=pgbackups-postgresql-2={STANZA}",
    ]
    assert "tls-server-ca-file=/pgbr-tls/ca.crt" in text
    assert "pg2-host-ca-file=/pgbr-tls/ca.crt" in text and "pg2-host-key-file=/pgbr-tls/" in text
    assert "/tls/ca.crt" not in text


def test_pgbackrest_config_without_tls_has_no_peers(no_probe: None) -> None:
    text = render_pgbackrest(
        WorkloadConfig(s3=None, stanza=None, tls_server=False), facts(tls=True)
    )
    assert "pg2-host" not in text and "tls-server" not in text
    assert "repo1" not in text


class _TmpPaths(MachinePaths):
    root: str = ""

    @property
    def data_dir(self) -> str:
        return f"{self.root}/data"


def test_data_is_moved_aside_back_and_removed_only_when_moved(tmp_path: Path) -> None:
    paths = _TmpPaths()
    object.__setattr__(paths, "root", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PG_VERSION").write_text("16")
    w = MachineWorkload(lambda: facts(paths=paths), paths)
    moved = w.move_data_aside()
    assert moved is not None and not (tmp_path / "data").exists()
    assert (Path(moved) / "PG_VERSION").read_text() == "16"
    w.move_data_back(moved)  # raises WorkloadError when it fails
    assert (tmp_path / "data" / "PG_VERSION").exists()
    with pytest.raises(WorkloadError):  # not a moved-aside directory: refused
        w.remove_moved_data(str(tmp_path / "data"))
    assert (tmp_path / "data").exists()
    moved = w.move_data_aside()
    assert moved is not None
    w.remove_moved_data(moved)
    assert not Path(moved).exists()
    # No data directory (a failed bootstrap renamed it): nothing to move, not a failure.
    assert w.move_data_aside() is None


def test_disk_tls_files_keep_the_leaf_out_of_the_ca_file(tmp_path: Path) -> None:
    files = DiskTlsFiles(str(tmp_path / "tls"), owner=None)
    assert files.material() is None
    assert files.store("KEY", "CERT", ["CA", "INTERMEDIATE", "CA"])
    assert not files.store("KEY", "CERT", ["CA", "INTERMEDIATE"])  # unchanged
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    material = files.material()
    assert material is not None
    assert Path(material.ca_file).read_text() == "CA\nINTERMEDIATE\n"
    assert Path(material.cert_file).read_text() == "CERT\n"
    assert files.store("KEY", "RENEWED", ["CA", "INTERMEDIATE"])  # a renewal: changed
    files.clear()
    assert files.material() is None


as_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("openssl") is None, reason="root acting for postgres"
)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder of root's that postgres may enter (pytest's tmp is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="pgbackups-charm-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def _owned(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@as_root
def test_tls_files_are_roots_and_read_by_the_postgres_group(open_tmp: Path) -> None:
    db = processes.db_user()
    files = DiskTlsFiles(str(open_tmp / "tls"))
    files.store("KEY", "CERT", ["CA"])
    assert _owned(files.dir) == (0, db.gid, 0o750)
    assert _owned(files.key_file) == (0, db.gid, 0o640)
    assert _owned(files.cert_file) == (0, db.gid, 0o644)
    assert [p.name for p in files.dir.iterdir() if p.name.startswith(".")] == []


@as_root
def test_tls_files_refuse_a_link_at_their_folder(open_tmp: Path) -> None:
    victim = open_tmp / "victim"
    victim.mkdir(mode=0o755)
    (open_tmp / "tls").symlink_to(victim)
    with pytest.raises(WorkloadError):
        DiskTlsFiles(str(open_tmp / "tls")).store("KEY", "CERT", ["CA"])
    assert _owned(victim) == (0, 0, 0o755) and list(victim.iterdir()) == []


@as_root
def test_make_dirs_gives_root_the_configuration_and_postgres_its_own(open_tmp: Path) -> None:
    db = processes.db_user()
    paths = MachinePaths(
        state_dir=str(open_tmp / "lib"),
        etc_dir=str(open_tmp / "etc"),
        log_dir=str(open_tmp / "log"),
    )
    # The older layout gave these to postgres: root takes them back.
    for old in (paths.state_dir, paths.etc_dir):
        Path(old).mkdir(mode=0o750)
        os.chown(old, db.uid, db.gid)
    MachineWorkload(lambda: facts(paths=paths), paths).make_dirs()
    assert _owned(Path(paths.state_dir)) == (0, 0, 0o755)
    assert _owned(Path(paths.etc_dir)) == (0, db.gid, 0o750)
    assert _owned(Path(paths.tls_dir)) == (0, db.gid, 0o750)
    for own in (paths.raft_dir, paths.patroni_dir, paths.pgbackrest_lock_dir):
        assert _owned(Path(own)) == (db.uid, db.gid, 0o700)
    assert _owned(Path(paths.log_dir)) == (db.uid, db.gid, 0o750)
    assert _owned(Path(paths.pgbackrest_log_dir))[:2] == (db.uid, db.gid)
    assert Path(paths.pgpass).parent == Path(paths.patroni_dir)


@as_root
def test_make_dirs_refuses_a_link_postgres_planted(open_tmp: Path) -> None:
    paths = MachinePaths(
        state_dir=str(open_tmp / "lib"),
        etc_dir=str(open_tmp / "etc"),
        log_dir=str(open_tmp / "log"),
    )
    victim = open_tmp / "victim"
    victim.mkdir(mode=0o755)
    Path(paths.state_dir).mkdir(mode=0o755)
    Path(paths.raft_dir).symlink_to(victim)
    with pytest.raises(WorkloadError, match="link"):
        MachineWorkload(lambda: facts(paths=paths), paths).make_dirs()
    assert _owned(victim) == (0, 0, 0o755)


# The Raft member's store, as patroni_raft_controller (and Patroni before it) builds it:
# its self_addr names the files.
PATRONI_RAFT = """\
import sys
from patroni.dcs.raft import KVStoreTTL
password = sys.stdin.readline().rstrip("\\n")
store = KVStoreTTL(None, None, None, self_addr=sys.argv[1], bind_addr=sys.argv[1],
                   partner_addrs=[], data_dir=sys.argv[2], password=password)
store.doTick(0.1)
store.destroy()
"""


@as_root
def test_a_restore_removes_the_raft_members_files_as_postgres(open_tmp: Path) -> None:
    # What the member writes for a one-member Raft group, removed the way a restore on
    # the only unit does (member stopped, files deleted, member started again).
    if processes.run([SYSTEM_PYTHON, "-c", "import patroni.dcs.raft"], timeout=60).returncode:
        pytest.skip("the system Python has no Patroni with Raft")
    db = processes.db_user()
    address = "127.77.0.9"  # a loopback address of its own, for the bind
    paths = MachinePaths(
        state_dir=str(open_tmp / "lib"),
        etc_dir=str(open_tmp / "etc"),
        systemd_dir=str(open_tmp / "sd"),
    )
    (open_tmp / "etc").mkdir()
    (open_tmp / "sd").mkdir()
    raft_dir = Path(paths.raft_dir)
    raft_dir.parent.mkdir(mode=0o755)
    raft_dir.mkdir(mode=0o700)
    os.chown(raft_dir, db.uid, db.gid)
    made = processes.run(
        [SYSTEM_PYTHON, "-c", PATRONI_RAFT, f"{address}:{RAFT_PORT}", str(raft_dir)],
        user=db,
        input_text="raft-pw\n",
        timeout=60,
    )
    assert made.ok, made.stderr
    kept = raft_dir / f"10.0.0.7:{RAFT_PORT}.journal"  # not this member's: stays
    processes.run(["touch", str(kept)], user=db, timeout=30)
    assert (raft_dir / f"{address}:{RAFT_PORT}.journal").is_file()
    base = facts(paths=paths, peers=0)
    alone = replace(base, layout=replace(base.layout, address=address))
    systemctl: list[str] = []

    def run(argv: list[str], **kwargs: object) -> CommandResult:
        if argv[0] != "systemctl":  # find, as postgres: for real
            return processes.run(argv, **kwargs)  # type: ignore[arg-type]
        systemctl.append(" ".join(argv[1:]))
        return CommandResult(tuple(argv), 3 if "pgbackups-patroni" in argv[-1] else 0, "", "")

    MachineWorkload(lambda: alone, paths, run=run).remove_dcs_state()
    assert sorted(p.name for p in raft_dir.iterdir()) == [kept.name]
    assert [c for c in systemctl if "raft" in c and "is-active" not in c] == [
        "disable --now pgbackups-raft.service",
        "enable --now pgbackups-raft.service",
    ]


class RecordingRunner:
    """Stands in for processes.run: records argv, answers ``fail`` prefixes with rc 1."""

    def __init__(self, *fail: str) -> None:
        self.argvs: list[str] = []
        self.inputs: list[object] = []
        self.fail = fail

    def __call__(self, argv: list[str], **kwargs: object) -> CommandResult:
        line = " ".join(argv)
        self.argvs.append(line)
        self.inputs.append(kwargs.get("input_text"))
        code = 1 if any(line.startswith(f) for f in self.fail) else 0
        return CommandResult(tuple(argv), code, "", "boom" if code else "")


def test_systemd_writes_units_then_enables_or_disables(tmp_path: Path) -> None:
    run = RecordingRunner()
    services = SystemdServices(
        patroni_config="/etc/p.yaml",
        pgbackrest_config="/etc/b.conf",
        raft_config="/etc/r.yaml",
        systemd_dir=str(tmp_path),
        run=run,
    )
    services.start(Service.PATRONI)
    assert (
        "ExecStart=/usr/bin/patroni /etc/p.yaml"
        in (tmp_path / "pgbackups-patroni.service").read_text()
    )
    assert run.argvs == [
        "systemctl daemon-reload",
        "systemctl enable --now pgbackups-patroni.service",
    ]
    services.stop(Service.TLS_SERVER)
    services.restart(Service.TLS_SERVER)
    assert run.argvs[2:] == [  # the unit files did not change: no daemon-reload
        "systemctl disable --now pgbackups-pgbackrest-server.service",
        "systemctl enable pgbackups-pgbackrest-server.service",
        "systemctl restart pgbackups-pgbackrest-server.service",
    ]
    assert (
        "ExecStart=/usr/bin/patroni_raft_controller /etc/r.yaml"
        in (tmp_path / "pgbackups-raft.service").read_text()
    )
    services.start_raft()
    services.stop_raft()
    assert services.is_raft_running()
    assert run.argvs[5:] == [
        "systemctl enable --now pgbackups-raft.service",
        "systemctl disable --now pgbackups-raft.service",
        "systemctl is-active --quiet pgbackups-raft.service",
    ]


def test_systemd_failure_is_a_workload_error(tmp_path: Path) -> None:
    run = RecordingRunner("systemctl enable")
    services = SystemdServices(
        patroni_config="/p",
        pgbackrest_config="/b",
        raft_config="/r",
        systemd_dir=str(tmp_path),
        run=run,
    )
    with pytest.raises(WorkloadError, match="boom"):
        services.start(Service.PATRONI)


def test_raft_forgets_a_departed_member_through_this_one() -> None:
    run = RecordingRunner()  # its status answers nothing readable: the removal is tried
    RaftDcs("/raft", run=run).forget_member(facts(), "10.0.0.3")
    assert run.argvs == [
        f"/usr/bin/python3 -c {PARTNERS_SCRIPT} 10.0.0.1:{RAFT_PORT}",
        f"/usr/bin/python3 -c {REMOVE_MEMBER_SCRIPT} 10.0.0.1:{RAFT_PORT} 10.0.0.3:{RAFT_PORT}",
    ]
    # The Raft password goes on standard input, never on the command line.
    assert not [a for a in run.argvs if "raft-pw" in a]
    assert run.inputs == ["raft-pw\n", "raft-pw\n"]
    with pytest.raises(WorkloadError, match=r"not removed via 10\.0\.0\.1: boom"):
        RaftDcs("/raft", run=RecordingRunner("/usr/bin/python3")).forget_member(facts(), "10.0.0.3")


def test_leaving_asks_every_partner_again_until_its_patience_runs_out() -> None:
    slept: list[float] = []
    run = RecordingRunner("/usr/bin/python3")
    dcs = RaftDcs("/raft", run=run, leave_patience=0.0, sleep=slept.append)
    with pytest.raises(WorkloadError, match=r"via 10\.0\.0\.2: boom; .* via 10\.0\.0\.3: boom"):
        dcs.leave(facts(peers=2))
    removals = [a for a in run.argvs if REMOVE_MEMBER_SCRIPT in a]
    assert [a.split()[-2] for a in removals] == [f"10.0.0.2:{RAFT_PORT}", f"10.0.0.3:{RAFT_PORT}"]
    assert all(a.split()[-1] == f"10.0.0.1:{RAFT_PORT}" for a in removals)  # itself
    # Patience left: a second round after a pause, as while the partners elect a leader
    # (each status unreadable, each removal refused, then one done).
    answers = iter([1, 1, 1, 1, 1, 0])

    def flaky(argv: list[str], **kwargs: object) -> CommandResult:
        code = next(answers)
        return CommandResult(tuple(argv), code, "", "FAIL" if code else "SUCCESS")

    patient = RaftDcs("/raft", run=flaky, leave_patience=60.0, sleep=slept.append)
    assert patient.leave(facts(peers=2)) == "10.0.0.2"
    assert slept == [1.0]
    assert RaftDcs("/raft", run=run).leave(facts(peers=0)) is None  # the last unit


def test_the_tls_server_waits_for_a_peer_to_admit() -> None:
    # With no peer its configuration has no tls-server-auth: pgBackRest would not start.
    run = RecordingRunner()
    alone = MachineWorkload(lambda: facts(tls=True, peers=0), MachinePaths(), run=run)
    with pytest.raises(WorkloadError, match="waits for a peer"):
        alone.start_tls_server()
    assert run.argvs == []


def test_raft_is_encrypted_with_the_raft_password() -> None:
    section = RaftDcs("/raft").patroni_section(facts())
    assert section["raft"]["password"] == "raft-pw"
    no_password = replace(facts(), passwords=PatroniPasswords("su", "repl", "rew", "rest"))
    with pytest.raises(WorkloadError, match="Raft password"):
        RaftDcs("/raft").patroni_section(no_password)


def test_a_restores_postgresql_runs_in_its_own_unit_never_enabled(tmp_path: Path) -> None:
    """Not in the hook's cgroup (the agent's), not at boot (Patroni starts PostgreSQL
    then), stopped with PostgreSQL's fast shutdown; Patroni takes the postmaster over."""
    run = RecordingRunner()
    services = SystemdServices(
        patroni_config="/p",
        pgbackrest_config="/b",
        raft_config="/r",
        systemd_dir=str(tmp_path),
        run=run,
    )
    argv = ["/usr/lib/postgresql/16/bin/postgres", "-D", "/var/lib/d", "--port=5432"]
    services.start_recovery(argv, "/var/log/pgbackups/postgresql-recovery.log")
    text = (tmp_path / "pgbackups-postgresql-recovery.service").read_text()
    assert (
        'ExecStart=/bin/sh -c "exec /usr/lib/postgresql/16/bin/postgres -D /var/lib/d '
        '--port=5432 >>/var/log/pgbackups/postgresql-recovery.log 2>&1"\n'
    ) in text
    assert "User=postgres\n" in text and "KillSignal=SIGINT\n" in text
    assert "StandardOutput" not in text, "systemd would open the log as root"
    assert "[Install]" not in text
    assert run.argvs == [
        "systemctl daemon-reload",
        "systemctl start pgbackups-postgresql-recovery.service",
    ]
    with pytest.raises(WorkloadError, match="start_recovery"):
        services.start(Service.RECOVERY)
    with pytest.raises(WorkloadError, match="plain word"):
        services.start_recovery([*argv, "--archive_command=sh -c x"], "/l")
    with pytest.raises(WorkloadError, match="plain word"):
        services.start_recovery([*argv, "--port=1;reboot"], "/l")
    with pytest.raises(WorkloadError, match="plain word"):
        services.start_recovery(argv, "/l\nExecStartPre=/bin/evil")
