"""A machine's own file system view, and running Python code on a machine.

A machine of the scenario is a network namespace (its own address: the network module of
the local runtime) plus a mount namespace in which per-unit folders are bind-mounted over
the charm's fixed paths (``MachinePaths``: ``/var/lib/postgresql``, ``/etc/pgbackups``...),
so that the charm's code runs with its production paths and three units never share a
file. The mount namespace is held by a sleeper (``unshare --mount --propagation private``):
its mounts exist only there, and vanish with the last process in it. The host's own
mounts are never touched.

Every sleeper is recorded in :data:`RECORDS` (its PID and start time) before a mount is
made, so that a session killed half-way is swept by the next one (:func:`sweep`): every
process still in such a namespace is stopped, then the sleeper.

:func:`call_in` runs a function in a forked child that entered a machine's namespaces
(``setns``, through libc: Python 3.11 has no ``os.setns``) and sends its result back
pickled over a pipe: that is how a hook runs "on" a machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import pickle
import select
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pgbackups.adapters import processes

log = logging.getLogger(__name__)

# Records of this scenario's sleepers, root's, on tmpfs: a reboot clears them with the
# namespaces they name.
RECORDS = Path("/run/pgbackups-charm-machines")
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CALL_TIMEOUT = 600.0

T = TypeVar("T")


class MachineCallError(RuntimeError):
    """The function run on a machine raised (its traceback is the message)."""


def _setns(path: str, nstype: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Namespaces:
    """Where a machine's namespaces are: its network namespace's file, and the PID of
    the sleeper that holds its mount namespace."""

    net: str
    mount_pid: int

    @property
    def mnt(self) -> str:
        return f"/proc/{self.mount_pid}/ns/mnt"

    def enter(self) -> None:
        """Move this (single-threaded, forked) process into the machine."""
        _setns(self.net, CLONE_NEWNET)
        _setns(self.mnt, CLONE_NEWNS)
        os.chdir("/")  # the old working directory is the host's view

    def argv(self, *command: str) -> list[str]:
        """``command`` run on the machine (for a subprocess from the host)."""
        return ["nsenter", f"--net={self.net}", f"--mount={self.mnt}", "--", *command]


def call_in(
    where: Namespaces,
    fn: Callable[..., T],
    *args: Any,
    timeout: float = CALL_TIMEOUT,
    prepare: Callable[[], None] | None = None,
) -> T:
    """``fn(*args)`` in a forked child inside ``where``; its result comes back pickled.
    ``prepare`` runs in the child after it entered (the systemd stand-in, say). An
    exception in the child is raised here as :class:`MachineCallError` with its
    traceback; a child still running after ``timeout`` is killed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        status = 0
        try:
            os.close(read_fd)
            where.enter()
            if prepare is not None:
                prepare()
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            payload = pickle.dumps(("error", traceback.format_exc()))
            status = 1
        try:
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"{getattr(fn, '__name__', fn)} on a machine: over {timeout}s")
            ready, _, _ = select.select([read_fd], [], [], min(left, 5.0))
            if ready:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    if not chunks:
        raise MachineCallError("the machine's child died without an answer")
    kind, value = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's bytes
    if kind == "error":
        raise MachineCallError(str(value))
    result: T = value
    return result


class MountNamespace:
    """A mount namespace held by a sleeper, with ``binds`` (target → source folder)
    mounted in it. Recorded in :data:`RECORDS` under ``name`` before any mount."""

    def __init__(self, name: str, binds: Mapping[str, Path]) -> None:
        self.name = name
        self.binds = dict(binds)
        self.pid = 0
        self.start_time: int | None = None

    @property
    def record(self) -> Path:
        return RECORDS / f"{self.name}.json"

    def start(self) -> None:
        RECORDS.mkdir(mode=0o700, exist_ok=True)
        sleeper = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = sleeper.pid
        self.start_time = processes.process_start_time(self.pid)
        owner = os.getpid()
        self.record.write_text(
            json.dumps(
                {
                    "pid": self.pid,
                    "start_time": self.start_time,
                    # a sweep leaves a session that still runs alone
                    "owner": owner,
                    "owner_start_time": processes.process_start_time(owner),
                }
            )
        )
        ours = _ns_inode("self", "mnt")
        deadline = time.monotonic() + 10
        while _ns_inode(self.pid, "mnt") in (ours, None):  # unshare has not run yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the mount namespace was not made")
            time.sleep(0.01)
        for target, source in self.binds.items():
            result = processes.run(
                ["nsenter", f"--target={self.pid}", "--mount", "--", "mount", "--bind",
                 str(source), target],
                timeout=30,
            )  # fmt: skip
            if not result.ok:
                raise RuntimeError(f"{self.name}: bind {source} on {target}: {result.stderr}")

    def stop(self, *, grace: float = 20.0) -> None:
        """Stop every process in the namespace (SIGTERM, SIGKILL after ``grace``), then
        the sleeper: the mounts go with it."""
        stop_namespace(self.pid, self.start_time, grace=grace)
        self.record.unlink(missing_ok=True)


def processes_in_mount_namespace(inode: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and _ns_inode(name, "mnt") == inode:
            found.append(int(name))
    return found


def stop_namespace(pid: int, start_time: int | None, *, grace: float = 20.0) -> None:
    """Stop what runs in the mount namespace the sleeper ``pid`` holds (if that sleeper
    is still the one recorded), gently first, then the sleeper."""
    if start_time is None or processes.process_start_time(pid) != start_time:
        return  # gone, or the PID is someone else's now
    inode = _ns_inode(pid, "mnt")
    if inode is None or inode == _ns_inode("self", "mnt"):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        others = [p for p in processes_in_mount_namespace(inode) if p != pid]
        for other in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, sig)
        deadline = time.monotonic() + wait
        while others and time.monotonic() < deadline:
            others = [p for p in others if processes.is_alive(p)]
            time.sleep(0.1)
        if not others:
            break
    processes.stop(pid, timeout=5)


def sweep() -> list[str]:
    """Stop the namespaces a killed session recorded; returns their names."""
    swept: list[str] = []
    if not RECORDS.is_dir():
        return swept
    for record in sorted(RECORDS.glob("*.json")):
        try:
            data = json.loads(record.read_text())
            owner = data.get("owner")
            if owner and processes.process_start_time(int(owner)) == data.get("owner_start_time"):
                continue  # its session still runs
            stop_namespace(int(data["pid"]), data.get("start_time"), grace=5.0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sweep: %s: %s", record, exc)
        record.unlink(missing_ok=True)
        swept.append(record.stem)
    with contextlib.suppress(OSError):
        RECORDS.rmdir()  # empty: no session left a record
    return swept
