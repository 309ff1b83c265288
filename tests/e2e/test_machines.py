"""Units as machines, for real: every unit, the S3 server and etcd in a network namespace
of its own (``pgbackups up --machines``), through the CLI.

What a unit on its own machine meets: its own address for PostgreSQL, Patroni and the
pgBackRest TLS server, pg_hba by the units' addresses, certificates naming the address,
a backup on a replica machine that reaches the primary machine; and what the runtime
owes the host: nothing of it left after ``down``, even after a crash, and the host's
addresses, routes and links as they were.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgbackups.local.machinery import netns, s3server
from pgbackups.local.runtime.cluster import Cluster

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(os.geteuid() != 0, reason="machines need root (network namespaces)"),
]

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _host_network() -> tuple[str, str, str]:
    def ip(*args: str) -> str:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    return ip("-o", "addr", "show"), ip("route", "show", "table", "all"), ip("-o", "link", "show")


def _our_namespaces(cluster: Cluster) -> list[str]:
    network = cluster.facts.network()
    assert network is not None
    return [n for n in netns.namespaces() if n.startswith(f"{netns.PREFIX}-{network.net_id}-")]


@pytest.fixture(scope="module")
def mach3(run_cli: Cli, pgbackups_home: Path) -> Iterator[Cluster]:
    """Three units with TLS, as machines; purged at the end."""
    cluster = Cluster("mach3", pgbackups_home)
    try:
        _ok(run_cli("up", "--name", "mach3", "--units", "3", "--tls", "--machines"))
        yield cluster
    finally:
        if cluster.exists():
            run_cli("down", "--name", "mach3", "--purge")


def test_status_shows_each_unit_on_its_own_address(mach3: Cluster, run_cli: Cli) -> None:
    view = json.loads(_ok(run_cli("status", "--name", "mach3", "--json", "--no-update")))
    network = mach3.facts.network()
    assert network is not None
    assert view["machines"] == str(network.subnet)
    hosts = [u["host"] for u in view["units"]]
    assert hosts == [network.address(f"u{i}") for i in range(3)]
    assert all(ipaddress.ip_address(h) in network.subnet for h in hosts)
    assert view["etcd"]["endpoint"].startswith(f"https://{network.address('dcs')}:")
    assert view["s3"]["endpoint"].startswith(f"https://{network.address('s3')}:")
    assert sorted(_our_namespaces(mach3)) == sorted(
        network.namespace(m) for m in ("sw", "dcs", "s3", "u0", "u1", "u2")
    )


def test_services_listen_on_the_units_address_only(mach3: Cluster) -> None:
    unit = mach3.unit("0")
    ports = (unit.pg_port, unit.rest_port, unit.pgbackrest_port)
    # From another machine: PostgreSQL, Patroni's REST API and the TLS server answer.
    with mach3.facts.inside("u1"):
        for port in ports:
            socket.create_connection((unit.host, port), timeout=5).close()
    # On its own machine's loopback nothing listens (they are bound to the address).
    with mach3.facts.inside("u0"):
        for port in ports:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5)
    # And on the host's loopback neither.
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)


def _replication_connect(cluster: Cluster, host: str, port: int) -> None:
    with psycopg.connect(
        host=host,
        port=port,
        user="replicator",
        password=cluster.passwords().replication,
        dbname="postgres",
        replication="true",
        connect_timeout=5,
        sslmode="disable",
    ):
        pass


def test_pg_hba_admits_replication_from_unit_addresses_only(mach3: Cluster) -> None:
    primary = mach3.primary()
    assert primary is not None
    replica = next(u for u in mach3.units() if u.name != primary.name)
    with mach3.facts.inside(replica.machine):
        _replication_connect(mach3, primary.host, primary.pg_port)
    # The S3 machine is no unit: the right password is not enough.
    with (
        mach3.facts.inside(netns.S3),
        pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"),
    ):
        _replication_connect(mach3, primary.host, primary.pg_port)


def test_certificates_name_the_address(mach3: Cluster) -> None:
    unit = mach3.unit("2")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(unit.paths.tls_cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert f"DNS:{unit.host}" in out and f"IP Address:{unit.host}" in out
    assert "localhost" not in out and "127.0.0.1" not in out


def test_backup_on_a_replica_machine_reaches_the_primary_machine(
    mach3: Cluster, run_cli: Cli
) -> None:
    _ok(run_cli("s3", "set", "--name", "mach3"))
    primary = mach3.primary()
    assert primary is not None
    replica = next(u for u in mach3.units() if u.name != primary.name)
    conf = replica.pgbackrest_config.read_text()
    assert f"host={primary.host}\n" in conf  # the primary's TLS server, by its address
    out = _ok(run_cli("run", "--name", "mach3", replica.name, "create-backup", "--json"))
    result = json.loads(out)
    assert result["status"] == "completed", out
    listed = _ok(run_cli("run", "--name", "mach3", primary.name, "list-backups", "--json"))
    assert result["results"]["backup-id"] in listed


def test_cut_s3_then_heal(mach3: Cluster) -> None:
    """The fault tests' lever: with its cable out the S3 server does not answer (the
    client times out, nothing refuses), and answers again once it is back."""
    s3 = mach3.s3()

    def ready() -> bool:
        return s3server.is_ready(
            s3.port, Path(s3.ca_file), timeout=2, host=s3.host, server_name=s3.host
        )

    with mach3.facts.control():
        assert ready()
        mach3.cut(netns.S3)
        try:
            assert not ready()
            with pytest.raises(TimeoutError):
                socket.create_connection((s3.host, s3.port), timeout=2)
        finally:
            mach3.heal(netns.S3)
        assert ready()


def test_add_and_remove_unit_make_and_remove_its_machine(mach3: Cluster, run_cli: Cli) -> None:
    network = mach3.facts.network()
    assert network is not None
    _ok(run_cli("add-unit", "--name", "mach3"))
    assert network.namespace("u3") in _our_namespaces(mach3)
    assert mach3.unit("3").is_streaming()
    _ok(run_cli("remove-unit", "--name", "mach3", "3"))
    assert network.namespace("u3") not in _our_namespaces(mach3)


def _kill_everything_in(namespaces: list[str]) -> int:
    """SIGKILL every process in the namespaces: a machine's crash, as far as we go."""
    pids = [pid for name in namespaces for pid in netns.namespace_pids(name)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone with its parent already
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_down_and_up_clean_what_a_crash_left_and_the_host_is_unchanged(
    run_cli: Cli, pgbackups_home: Path
) -> None:
    before = _host_network()
    cluster = Cluster("crash2", pgbackups_home)
    try:
        _ok(run_cli("up", "--name", "crash2", "--units", "2", "--machines"))
        names = _our_namespaces(cluster)
        assert len(names) == 5  # switch, dcs, s3, two units
        # Crash: everything dies, the namespaces stay. The next `up` makes a fresh network
        # and starts the cluster again with its data.
        assert _kill_everything_in(names) > 0
        _ok(run_cli("up", "--name", "crash2"))
        assert cluster.unit("1").is_streaming()
        # Crash again: this time `down` cleans up.
        _kill_everything_in(_our_namespaces(cluster))
        _ok(run_cli("down", "--name", "crash2"))
        assert _our_namespaces(cluster) == []
        network = cluster.facts.network()
        assert network is not None and netns.read_record(network.net_id) is None
    finally:
        run_cli("down", "--name", "crash2", "--purge")
    assert _host_network() == before


def test_a_network_whose_cluster_is_gone_is_swept_by_the_next_up(
    run_cli: Cli, pgbackups_home: Path, tmp_path: Path
) -> None:
    """A killed run whose home is gone too (a test run's /tmp home): its network has no
    owner left, and the next `up` anywhere removes it."""
    orphan = next(
        net
        for base in range(31950, 20000, -50)
        if not netns.exists(net := netns.Network.for_block(base))
        and netns.read_record(net.net_id) is None
    )
    netns.create(orphan, ["u0"], home=str(tmp_path / "gone"), cluster="gone")
    # Its creator is dead (this test is alive, so the record is rewritten as a dead one's).
    creator = subprocess.Popen(["true"])
    creator.wait(10)
    (netns.RECORDS_DIR / f"{orphan.net_id}.json").write_text(
        json.dumps(
            {
                "net_id": orphan.net_id,
                "home": str(tmp_path / "gone"),
                "cluster": "gone",
                "pid": creator.pid,
                "pid_start": 1,
            }
        )
    )
    cluster = Cluster("sweeper", pgbackups_home)
    try:
        _ok(run_cli("up", "--name", "sweeper", "--machines"))
        # Gone (another run's up or down on this machine may have swept it first: the
        # sweep is everyone's, which is the point).
        assert not netns.exists(orphan) and netns.describe(orphan) == {}
        assert netns.read_record(orphan.net_id) is None
    finally:
        netns.destroy(orphan)
        if cluster.exists():
            run_cli("down", "--name", "sweeper", "--purge")


def test_machines_need_root_and_a_running_cluster_keeps_its_mode(
    mach3: Cluster, run_cli: Cli
) -> None:
    proc = run_cli("up", "--name", "mach3", "--loopback")
    assert proc.returncode == 2
    assert "exists with its units as machines" in proc.stderr
