"""A session killed half-way leaves a network, machines, mounts and processes behind;
the next session's sweep removes all of it, and leaves the host as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from machines import namespaces
from machines.world import FIXED_PATHS, NETWORK, sweep
from pgbackups.adapters import processes
from pgbackups.local.machinery import netns

pytestmark = pytest.mark.real

CHARM = Path(__file__).resolve().parents[2]

# A session that made its world, a machine with a process on it, and was killed.
KILLED_SESSION = textwrap.dedent(
    """
    import os, signal, subprocess, sys
    from pathlib import Path
    from machines.world import World
    world = World(Path(sys.argv[1]))
    world.start()
    machine = world.add_machine(0)
    worker = subprocess.Popen(machine.namespaces.argv("sleep", "600"), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(machine.mount.pid, worker.pid, world.s3.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def host_view() -> tuple[str, str, list[str]]:
    def ip(*args: str) -> str:
        return processes.run(["ip", *args], timeout=30).stdout

    return ip("-o", "addr", "show"), ip("route", "show"), sorted(os.listdir("/"))


def test_a_killed_sessions_world_is_swept(tmp_path: Path) -> None:
    why = netns.available()
    if why is not None:
        pytest.skip(why)
    sweep()
    before = host_view()
    mount_points_before = {p: Path(p).exists() for p in FIXED_PATHS}
    home = Path(tempfile.mkdtemp(prefix="pgbackups-charm-machines-", dir="/tmp"))
    env = dict(os.environ, PYTHONPATH=f"{CHARM / 'src'}:{CHARM / 'tests'}")
    run = subprocess.run(
        [sys.executable, "-c", KILLED_SESSION, str(home)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == -9, run.stderr
    sleeper, worker, s3 = (int(w) for w in run.stdout.split())
    # What it left: its network, the machine's mount namespace (with a process in it),
    # the S3 server, the records.
    assert set(netns.describe(NETWORK)) == {"sw", "s3", "u0"}
    assert all(processes.is_alive(p) for p in (sleeper, worker, s3))
    assert list(namespaces.RECORDS.glob("*.json"))

    swept = sweep()

    assert NETWORK.namespace("u0") in swept
    assert netns.describe(NETWORK) == {}
    assert not any(processes.is_alive(p) for p in (sleeper, worker, s3))
    assert not list(namespaces.RECORDS.glob("*.json"))
    assert not home.exists()
    assert {p: Path(p).exists() for p in FIXED_PATHS} == mount_points_before
    assert host_view() == before
