"""The scenario's world: a private network, an S3 server on a machine of its own, and
unit machines (network namespace + mount namespace, :mod:`machines.namespaces`).

The network is the local runtime's (:mod:`pgbackups.local.machinery.netns`), with an id
outside the port range local clusters take (:data:`NETWORK`), so it never meets one.
Each unit machine gets per-unit folders bind-mounted over the charm's fixed paths
(:data:`FIXED_PATHS`); a mount point the host lacks (``/etc/pgbackups``...) is made as an
empty folder and removed again at the end. ``/etc/postgresql`` is bound too: the
charm's install runs ``pg_dropcluster``, which must find this machine's (empty) cluster
list, never the host's.

:func:`sweep` undoes what a killed session left: the recorded mount namespaces (and every
process in them) first, then the network and its namespaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from machines import namespaces
from machines.namespaces import MountNamespace, Namespaces
from pgbackups.adapters import certificates, processes
from pgbackups.adapters.certificates import CertificateAuthority
from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery import netns, programs, s3server

log = logging.getLogger(__name__)

# Port block 32000 is past ports.RANGE_END: no local cluster has this network.
NETWORK = netns.Network.for_block(32000)
CLUSTER = "charm-on-machines"
S3_PORT = 9000
PG_BIN = "/usr/lib/postgresql/{version}/bin"
MOUNT_POINTS = "mount-points.json"  # in the home: the host folders made as mount points
# Where the charm keeps its files (MachinePaths), plus /etc/postgresql (see above), and
# who owns the fresh folder bound there (None: root).
FIXED_PATHS: dict[str, tuple[str | None, int]] = {
    "/var/lib/postgresql": ("postgres", 0o755),
    "/var/lib/pgbackups": (None, 0o755),
    "/etc/pgbackups": (None, 0o755),
    "/var/log/pgbackups": (None, 0o755),
    "/var/run/postgresql": ("postgres", 0o2775),
    "/etc/systemd/system": (None, 0o755),
    "/etc/postgresql": ("postgres", 0o755),
}


def _chown(path: Path, user: str | None, mode: int) -> None:
    if user is not None:
        db = processes.db_user()
        os.chown(path, db.uid, db.gid)
    os.chmod(path, mode)


@dataclass(frozen=True)
class UnitMachine:
    name: str
    address: str
    root: Path
    mount: MountNamespace

    @property
    def namespaces(self) -> Namespaces:
        return Namespaces(str(netns.NETNS_DIR / NETWORK.namespace(self.name)), self.mount.pid)

    @property
    def systemd_state(self) -> Path:
        return self.root / "systemd"

    @property
    def log_file(self) -> Path:
        return self.root / "hooks.log"


@dataclass(frozen=True)
class S3Server:
    address: str
    port: int
    credentials: s3server.S3Credentials
    ca: CertificateAuthority
    ca_file: Path
    pid: int

    @property
    def endpoint(self) -> str:
        return f"https://{self.address}:{self.port}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket`` (listed from the S3 machine's
        neighbour, the switch: the operator's workstation)."""
        with netns.inside(NETWORK.switch):
            client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.credentials.access_key,
                aws_secret_access_key=self.credentials.secret_key,
                region_name="us-east-1",
                verify=str(self.ca_file),
                config=Config(
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                keys += [obj["Key"] for obj in page.get("Contents", [])]
            return keys


class World:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.machines: dict[str, UnitMachine] = {}
        self.s3: S3Server | None = None
        self.made_mount_points: list[Path] = []
        self.db: OsUser = processes.db_user()

    # --- the whole world ---------------------------------------------------------------

    def start(self) -> None:
        self.home.chmod(0o755)  # the database user runs rclone from it
        netns.create(NETWORK, [netns.S3], home=str(self.home), cluster=CLUSTER)
        for target in FIXED_PATHS:
            path = Path(target)
            if not path.exists():
                path.mkdir(mode=0o755)
                self.made_mount_points.append(path)
                # Written as it goes: a killed session's sweep removes them too.
                (self.home / MOUNT_POINTS).write_text(
                    json.dumps([str(p) for p in self.made_mount_points])
                )
        self.s3 = self._start_s3()

    def close(self) -> None:
        for name in list(self.machines):
            self.remove_machine(name, grace=5.0)  # the end: nothing to keep
        if self.s3 is not None:
            processes.stop(self.s3.pid, timeout=30)
        _kill_network_processes(NETWORK)  # anything a failed start left running there
        netns.destroy(NETWORK)
        for path in self.made_mount_points:
            with contextlib.suppress(OSError):
                path.rmdir()  # empty: a mount point only, in namespaces now gone
        with contextlib.suppress(OSError):
            namespaces.RECORDS.rmdir()  # when no other session has a record there

    # --- S3 ----------------------------------------------------------------------------

    def _start_s3(self) -> S3Server:
        address = NETWORK.address(netns.S3)
        folder = self.home / "s3"
        for sub, owner in (("", None), ("data", self.db), ("cache", self.db), ("log", self.db)):
            (folder / sub).mkdir(exist_ok=True)
            if owner is not None:
                os.chown(folder / sub, owner.uid, owner.gid)
        ca = certificates.new_authority("charm-on-machines-s3-ca")
        # pgBackRest 2.45 matches the host it dials against DNS names only: the address
        # is a DNS name too (certificates.issue names it both ways).
        leaf = certificates.issue(ca, address, [address])
        ca_file, cert, key = folder / "ca.crt", folder / "s3.crt", folder / "s3.key"
        ca_file.write_text(ca.cert_pem)
        cert.write_text(leaf.cert_pem)
        key.touch(mode=0o600)
        key.write_text(leaf.key_pem)
        os.chown(key, self.db.uid, self.db.gid)
        credentials = s3server.S3Credentials.generate()
        rclone = programs.install_rclone(self.home)
        argv = s3server.argv(
            rclone, data_dir=folder / "data", port=S3_PORT, cert=cert, key=key,
            cache_dir=folder / "cache",
        )  # fmt: skip
        # The local runtime's S3 listens on loopback; this one on its machine's address.
        argv[argv.index("--addr") + 1] = f"{address}:{S3_PORT}"
        with netns.inside(NETWORK.namespace(netns.S3)):
            pid = processes.spawn(
                argv,
                log_file=folder / "log" / "rclone.log",
                user=self.db,
                env=s3server.env(credentials),
            )
        server = S3Server(address, S3_PORT, credentials, ca, ca_file, pid)
        deadline = time.monotonic() + 30
        while not self._s3_ready(server):
            if time.monotonic() > deadline or not processes.is_alive(pid):
                processes.stop(pid, timeout=10)
                raise RuntimeError(f"the S3 server did not start: {folder / 'log'}")
            time.sleep(0.2)
        return server

    @staticmethod
    def _s3_ready(server: S3Server) -> bool:
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        with netns.inside(NETWORK.switch):
            try:
                with (
                    socket.create_connection((server.address, server.port), timeout=1) as raw,
                    ctx.wrap_socket(raw, server_hostname=server.address),
                ):
                    return True
            except (OSError, ssl.SSLError):
                return False

    # --- unit machines -----------------------------------------------------------------

    def add_machine(self, index: int) -> UnitMachine:
        name = netns.unit_machine(index)
        netns.add_machine(NETWORK, name)
        root = self.home / name
        root.mkdir(mode=0o755)
        (root / "systemd").mkdir(mode=0o700)
        binds: dict[str, Path] = {}
        for target, (owner, mode) in FIXED_PATHS.items():
            source = root / "fs" / target.strip("/").replace("/", "-")
            source.mkdir(parents=True)
            _chown(source, owner, mode)
            binds[target] = source
        (root / "fs").chmod(0o755)
        mount = MountNamespace(f"{NETWORK.net_id}-{name}", binds)
        mount.start()
        machine = UnitMachine(name, NETWORK.address(name), root, mount)
        self.machines[name] = machine
        return machine

    def remove_machine(self, name: str, *, grace: float = 20.0) -> None:
        """The machine is shut down, as Juju's remove-machine does: every process in it
        gets SIGTERM (systemd's part at shutdown), SIGKILL after ``grace`` seconds; then
        its namespaces are gone."""
        machine = self.machines.pop(name)
        machine.mount.stop(grace=grace)
        netns.remove_machine(NETWORK, name)

    # --- looking at a machine ----------------------------------------------------------

    def sql(self, machine: UnitMachine, query: str, *, version: str) -> str:
        """``query`` through the machine's own socket, as the superuser (root is let in
        by peer, as on a Juju machine); its output, or RuntimeError."""
        psql = f"{PG_BIN.format(version=version)}/psql"
        result = processes.run(
            machine.namespaces.argv(
                psql, "-h", "/var/run/postgresql", "-p", "5432", "-U", "postgres", "-d",
                "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query,
            ),
            timeout=60,
        )  # fmt: skip
        if not result.ok:
            raise RuntimeError(f"{machine.name}: {query}: {result.stderr.strip()}")
        return result.stdout.strip()


def _kill_network_processes(network: netns.Network) -> None:
    """A namespace that loses its name keeps its processes: they go first."""
    for pid in netns.network_pids(network):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep() -> list[str]:
    """What a killed session left: its mount namespaces (with their processes), then its
    network (other networks are left to their owners)."""
    swept = namespaces.sweep()

    def in_use(record: netns.NetworkRecord) -> bool:
        return record.cluster != CLUSTER or record.creator_alive()

    if netns.available() is None:
        dead = [r for r in netns.records() if r.cluster == CLUSTER and not in_use(r)]
        for record in dead:
            # What still runs on its machines (the S3 server): a namespace that loses its
            # name keeps its processes.
            _kill_network_processes(netns.network_of(record.net_id))
        swept += netns.sweep(in_use)
        for record in dead:
            with contextlib.suppress(OSError, ValueError):
                for made in json.loads((Path(record.home) / MOUNT_POINTS).read_text()):
                    with contextlib.suppress(OSError):
                        Path(made).rmdir()  # only if empty: a mount point and nothing else
            shutil.rmtree(record.home, ignore_errors=True)
    return swept


@contextlib.contextmanager
def world(home: Path) -> Iterator[World]:
    sweep()
    w = World(home)
    try:
        w.start()
        yield w
    finally:
        w.close()
