"""A private network of machines per cluster: Linux network namespaces joined by a bridge.

Each machine (a unit, the S3 server, the DCS) is a network namespace of its own with one
interface, ``eth0``, and one address of the cluster's subnet. Its ``eth0`` is one end of
a veth pair; the other end sits in the cluster's *switch* namespace, on a bridge. The
bridge also has an address (``.1``): a thread that enters the switch namespace is the
operator's workstation, which reaches every machine (the CLI talks to Patroni and S3
from there). Nothing is ever created in the host's own namespace: links are made with
``ip -n SWITCH link add ... peer ... netns MACHINE``, so not even a transient interface
appears on the host, and the host's addresses and routes are never touched. A machine
has no default route: it reaches the other machines of its cluster and its own loopback,
nothing else.

Names carry :data:`PREFIX` and the network's id (``pgbk-n20000-u0``), and a record per
network (``/run/pgbackups/networks/<id>.json``: which home and cluster made it) is
written *before* the first namespace, so that :func:`sweep` can tell a network whose
owner is gone (a killed run, a deleted home) from one in use. Every step is idempotent
(create what is missing, delete what is there) and every command has a timeout.

Processes join a machine through :func:`inside`: the calling *thread* switches its
network namespace (``setns``), so a process it starts (``subprocess`` forks from that
thread) and a socket it opens live in that machine, while the rest of the process stays
where it was. The mount namespace is left alone: machines share the host's files, and
are reached by address (certificates name the address; see docs/local-runtime.md).

Faults and profiles for tests act on the switch's end of a machine's link:
:func:`cut` / :func:`heal` (the cable pulled and plugged back: packets are dropped, so
a client waits for its timeout as it would for a dead machine) and :func:`shape` /
:func:`unshape` (``tc`` netem delay and rate, both directions).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.core.host import CommandResult
from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery.paths import ensure_dir, write_file

log = logging.getLogger(__name__)

PREFIX = "pgbk"
NETNS_DIR = Path("/run/netns")
RECORDS_DIR = Path("/run/pgbackups/networks")
# Every cluster's /24 comes out of this /16, one per port block (see for_block).
SUPERNET = ipaddress.IPv4Network("10.201.0.0/16")
SWITCH = "sw"
BRIDGE = "br0"
MACHINE_IF = "eth0"
DCS = "dcs"
S3 = "s3"
# Host numbers in the subnet: the bridge, the DCS, the S3 server, then units from 10.
_FIXED_HOSTS = {SWITCH: 1, DCS: 2, S3: 3}
_UNIT_HOST_BASE = 10
MAX_UNIT_INDEX = 253 - _UNIT_HOST_BASE
COMMAND_TIMEOUT = 15.0
_CLONE_NEWNET = 0x40000000
_MACHINE_RE = re.compile(r"^(sw|dcs|s3|u[0-9]{1,3})$")
_ID_RE = re.compile(r"^n[0-9]{4,5}$")


class NetworkError(PgbackupsError):
    """A namespace, link or address could not be made, changed or removed."""


@dataclass(frozen=True)
class Network:
    """A cluster's private network: its id (names), and its subnet (addresses)."""

    net_id: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def for_block(cls, base_port: int, *, range_start: int = 20000, block: int = 50) -> Network:
        """The network of the cluster whose port block starts at ``base_port``: blocks are
        unique among this machine's clusters (every home's), and so are their networks."""
        index = (base_port - range_start) // block
        if not 0 <= index < 256 or (base_port - range_start) % block:
            raise NetworkError(f"no network for port block {base_port}")
        subnet = ipaddress.IPv4Network((int(SUPERNET.network_address) + (index << 8), 24))
        return cls(f"n{base_port}", subnet)

    def namespace(self, machine: str) -> str:
        _check_machine(machine)
        return f"{PREFIX}-{self.net_id}-{machine}"

    @property
    def switch(self) -> str:
        return self.namespace(SWITCH)

    def address(self, machine: str) -> str:
        _check_machine(machine)
        if machine in _FIXED_HOSTS:
            host = _FIXED_HOSTS[machine]
        else:
            index = int(machine[1:])
            if index > MAX_UNIT_INDEX:
                raise NetworkError(f"unit index {index} has no address (at most {MAX_UNIT_INDEX})")
            host = _UNIT_HOST_BASE + index
        return str(self.subnet.network_address + host)

    def switch_port(self, machine: str) -> str:
        """The switch's end of a machine's link (at most 15 characters: ``v`` + name)."""
        _check_machine(machine)
        return f"v{machine}"


def unit_machine(index: int) -> str:
    return f"u{index}"


def _check_machine(machine: str) -> None:
    if not _MACHINE_RE.match(machine):
        raise NetworkError(f"not a machine name: {machine!r}")


# --- commands ------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> CommandResult:
    return _run(["ip", *args], check=check)


def _run(argv: Sequence[str], *, check: bool = True) -> CommandResult:
    result = processes.run(argv, timeout=COMMAND_TIMEOUT)
    if check and not result.ok:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise NetworkError(f"{' '.join(argv)}: {detail[-1] if detail else 'failed'}")
    return result


def available() -> str | None:
    """None when this process can make namespaces (root, ``ip`` present), else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    result = processes.run(["ip", "netns", "list"], timeout=COMMAND_TIMEOUT)
    if not result.ok:
        return f"ip netns is not usable here: {(result.stderr or result.stdout).strip()}"
    return None


def namespaces() -> list[str]:
    """Every network namespace with our prefix on this machine."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX + "-"))


def exists(network: Network, machine: str = SWITCH) -> bool:
    return (NETNS_DIR / network.namespace(machine)).exists()


def _links(namespace: str) -> set[str]:
    out = _ip("-n", namespace, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _has_address(namespace: str, device: str, address: str) -> bool:
    out = _ip("-n", namespace, "-o", "-4", "addr", "show", "dev", device).stdout
    return f" {address}/" in out


def _add_namespace(name: str) -> None:
    if not (NETNS_DIR / name).exists():
        result = _ip("netns", "add", name, check=False)
        if not result.ok and not (NETNS_DIR / name).exists():
            raise NetworkError(f"ip netns add {name}: {result.stderr.strip()}")
    _ip("-n", name, "link", "set", "lo", "up")


def host_conflict(subnet: ipaddress.IPv4Network) -> str | None:
    """An address or route of the host's own namespace inside ``subnet``, if any: such a
    subnet is not ours to use, even though no link of ours ever reaches the host."""
    for line in (_ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show").stdout).split(
        "\n"
    ):
        for word in line.split():
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Network(word, strict=False).overlaps(subnet):
                    return line.strip()
    return None


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkRecord:
    """Who made a network: read by :func:`sweep` to tell a leftover from one in use."""

    net_id: str
    home: str
    cluster: str
    pid: int = 0  # the process that made it, and that process's start time
    pid_start: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "net_id": self.net_id,
                "home": self.home,
                "cluster": self.cluster,
                "pid": self.pid,
                "pid_start": self.pid_start,
            }
        )

    def creator_alive(self) -> bool:
        """The process that made the network still runs (an ``up`` in progress, whose
        servers have not started yet)."""
        return (
            self.pid > 0
            and processes.is_alive(self.pid)
            and processes.process_start_time(self.pid) == self.pid_start
        )


def _record_file(net_id: str) -> Path:
    return RECORDS_DIR / f"{net_id}.json"


def read_record(net_id: str) -> NetworkRecord | None:
    try:
        data = json.loads(_record_file(net_id).read_text())
        start = data.get("pid_start")
        return NetworkRecord(
            str(data["net_id"]),
            str(data["home"]),
            str(data["cluster"]),
            int(data.get("pid") or 0),
            int(start) if start is not None else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def records() -> list[NetworkRecord]:
    if not RECORDS_DIR.is_dir():
        return []
    found = []
    for path in sorted(RECORDS_DIR.glob("*.json")):
        record = read_record(path.stem)
        # A record we cannot name a network by is not ours to judge (nor to sweep).
        if record is not None and _ID_RE.match(record.net_id) and record.net_id == path.stem:
            found.append(record)
    return found


def _write_record(record: NetworkRecord) -> None:
    ensure_dir(RECORDS_DIR.parent, mode=0o755)
    ensure_dir(RECORDS_DIR, mode=0o755)
    write_file(_record_file(record.net_id), record.to_json(), mode=0o644)


# --- create, describe, destroy -----------------------------------------------------------


def create(network: Network, machines: Sequence[str], *, home: str, cluster: str) -> None:
    """Make the switch and ``machines`` (what exists already is kept). The record comes
    first: a run killed halfway leaves a network :func:`sweep` can attribute."""
    if not exists(network):
        conflict = host_conflict(network.subnet)
        if conflict is not None:
            raise NetworkError(f"subnet {network.subnet} is in use on this host: {conflict}")
    pid = os.getpid()
    _write_record(
        NetworkRecord(network.net_id, home, cluster, pid, processes.process_start_time(pid))
    )
    switch = network.switch
    _add_namespace(switch)
    if BRIDGE not in _links(switch):
        _ip("-n", switch, "link", "add", BRIDGE, "type", "bridge")
    bridge_address = network.address(SWITCH)
    if not _has_address(switch, BRIDGE, bridge_address):
        _ip("-n", switch, "addr", "add", f"{bridge_address}/24", "dev", BRIDGE)
    _ip("-n", switch, "link", "set", BRIDGE, "up")
    for machine in machines:
        add_machine(network, machine)


def add_machine(network: Network, machine: str) -> None:
    """A machine on the network (idempotent): its namespace, link and address."""
    if machine == SWITCH:
        raise NetworkError("the switch is not a machine")
    switch, name = network.switch, network.namespace(machine)
    if not exists(network):
        raise NetworkError(f"network {network.net_id} has no switch; create it first")
    _add_namespace(name)
    port = network.switch_port(machine)
    if MACHINE_IF not in _links(name):
        if port in _links(switch):  # half a pair, from a run killed in between
            _ip("-n", switch, "link", "del", port)
        _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", MACHINE_IF,
            "netns", name)  # fmt: skip
    _ip("-n", switch, "link", "set", port, "master", BRIDGE)
    _ip("-n", switch, "link", "set", port, "up")
    address = network.address(machine)
    if not _has_address(name, MACHINE_IF, address):
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", MACHINE_IF)
    _ip("-n", name, "link", "set", MACHINE_IF, "up")


def remove_machine(network: Network, machine: str) -> None:
    """Remove a machine's namespace (its link goes with it). Idempotent."""
    name = network.namespace(machine)
    if (NETNS_DIR / name).exists():
        pids = namespace_pids(name)
        if pids:
            log.warning("namespace %s still holds processes %s", name, pids)
        _ip("netns", "del", name, check=False)
    if exists(network) and network.switch_port(machine) in _links(network.switch):
        _ip("-n", network.switch, "link", "del", network.switch_port(machine), check=False)
    if (NETNS_DIR / name).exists():
        raise NetworkError(f"namespace {name} could not be removed")


def describe(network: Network) -> dict[str, str]:
    """The machines of ``network`` that exist now, with their addresses (from the kernel)."""
    found: dict[str, str] = {}
    prefix = f"{PREFIX}-{network.net_id}-"
    for name in namespaces():
        if not name.startswith(prefix):
            continue
        machine = name[len(prefix) :]
        device = BRIDGE if machine == SWITCH else MACHINE_IF
        out = _ip("-n", name, "-o", "-4", "addr", "show", "dev", device, check=False).stdout
        match = re.search(r"inet ([0-9.]+)/", out)
        found[machine] = match.group(1) if match else ""
    return found


def network_pids(network: Network) -> list[int]:
    """Every process in any namespace of ``network``."""
    prefix = f"{PREFIX}-{network.net_id}-"
    return [pid for name in namespaces() if name.startswith(prefix) for pid in namespace_pids(name)]


def namespace_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(w) for w in out.split() if w.isdigit()]


def destroy(network: Network) -> list[str]:
    """Remove every namespace of ``network`` (machines first, then the switch) and its
    record; returns what was removed. Idempotent."""
    removed = []
    prefix = f"{PREFIX}-{network.net_id}-"
    names = [n for n in namespaces() if n.startswith(prefix)]
    for name in sorted(names, key=lambda n: n.endswith(f"-{SWITCH}")):
        pids = namespace_pids(name)
        if pids:
            log.warning("namespace %s still holds processes %s", name, pids)
        _ip("netns", "del", name, check=False)
        if (NETNS_DIR / name).exists():
            raise NetworkError(f"namespace {name} could not be removed")
        removed.append(name)
    with contextlib.suppress(FileNotFoundError):
        _record_file(network.net_id).unlink()
    return removed


def network_of(net_id: str) -> Network:
    if not _ID_RE.match(net_id):
        raise NetworkError(f"not a network id: {net_id!r}")
    return Network.for_block(int(net_id[1:]))


def leftovers(in_use: Callable[[NetworkRecord], bool]) -> list[str]:
    """What :func:`sweep` would remove now: the namespaces of every network whose record
    ``in_use`` says is nobody's, and namespaces of ours no record explains and no process
    uses."""
    found: list[str] = []
    recorded = {r.net_id: r for r in records()}
    for name in namespaces():
        parts = name.split("-")
        record = recorded.get(parts[1]) if len(parts) == 3 else None
        if record is not None:
            if not in_use(record):
                found.append(name)
        elif not namespace_pids(name):
            found.append(name)
    return found


def sweep(in_use: Callable[[NetworkRecord], bool]) -> list[str]:
    """Remove what killed runs left (see :func:`leftovers`), records included. Returns
    the namespaces removed."""
    removed: list[str] = []
    for record in records():
        if not in_use(record):
            log.info("removing network %s left by cluster %s", record.net_id, record.cluster)
            removed += destroy(network_of(record.net_id))
    recorded = {r.net_id for r in records()}
    for name in namespaces():
        parts = name.split("-")
        if len(parts) == 3 and parts[1] in recorded:
            continue
        if namespace_pids(name):
            log.warning("namespace %s has no record but holds processes; left alone", name)
            continue
        _ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


# --- running in a machine ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetworkError(f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``namespace`` (a name from
    :meth:`Network.namespace`); the thread's own namespace comes back afterwards. A
    process started in the block (forked from this thread) and a socket opened in it
    stay in ``namespace`` for their whole life."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(own)
        raise NetworkError(f"no network namespace {namespace} (is the cluster up?)") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def enter(namespace: str) -> None:
    """Move this thread into ``namespace`` for good (the CLI: the operator's workstation is
    the switch); threads it starts afterwards start there too."""
    try:
        fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetworkError(f"no network namespace {namespace} (is the cluster up?)") from None
    try:
        _setns(fd)
    finally:
        os.close(fd)


# --- faults and profiles (for tests) ---------------------------------------------------------


def cut(network: Network, machine: str) -> None:
    """Pull the machine's cable: its switch port goes down, packets to and from it are
    dropped (no error reaches a client: it waits for its timeout)."""
    _ip("-n", network.switch, "link", "set", network.switch_port(machine), "down")


def heal(network: Network, machine: str) -> None:
    """Plug the cable back (the port stays on the bridge while down)."""
    _ip("-n", network.switch, "link", "set", network.switch_port(machine), "up")


def shape(
    network: Network,
    machine: str,
    *,
    rate: str | None,
    delay_ms: float = 0,
    burst: str = "32kbit",
) -> None:
    """A network profile on the machine's link, each way: at most ``rate`` (a tc rate:
    ``10mbit``, ``512kbit``) and ``delay_ms`` of added latency. A rate alone is a token
    bucket (tbf) of ``burst`` bits; a delay needs netem, which some kernels lack (then
    NetworkError says so). Replaces any profile the link had."""
    if rate is not None and not _TC_BITS.fullmatch(rate):
        raise NetworkError(f"not a tc rate: {rate!r}")
    if not _TC_BITS.fullmatch(burst):
        raise NetworkError(f"not a tc burst: {burst!r}")
    if not 0 <= delay_ms <= 60_000:
        raise NetworkError(f"delay out of range: {delay_ms}")
    if delay_ms:
        qdisc = ["netem", "delay", f"{delay_ms:g}ms"] + (["rate", rate] if rate else [])
    elif rate:
        # A burst of 32 kbit keeps short exchanges (a TLS handshake) from going through
        # at line speed while the rate still bounds every transfer that matters.
        # (A fast link needs a larger burst: the timer refills the bucket in steps, so a
        # burst below one step's worth of bytes caps the rate below ``rate``.)
        qdisc = ["tbf", "rate", rate, "burst", burst, "latency", "400ms"]
    else:
        raise NetworkError("a profile needs a rate or a delay")
    for namespace, device in _both_ends(network, machine):
        result = _run(
            ["tc", "-n", namespace, "qdisc", "replace", "dev", device, "root", *qdisc],
            check=False,
        )
        if not result.ok:
            unshape(network, machine)
            why = (result.stderr or result.stdout).strip()
            if "unknown" in why and qdisc[0] == "netem":
                why = "this kernel has no netem (sch_netem): a delay cannot be added"
            raise NetworkError(f"cannot shape {machine}'s link: {why}")


_TC_BITS = re.compile(r"[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)")


def unshape(network: Network, machine: str) -> None:
    """Back to the plain link (idempotent)."""
    for namespace, device in _both_ends(network, machine):
        _run(["tc", "-n", namespace, "qdisc", "del", "dev", device, "root"], check=False)


def profile(network: Network, machine: str) -> str:
    """The qdisc on the switch's end of the machine's link, as ``tc`` shows it."""
    port = network.switch_port(machine)
    return _run(["tc", "-n", network.switch, "qdisc", "show", "dev", port]).stdout.strip()


def _both_ends(network: Network, machine: str) -> list[tuple[str, str]]:
    return [
        (network.switch, network.switch_port(machine)),
        (network.namespace(machine), MACHINE_IF),
    ]
