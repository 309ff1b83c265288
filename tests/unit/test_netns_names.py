"""The pure part of machinery/netns.py: a cluster's network id, subnet, namespace names
and addresses (the real namespaces are tests/integration/test_netns.py's)."""

from __future__ import annotations

import ipaddress

import pytest

from pgbackups.local.machinery import netns
from pgbackups.local.machinery.netns import Network, NetworkError


def test_each_port_block_has_its_own_subnet_inside_the_supernet() -> None:
    first, second, last = (Network.for_block(b) for b in (20000, 20050, 31950))
    assert (first.net_id, str(first.subnet)) == ("n20000", "10.201.0.0/24")
    assert (second.net_id, str(second.subnet)) == ("n20050", "10.201.1.0/24")
    assert str(last.subnet) == "10.201.239.0/24"
    subnets = {Network.for_block(b).subnet for b in range(20000, 32000, 50)}
    assert len(subnets) == 240
    assert all(s.subnet_of(netns.SUPERNET) for s in subnets)


def test_names_and_addresses_of_the_machines() -> None:
    net = Network.for_block(20150)
    assert net.switch == "pgbk-n20150-sw"
    assert net.namespace("u12") == "pgbk-n20150-u12"
    assert [net.address(m) for m in ("sw", "dcs", "s3", "u0", "u12")] == [
        "10.201.3.1", "10.201.3.2", "10.201.3.3", "10.201.3.10", "10.201.3.22",
    ]  # fmt: skip
    assert net.switch_port("u12") == "vu12" and len(net.switch_port("u999")) <= 15
    assert ipaddress.ip_address(net.address(f"u{netns.MAX_UNIT_INDEX}")) in net.subnet


@pytest.mark.parametrize("machine", ["", "u", "x1", "u1; rm", "../u1", "U1", "u1234", "sw0"])
def test_a_machine_name_outside_the_allow_list_is_refused(machine: str) -> None:
    with pytest.raises(NetworkError, match="not a machine name"):
        Network.for_block(20000).namespace(machine)


@pytest.mark.parametrize("base", [19950, 20001, 20000 + 50 * 256])
def test_a_block_without_a_network_is_refused(base: int) -> None:
    with pytest.raises(NetworkError, match="no network for port block"):
        Network.for_block(base)


def test_unit_index_beyond_the_subnet_is_refused() -> None:
    with pytest.raises(NetworkError, match="has no address"):
        Network.for_block(20000).address(f"u{netns.MAX_UNIT_INDEX + 1}")


@pytest.mark.parametrize("net_id", ["n20000", "n31950"])
def test_network_of_an_id(net_id: str) -> None:
    assert netns.network_of(net_id).net_id == net_id


@pytest.mark.parametrize("net_id", ["x20000", "n2", "n20000/../x", ""])
def test_network_of_a_bad_id_is_refused(net_id: str) -> None:
    with pytest.raises(NetworkError, match="not a network id"):
        netns.network_of(net_id)
