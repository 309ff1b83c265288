"""The local cluster, for real: etcd, rclone S3 over TLS, PostgreSQL 15 under Patroni.

Two clusters run side by side for the whole module: ``pair`` (2 units, no TLS) and
``solo`` (1 unit, --tls). Tests that stop or change a cluster come last in their group.

This module is the loopback smoke: its clusters share 127.0.0.1 even as root (the rest
of the suite runs units as machines; their twin of these checks is test_machines.py).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError
from e2e_helpers import tcp_connect

from pgbackups.adapters import processes
from pgbackups.local.runtime.cluster import Cluster

pytestmark = [pytest.mark.real, pytest.mark.loopback]

BOTO_CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    s3={"addressing_style": "path"},
    retries={"max_attempts": 1},
)


def s3_client(
    cluster: Cluster, *, verify: bool | str | None = None, secret: str | None = None
) -> Any:
    s3 = cluster.s3()
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=secret or s3.secret_key,
        region_name=s3.region,
        verify=s3.ca_file if verify is None else verify,
        config=BOTO_CONFIG,
    )


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.3)
    return False


def all_pids(cluster: Cluster) -> list[int]:
    state = cluster.state()
    pids = [p.pid for p in state.processes.values()]
    pids += [u.process.pid for u in state.units.values() if u.process]
    return pids


@pytest.fixture(scope="module")
def pair(make_module_cluster: Callable[..., Cluster]) -> Cluster:
    return make_module_cluster("pair", units=2)


@pytest.fixture(scope="module")
def solo(make_module_cluster: Callable[..., Cluster]) -> Cluster:
    return make_module_cluster("solo", units=1, tls=True)


def test_pair_is_up_with_unit0_primary(pair: Cluster, run_cli: Callable[..., Any]) -> None:
    res = run_cli("status", "--name", "pair", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["cluster"] == "pair"
    assert data["s3"]["bucket"] == "pgbackups"
    assert data["s3"]["endpoint"].startswith("https://localhost:")
    units = {u["name"]: u for u in data["units"]}
    assert set(units) == {"pair/0", "pair/1"}
    assert units["pair/0"]["leader"] is True
    assert units["pair/1"]["leader"] is False
    assert units["pair/0"]["role"] == "primary"
    assert units["pair/1"]["role"] == "replica"
    for u in units.values():
        assert u["state"] == "running"
        assert u["status"] == "active"
        assert u["message"] == ""
        assert u["host"] == "127.0.0.1"
        assert Path(u["data_dir"]).is_dir()
        assert set(u) >= {"name", "leader", "role", "state", "status", "message", "host", "port"}
    table = run_cli("status", "--name", "pair")
    assert "pair/1" in table.stdout
    assert "replica" in table.stdout


def test_row_written_on_primary_is_read_on_replica(pair: Cluster) -> None:
    primary, replica = pair.unit("0"), pair.unit("pair/1")
    primary.query("create table if not exists t (id int)")
    primary.query("insert into t values (42)")

    def replicated() -> bool:
        try:
            return replica.query("select count(*) from t where id = 42") == [(1,)]
        except psycopg.Error:
            return False

    assert wait_for(replicated)
    assert replica.query("select pg_is_in_recovery()") == [(True,)]


def test_psql_subcommand(pair: Cluster, run_cli: Callable[..., Any]) -> None:
    res = run_cli("psql", "--name", "pair", "1", "-Atc", "select pg_is_in_recovery()")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "t"


def test_s3_over_tls_needs_the_ca(solo: Cluster) -> None:
    s3 = solo.s3()
    client = s3_client(solo)
    client.put_object(Bucket=s3.bucket, Key="probe/hello.txt", Body=b"hello")
    assert client.get_object(Bucket=s3.bucket, Key="probe/hello.txt")["Body"].read() == b"hello"
    with pytest.raises(SSLError):
        s3_client(solo, verify=True).list_objects_v2(Bucket=s3.bucket)  # system CAs only
    with pytest.raises(ClientError):  # the secret reached rclone via its environment
        s3_client(solo, secret="x" * 40).list_objects_v2(Bucket=s3.bucket)


def test_secrets_stay_private(solo: Cluster) -> None:
    creds = solo.s3()
    db = processes.db_user()
    for path in (solo.paths.s3_secret_key_file, solo.paths.passwords_file):
        st = path.stat()
        assert st.st_mode & 0o777 == 0o600
        assert st.st_uid == os.geteuid()  # only root (the invoking user) reads them
    state = solo.state()
    s3_proc = state.processes["s3"]
    cmdline = Path(f"/proc/{s3_proc.pid}/cmdline").read_bytes()
    assert creds.secret_key.encode() not in cmdline
    assert creds.secret_key not in solo.paths.state_file.read_text()
    unit = solo.unit("0")
    tls = unit.tls()
    assert tls is not None
    key = Path(tls.key_file).stat()
    if os.geteuid() == 0:  # root's, read by PostgreSQL and pgBackRest through the group
        assert (key.st_mode & 0o777, key.st_uid, key.st_gid) == (0o640, 0, db.gid)
    else:
        assert (key.st_mode & 0o777, key.st_uid) == (0o600, db.uid)
    # No long-running process of ours has a secret in its environment (rclone, the local
    # S3 stand-in, is the known exception: docs/security.md).
    passwords = solo.passwords()
    # (The Raft password is the charm's: empty here, and "" is in every text.)
    secrets = [s for s in (creds.secret_key, creds.access_key, *vars(passwords).values()) if s]
    patroni, postmaster = unit.process(), unit.postmaster_pid()
    assert patroni is not None and postmaster is not None
    daemons = {"etcd": state.processes["etcd"].pid, "patroni": patroni.pid, "postgres": postmaster}
    daemons["agent"] = state.processes["agent"].pid  # the cluster's agent (up starts it)
    for what, pid in daemons.items():
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert environ and not [s for s in secrets if s in environ], what


def test_tls_unit_serves_postgresql_over_tls(solo: Cluster) -> None:
    unit = solo.unit("0")
    with psycopg.connect(
        host="localhost",
        port=unit.pg_port,
        user="postgres",
        password=solo.passwords().superuser,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(solo.ca_file),
        connect_timeout=5,
    ) as conn:
        row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
    assert row == (True,)
    # the certificate is for the unit, signed by the cluster CA
    ctx = ssl.create_default_context(cafile=str(solo.ca_file))
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_two_clusters_side_by_side(pair: Cluster, solo: Cluster) -> None:
    assert pair.is_running()
    assert solo.is_running()
    p, s = pair.state(), solo.state()
    assert p.base_port != s.base_port
    assert p.s3_port != s.s3_port
    assert solo.tls_enabled
    assert not pair.tls_enabled


def test_bad_arguments(pair: Cluster, run_cli: Callable[..., Any]) -> None:
    res = run_cli("up", "--name", "zero", "--units", "0")
    assert res.returncode == 2
    assert res.stderr.startswith("error: --units")
    res = run_cli("psql", "--name", "pair", "9")
    assert res.returncode == 1
    assert "unknown unit '9'" in res.stderr
    res = run_cli("switchover", "--name", "pair", "pair/7")
    assert res.returncode == 1
    assert "unknown unit" in res.stderr
    res = run_cli("up", "--name", "pair")
    assert res.returncode == 1
    assert "already running" in res.stderr
    res = run_cli("up", "--name", "Bad_Name")
    assert res.returncode == 2
    assert "bad cluster name" in res.stderr
    res = run_cli("status", "--name", "nosuch")
    assert res.returncode == 1
    assert "no cluster named 'nosuch'" in res.stderr
    res = run_cli("up", "--name", "nopath", env={"PATH": "/nonexistent"})
    assert res.returncode == 1
    assert "apt-get install etcd-server" in res.stderr
    for args in (["up"], ["status"], ["down"], ["psql"], ["switchover"]):
        res = run_cli(*args, "--help")
        assert res.returncode == 0
        assert "example:" in res.stdout


def test_apply_config_reloads_without_restart(pair: Cluster) -> None:
    from pgbackups.core.host import WorkloadConfig
    from pgbackups.local.runtime.workload import local_workload

    replica = pair.unit("1")
    workload = local_workload(pair, replica)
    started = replica.query("select pg_postmaster_start_time()")

    def tcp_ok() -> bool:
        try:
            tcp_connect(pair, replica.name, timeout=3)
        except psycopg.OperationalError:
            return False
        return True

    off = WorkloadConfig(s3=None, stanza="local.pair", tls_server=False, connectivity=False)
    workload.apply_config(off)
    try:
        assert wait_for(lambda: not tcp_ok(), timeout=20)
        assert wait_for(
            lambda: "archive-push" in replica.query("show archive_command")[0][0], timeout=20
        )
        assert replica.query("select 1") == [(1,)]  # the unix socket still works
    finally:
        workload.apply_config(WorkloadConfig(s3=None, stanza=None, tls_server=False))
    assert wait_for(tcp_ok, timeout=20)
    assert replica.query("select pg_postmaster_start_time()") == started


def test_add_switchover_remove(pair: Cluster, run_cli: Callable[..., Any]) -> None:
    res = run_cli("add-unit", "--name", "pair")
    assert res.returncode == 0, res.stderr
    assert [u.name for u in pair.units()] == ["pair/0", "pair/1", "pair/2"]
    res = run_cli("switchover", "--name", "pair", "2")
    assert res.returncode == 0, res.stderr
    primary = pair.primary()
    assert primary is not None
    assert primary.name == "pair/2"
    assert pair.leader == "pair/0"  # operator leadership is not the primary role
    res = run_cli("switchover", "--name", "pair", "2")
    assert res.returncode == 1
    assert "already the primary" in res.stderr
    # removing the primary hands the role over first
    res = run_cli("remove-unit", "--name", "pair", "pair/2")
    assert res.returncode == 0, res.stderr
    assert [u.name for u in pair.units()] == ["pair/0", "pair/1"]
    primary = pair.primary()
    assert primary is not None
    assert primary.name in ("pair/0", "pair/1")
    assert not (pair.paths.units_dir / "2").exists()


def test_down_then_up_keeps_data_ports_and_keys(solo: Cluster, run_cli: Callable[..., Any]) -> None:
    s3 = solo.s3()
    s3_client(solo).put_object(Bucket=s3.bucket, Key="keep/me.txt", Body=b"kept")
    solo.unit("0").query("create table kept (v text)")
    solo.unit("0").query("insert into kept values ('yes')")
    before = solo.state()
    pids = all_pids(solo)
    assert len(pids) == 4  # etcd, S3, the agent and the unit's Patroni

    res = run_cli("down", "--name", "solo")
    assert res.returncode == 0, res.stderr
    assert not any(processes.is_alive(p) for p in pids)
    assert not solo.any_running()

    # a taken port on restart: a clear error, and nothing left half-started
    unit_port = solo.unit("0").pg_port
    with socket.socket() as blocker:
        # As any server does: the port may still hold TIME_WAIT connections from `down`.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", unit_port))
        blocker.listen()
        res = run_cli("up", "--name", "solo")
    assert res.returncode == 1
    assert f"port {unit_port}" in res.stderr
    assert not solo.any_running()
    assert "agent" not in solo.state().processes  # started only once the cluster runs

    res = run_cli("up", "--name", "solo")
    assert res.returncode == 0, res.stderr
    after = solo.state()
    assert after.s3_port == before.s3_port
    assert after.units["solo/0"].pg_port == before.units["solo/0"].pg_port
    assert solo.s3().secret_key == s3.secret_key
    got = s3_client(solo).get_object(Bucket=s3.bucket, Key="keep/me.txt")["Body"].read()
    assert got == b"kept"
    assert solo.unit("0").query("select v from kept") == [("yes",)]


def test_purge_removes_everything(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any]
) -> None:
    cluster = make_cluster("gone")
    pids = all_pids(cluster)
    res = run_cli("down", "--name", "gone", "--purge")
    assert res.returncode == 0, res.stderr
    assert str(cluster.paths.s3_data) in res.stderr  # says what it removes
    assert not cluster.paths.root.exists()
    assert not any(processes.is_alive(p) for p in pids)


def test_unit_crash_during_up_is_reported_and_cleaned_up(
    pgbackups_home: Path, run_cli: Callable[..., Any]
) -> None:
    fakebin = pgbackups_home / "fakebin"
    fakebin.mkdir(mode=0o755, exist_ok=True)
    fake = fakebin / "patroni"
    fake.write_text("#!/bin/sh\necho 'FATAL: simulated patroni crash'\nexit 1\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fakebin}:/usr/local/bin:/usr/bin:/bin"}
    try:
        res = run_cli("up", "--name", "crash", env=env)
        assert res.returncode == 1
        assert "crash/0: patroni exited during start" in res.stderr
        assert "simulated patroni crash" in res.stderr
        assert "units/0/log/patroni.log" in res.stderr
        cluster = Cluster.load("crash")
        assert not cluster.any_running()  # etcd and S3 were stopped again
        status = run_cli("status", "--name", "crash")
        assert status.returncode == 0
        assert "stopped" in status.stdout
    finally:
        run_cli("down", "--name", "crash", "--purge")
