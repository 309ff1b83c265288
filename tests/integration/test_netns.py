"""The private network of machines (machinery/netns.py) with real namespaces, links and
``tc``: machines reach each other, the host is left exactly as it was, a killed run's
leftovers are swept, and cut/heal/shape do to a link what they say."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackups.local.machinery import netns
from pgbackups.local.machinery.netns import Network

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


def _host_network() -> tuple[str, str, str]:
    """The host's own addresses, routes and links, as ``ip`` prints them."""

    def ip(*args: str) -> str:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    return ip("-o", "addr", "show"), ip("route", "show", "table", "all"), ip("-o", "link", "show")


def _free_network() -> Network:
    """A block no cluster and no other test uses (top of the range, downwards)."""
    for base in range(31950, 20000, -50):
        network = Network.for_block(base)
        if not netns.exists(network) and netns.read_record(network.net_id) is None:
            return network
    raise AssertionError("no free network block")


@pytest.fixture
def network() -> Iterator[Network]:
    before = _host_network()
    net = _free_network()
    try:
        yield net
    finally:
        netns.destroy(net)
        # The host is as it was: no address, route or link was added, even for a moment
        # that outlived the test.
        assert _host_network() == before


class Server:
    """A TCP server in a machine that counts who connected (from which address)."""

    def __init__(self, namespace: str, address: str, port: int = 5555) -> None:
        with netns.inside(namespace):
            self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.peers: list[str] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.peers.append(peer[0])
            conn.sendall(b"machine\n")
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def _banner(address: str, port: int = 5555, timeout: float = 3) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        return conn.recv(64)


def test_machines_reach_each_other_and_host_is_unchanged(network: Network) -> None:
    netns.create(network, ["u0", "u1", netns.S3], home="/nonexistent", cluster="t")
    netns.create(network, ["u0", "u1", netns.S3], home="/nonexistent", cluster="t")  # again

    assert netns.describe(network) == {
        "sw": network.address("sw"),
        "u0": network.address("u0"),
        "u1": network.address("u1"),
        "s3": network.address("s3"),
    }
    # Nothing of ours in the host's own links, even while the network is up.
    host_links = _host_network()[2]
    assert "vu0" not in host_links and netns.BRIDGE not in host_links

    server = Server(network.namespace("u1"), network.address("u1"))
    try:
        with netns.inside(network.namespace("u0")):
            assert _banner(network.address("u1")) == b"machine\n"
        with netns.inside(network.namespace(netns.S3)):
            assert _banner(network.address("u1")) == b"machine\n"
        with netns.inside(network.switch):  # the operator's workstation reaches it too
            assert _banner(network.address("u1")) == b"machine\n"
        # A process started inside a machine is in it (it inherits the thread's namespace).
        with netns.inside(network.namespace("u0")):
            out = subprocess.run(
                ["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        assert f"inet {network.address('u0')}/24" in out
        assert server.peers == [
            network.address("u0"),
            network.address("s3"),
            network.address("sw"),
        ]
    finally:
        server.close()


def test_host_reaches_no_machine(network: Network) -> None:
    """From the host's own interfaces the machine's address goes wherever the host's
    default route leads (here a sandbox may even answer the SYN): never to the machine."""
    netns.create(network, ["u0"], home="/nonexistent", cluster="t")
    server = Server(network.namespace("u0"), network.address("u0"))
    try:
        try:
            reply = _banner(network.address("u0"), timeout=2)
        except OSError:
            reply = b""
        assert reply != b"machine\n"
        assert server.peers == []
        # And a machine has no route out: the host's default gateway is unreachable.
        with netns.inside(network.namespace("u0")):
            with pytest.raises(OSError):
                socket.create_connection(("192.0.2.1", 80), timeout=2)
            with pytest.raises(OSError):
                socket.create_connection(("1.1.1.1", 443), timeout=2)
    finally:
        server.close()


def test_add_and_remove_a_machine(network: Network) -> None:
    netns.create(network, ["u0"], home="/nonexistent", cluster="t")
    netns.add_machine(network, "u3")
    assert netns.describe(network)["u3"] == network.address("u3")
    netns.remove_machine(network, "u3")
    netns.remove_machine(network, "u3")  # idempotent
    assert "u3" not in netns.describe(network)
    assert (
        "vu3"
        not in subprocess.run(
            ["ip", "-n", network.switch, "-o", "link"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    )
    assert netns.destroy(network) == [network.namespace("u0"), network.switch]
    assert netns.destroy(network) == []
    assert netns.describe(network) == {}


_KILLED_RUN = """
import os, signal, sys
from pgbackups.local.machinery import netns
from pgbackups.local.machinery.netns import Network
net = Network.for_block(int(sys.argv[1]))
netns.create(net, ["u0", "u1"], home=sys.argv[2], cluster="killed")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sweep_removes_what_a_killed_run_left(network: Network, tmp_path: Path) -> None:
    gone_home = tmp_path / "deleted-home"
    base = int(network.net_id[1:])
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(base), str(gone_home)], timeout=60, check=False
    )
    assert run.returncode == -9
    assert set(netns.describe(network)) == {"sw", "u0", "u1"}
    assert netns.read_record(network.net_id) is not None

    def in_use(record: netns.NetworkRecord) -> bool:
        # Only this test's network is judged: other runs' networks are not ours to sweep.
        return record.net_id != network.net_id or Path(record.home).exists()

    expected = sorted(network.namespace(m) for m in ("sw", "u0", "u1"))
    assert sorted(
        n for n in netns.leftovers(in_use) if n.startswith(f"pgbk-{network.net_id}-")
    ) == (expected)
    removed = netns.sweep(in_use)
    assert sorted(removed) == expected
    assert netns.describe(network) == {}
    assert netns.read_record(network.net_id) is None


def test_sweep_keeps_a_network_in_use(network: Network, tmp_path: Path) -> None:
    netns.create(network, ["u0"], home=str(tmp_path), cluster="live")
    removed = netns.sweep(
        lambda record: record.net_id != network.net_id or Path(record.home).exists()
    )
    assert network.namespace("u0") not in removed and network.switch not in removed
    assert set(netns.describe(network)) == {"sw", "u0"}


def test_cut_then_heal(network: Network) -> None:
    netns.create(network, ["u0", "u1"], home="/nonexistent", cluster="t")
    server = Server(network.namespace("u1"), network.address("u1"))
    try:
        netns.cut(network, "u1")
        # The cable is out: no refusal comes back, the client times out.
        with netns.inside(network.namespace("u0")), pytest.raises(TimeoutError):
            _banner(network.address("u1"), timeout=2)
        netns.heal(network, "u1")
        with netns.inside(network.namespace("u0")):
            assert _banner(network.address("u1"), timeout=5) == b"machine\n"
    finally:
        server.close()


def test_shape_bounds_the_rate(network: Network) -> None:
    """512 kbit/s: 128 KiB take at least ~1.5 s (a lower bound: a slow machine only makes
    it longer); without the profile the same transfer is not bounded any more."""
    netns.create(network, ["u0", "u1"], home="/nonexistent", cluster="t")
    payload = b"x" * (128 * 1024)
    with netns.inside(network.namespace("u1")):
        sink = socket.create_server((network.address("u1"), 5556))
    received: list[int] = []

    def drain() -> None:
        for _ in range(2):
            conn, _peer = sink.accept()
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            received.append(total)
            conn.close()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()

    def send() -> float:
        with netns.inside(network.namespace("u0")):
            start = time.monotonic()
            with socket.create_connection((network.address("u1"), 5556), timeout=30) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # the sink closes once it has it all
            return time.monotonic() - start

    try:
        netns.shape(network, "u1", rate="512kbit")
        assert "tbf" in netns.profile(network, "u1") and "512Kbit" in netns.profile(network, "u1")
        assert send() >= 1.5
        netns.unshape(network, "u1")
        assert "tbf" not in netns.profile(network, "u1")
        send()
        thread.join(30)
        assert received == [len(payload), len(payload)]
    finally:
        sink.close()


def test_shape_refuses_bad_values(network: Network) -> None:
    netns.create(network, ["u0"], home="/nonexistent", cluster="t")
    with pytest.raises(netns.NetworkError, match="not a tc rate"):
        netns.shape(network, "u0", rate="10mbit; reboot")
    with pytest.raises(netns.NetworkError, match="not a tc burst"):
        netns.shape(network, "u0", rate="10mbit", burst="1mb; reboot")
    # A fast link's bucket (the benchmark's lan profile): tc takes it.
    netns.shape(network, "u0", rate="10gbit", burst="40000kbit")
    assert "10Gbit" in netns.profile(network, "u0")
    netns.unshape(network, "u0")
    with pytest.raises(netns.NetworkError, match="needs a rate or a delay"):
        netns.shape(network, "u0", rate=None)
    with pytest.raises(netns.NetworkError, match="not a machine name"):
        network.namespace("../etc")


def test_delay_needs_netem(network: Network) -> None:
    """Where the kernel has netem the delay is there; where it has not, the error says so."""
    netns.create(network, ["u0", "u1"], home="/nonexistent", cluster="t")
    try:
        netns.shape(network, "u1", rate=None, delay_ms=200)
    except netns.NetworkError as exc:
        assert "no netem" in str(exc)
        assert "netem" not in netns.profile(network, "u1")
        return
    server = Server(network.namespace("u1"), network.address("u1"))
    try:
        with netns.inside(network.namespace("u0")):
            start = time.monotonic()
            assert _banner(network.address("u1"), timeout=10) == b"machine\n"
        assert time.monotonic() - start >= 0.4  # two round trips of 2 x 200 ms at least
    finally:
        server.close()
