"""The machine workload's pure parts: systemd units, the Raft DCS section, the
configuration rendered through the core's real adapters, moving data aside, and the
TLS files made with openssl."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import yaml

from pgbackups.adapters import patroni, pgbackrest, processes
from pgbackups.adapters.patroni import PatroniPasswords
from pgbackups.core.host import Peer, TlsMaterial, WorkloadConfig
from pgbackups.core.settings import S3Settings
from tls_files import DiskTlsFiles
from workload import (
    RAFT_PORT,
    MachinePaths,
    MachineWorkload,
    UnitFacts,
    patroni_unit,
    raft_section,
    tls_server_unit,
    with_raft_dcs,
)

STANZA = "prod.pgbackups-postgresql"
SETTINGS = S3Settings(bucket="backups", access_key="AK", secret_key="SK", path="/pg")


def facts(*, tls: bool = False, peers: int = 1) -> UnitFacts:
    return UnitFacts(
        scope="pgbackups-postgresql",
        member="pgbackups-postgresql-0",
        address="10.0.0.1",
        peers=tuple(
            Peer(f"pgbackups-postgresql/{i}", f"10.0.0.{i + 1}") for i in range(1, peers + 1)
        ),
        tls=TlsMaterial("/tls/ca.crt", "/tls/unit.crt", "/tls/unit.key") if tls else None,
        passwords=PatroniPasswords("su", "repl", "rew"),
        stanza_name=STANZA,
    )


def test_systemd_units_run_as_postgres() -> None:
    paths = MachinePaths()
    unit = patroni_unit(paths)
    assert f"ExecStart=/usr/bin/patroni {paths.patroni_config}" in unit
    assert "User=postgres" in unit and "WantedBy=multi-user.target" in unit
    server = tls_server_unit(paths)
    assert f"--config={paths.pgbackrest_config} server" in server


def test_paths_follow_the_postgresql_version() -> None:
    assert MachinePaths().bin_dir == "/usr/lib/postgresql/16/bin"
    assert MachinePaths(pg_version="15").data_dir == "/var/lib/postgresql/15/pgbackups"


def test_raft_binds_to_the_unit_address_never_all_interfaces() -> None:
    section = raft_section(facts(peers=2), MachinePaths())
    assert section["self_addr"] == f"10.0.0.1:{RAFT_PORT}"
    assert section["bind_addr"] == section["self_addr"]
    assert section["partner_addrs"] == [f"10.0.0.2:{RAFT_PORT}", f"10.0.0.3:{RAFT_PORT}"]
    assert "0.0.0.0" not in yaml.safe_dump(section)  # noqa: S104 - the point of the test


def test_patroni_config_from_the_core_renderer_with_raft() -> None:
    w = MachineWorkload(facts)
    f = facts()
    config = WorkloadConfig(s3=SETTINGS, stanza=STANZA, tls_server=False)
    rendered = with_raft_dcs(patroni.render_config(w._member(f), config), f, w.paths)
    assert "etcd3" not in rendered and "etcd" not in rendered
    assert rendered["raft"]["bind_addr"] == "10.0.0.1:2222"
    assert rendered["postgresql"]["bin_dir"] == "/usr/lib/postgresql/16/bin"
    params = rendered["postgresql"]["parameters"]
    assert f"--stanza={STANZA}" in params["archive_command"]
    assert w.paths.pgbackrest_config in params["archive_command"]
    off = patroni.render_config(
        w._member(f), WorkloadConfig(s3=None, stanza=None, tls_server=False)
    )
    assert off["postgresql"]["parameters"]["archive_command"] == patroni.ARCHIVE_OFF_COMMAND


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbackrest, "detect_features", lambda **kw: pgbackrest.PgBackRestFeatures())
    monkeypatch.setattr(processes, "db_user", processes.current_user)


def test_pgbackrest_config_with_the_tls_server_and_peers(no_probe: None) -> None:
    w = MachineWorkload(lambda: facts(tls=True, peers=2))
    config = WorkloadConfig(s3=SETTINGS, stanza=STANZA, tls_server=True)
    text = w.render_pgbackrest(config, facts(tls=True, peers=2))
    assert f"[{STANZA}]" in text
    assert "repo1-s3-bucket=backups" in text
    assert "tls-server-address=10.0.0.1" in text
    assert "pg2-host=10.0.0.2" in text and "pg3-host=10.0.0.3" in text
    assert f"tls-server-auth=10.0.0.2={STANZA}" in text


def test_pgbackrest_config_without_tls_has_no_peers(no_probe: None) -> None:
    w = MachineWorkload(lambda: facts(tls=True, peers=2))
    text = w.render_pgbackrest(
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
    w = MachineWorkload(facts, paths)
    moved = w.move_data_aside()
    assert moved is not None and not (tmp_path / "data").exists()
    assert (Path(moved) / "PG_VERSION").read_text() == "16"
    assert w.move_data_back(moved)
    assert (tmp_path / "data" / "PG_VERSION").exists()
    w.remove_moved_data(str(tmp_path / "data"))  # not a moved-aside directory: refused
    assert (tmp_path / "data").exists()
    moved = w.move_data_aside()
    assert moved is not None
    w.remove_moved_data(moved)
    assert not Path(moved).exists()
    # No data directory (a failed bootstrap renamed it): nothing to move, not a failure.
    assert w.move_data_aside() == ""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_disk_tls_files_with_openssl(tmp_path: Path) -> None:
    files = DiskTlsFiles(str(tmp_path / "tls"), owner=None)
    assert files.csr() is None and files.material() is None
    csr = files.new_key_and_csr("10.0.0.1", ["10.0.0.1", "juju-1"])
    assert "BEGIN CERTIFICATE REQUEST" in csr
    assert files.csr() == csr
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert files.material() is None  # no certificate yet
    assert files.store_certificate("CERT", "CA", ["CA", "ROOT"])
    assert not files.store_certificate("CERT", "CA", ["CA", "ROOT"])  # unchanged
    material = files.material()
    assert material is not None and Path(material.ca_file).read_text() == "CA\nROOT\n"
    files.clear()
    assert files.material() is None and files.csr() is None
