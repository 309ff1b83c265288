"""A block of loopback ports per cluster.

Block layout (``base`` = first port of the block)::

    base+0 etcd client   base+1 etcd peer   base+2 S3 (rclone)
    base+10+3i PostgreSQL of unit i, base+11+3i its Patroni REST API,
    base+12+3i its pgBackRest TLS server

Blocks live in 20000-31999: below the kernel's ephemeral range (32768+), away from
5432 and etcd's 2379/2380. A block is taken when any of its ports cannot be bound on
127.0.0.1 or when another cluster's state claims it (a stopped cluster keeps its
ports, so that ``up`` restarts it on the same ones).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery import netns
from pgbackups.local.machinery.paths import DEFAULT_ROOT_HOME, clusters_dir

log = logging.getLogger(__name__)

RANGE_START = 20000
RANGE_END = 32000
BLOCK_SIZE = 50
UNIT_OFFSET = 10
PORTS_PER_UNIT = 3
MAX_UNITS = (BLOCK_SIZE - UNIT_OFFSET) // PORTS_PER_UNIT  # 13
FORBIDDEN = frozenset({5432, 2379, 2380})


def unit_ports(base: int, index: int) -> tuple[int, int, int]:
    """(postgresql, patroni REST, pgBackRest TLS server) ports of unit ``index``."""
    if not 0 <= index < MAX_UNITS:
        raise PgbackupsError(f"a local cluster has at most {MAX_UNITS} units (index {index})")
    first = base + UNIT_OFFSET + PORTS_PER_UNIT * index
    return first, first + 1, first + 2


def shared_ports(base: int) -> tuple[int, int, int]:
    """(etcd client, etcd peer, S3) ports of the block."""
    return base, base + 1, base + 2


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now (TIME_WAIT does not count)."""
    if port in FORBIDDEN:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_free(port: int, what: str, host: str = "127.0.0.1") -> None:
    """Refuse to start ``what`` on a port another program holds (one message everywhere)."""
    if not port_is_free(port, host):
        raise PgbackupsError(f"port {port} ({what}) is taken by another program")


def claimed_bases(home: Path) -> set[int]:
    """Block bases recorded in the state of every cluster under ``home``."""
    bases: set[int] = set()
    root = clusters_dir(home)
    if not root.is_dir():
        return bases
    for entry in root.iterdir():
        try:
            data = json.loads((entry / "state.json").read_text())
            bases.add(int(data["ports"]["base"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return bases


@contextlib.contextmanager
def allocation_lock(home: Path) -> Iterator[None]:
    """Serialises allocations, so that two ``up`` never pick the same block."""
    # The home is root's when we are root (paths.check_home): no link to follow here.
    fd = os.open(home / ".ports.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _first_block(home: Path) -> int:
    """The default home starts at the bottom of the range; another home (a test run)
    starts at a spot derived from its path, so concurrent homes rarely race."""
    n_blocks = (RANGE_END - RANGE_START) // BLOCK_SIZE
    if home == DEFAULT_ROOT_HOME:
        return 0
    return zlib.crc32(str(home).encode()) % n_blocks


def block_ports(base: int, units: int) -> list[int]:
    ports = list(shared_ports(base))
    for i in range(units):
        ports.extend(unit_ports(base, i))
    return ports


def _network_taken(base: int) -> bool:
    """A cluster of another home has this block's network (machines listen on their own
    addresses, so its ports look free on 127.0.0.1)."""
    network = netns.Network.for_block(base, range_start=RANGE_START, block=BLOCK_SIZE)
    return netns.exists(network) or netns.read_record(network.net_id) is not None


def allocate_block(home: Path, units: int) -> int:
    """A free block for a cluster of ``units`` units. Call under :func:`allocation_lock`
    and record the base in the cluster state before releasing it."""
    claimed = claimed_bases(home)
    n_blocks = (RANGE_END - RANGE_START) // BLOCK_SIZE
    start = _first_block(home)
    for k in range(n_blocks):
        base = RANGE_START + BLOCK_SIZE * ((start + k) % n_blocks)
        if base in claimed or _network_taken(base):
            continue
        if all(port_is_free(p) for p in block_ports(base, units)):
            log.debug("allocated port block %d", base)
            return base
    raise PgbackupsError(f"no free block of {BLOCK_SIZE} ports in {RANGE_START}-{RANGE_END}")
