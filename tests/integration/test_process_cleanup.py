"""No process outlives its operation: a daemon's orphans are stopped with it, `down`
stops whatever still uses the cluster's directories, and a reused PID is never
signalled (real processes, no cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from realservers import wait_for

from pgbackups.adapters import processes
from pgbackups.local.machinery.state import ClusterState, ProcessRecord, UnitRecord
from pgbackups.local.progress import Progress
from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]
# A daemon like Patroni: it starts a child (as Patroni starts `pgbackrest restore`),
# writes the child's PID, and waits. Killed, its child is re-parented and lives on.
DAEMON = """
import pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(300)
"""


@pytest.fixture
def started() -> Iterator[list[int]]:
    """PIDs a test started; whatever is left of them is killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if processes.is_alive(pid):
            processes.stop(pid, timeout=1, sig=signal.SIGKILL)


def _daemon(tmp_path: Path, started: list[int]) -> tuple[ProcessRecord, int]:
    pid_file = tmp_path / "child.pid"
    pid = processes.spawn(
        [sys.executable, "-c", DAEMON, str(pid_file)], log_file=tmp_path / "daemon.log"
    )
    started.append(pid)
    wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", 15, "the child")
    child = int(pid_file.read_text())
    started.append(child)
    return ProcessRecord.of(pid), child


def _kill(record: ProcessRecord, child: int) -> None:
    processes.stop(record.pid, timeout=5, sig=signal.SIGKILL)  # reaps it too
    info = processes.process_info(child)
    assert info is not None, "the child died with its daemon: nothing to test"
    assert info.ppid != record.pid and info.session == record.pid


def _ppid(pid: int) -> int | None:
    info = processes.process_info(pid)
    return info.ppid if info else None


def test_stop_session_stops_the_orphan_of_a_killed_daemon(
    tmp_path: Path, started: list[int]
) -> None:
    record, child = _daemon(tmp_path, started)
    _kill(record, child)
    ok, stopped = processes.stop_session(record.pid, record.start_time, timeout=5)
    assert ok
    assert [p.pid for p in stopped] == [child]
    assert not processes.is_alive(child)


def test_stop_session_stops_the_daemon_then_its_children(
    tmp_path: Path, started: list[int]
) -> None:
    record, child = _daemon(tmp_path, started)
    ok, stopped = processes.stop_session(record.pid, record.start_time, timeout=5)
    assert ok
    assert not processes.is_alive(record.pid)
    assert [p.pid for p in stopped] == [child]
    assert not processes.is_alive(child)


def _cluster_with_unit(home: Path, process: ProcessRecord | None) -> Cluster:
    cluster = Cluster("cleanup", home)
    cluster.paths.root.mkdir(parents=True)
    cluster.store.create(
        ClusterState(
            name="cleanup",
            uuid="00000000-0000-0000-0000-000000000000",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            base_port=29900,
            etcd_client_port=29900,
            etcd_peer_port=29901,
            s3_port=29902,
            bucket="pgbackups",
            tls=False,
            leader="cleanup/0",
            units={"cleanup/0": UnitRecord(0, 29910, 29911, 29912, process=process)},
        )
    )
    return cluster


@pytest.mark.parametrize("patroni", ["killed", "running"])
def test_down_stops_what_the_units_patroni_left(
    tmp_path: Path, started: list[int], patroni: str
) -> None:
    record, child = _daemon(tmp_path, started)
    if patroni == "killed":
        _kill(record, child)
    cluster = _cluster_with_unit(tmp_path / "home", record)
    cluster.stop()
    assert not processes.is_alive(child), "the restore's pgBackRest outlived its Patroni"
    assert not processes.is_alive(record.pid)
    assert cluster.units()[0].process() is None


def test_down_stops_a_process_left_in_the_cluster_directories(
    tmp_path: Path, started: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    """One that left every session of ours (a detached pgBackRest worker): found by its
    working directory under the cluster's root."""
    cluster = _cluster_with_unit(tmp_path / "home", None)
    spool = cluster.paths.root / "units" / "0" / "pgbackrest" / "spool"
    spool.mkdir(parents=True)
    outside = subprocess.Popen(SLEEP, cwd=tmp_path, start_new_session=True)
    inside = subprocess.Popen(SLEEP, cwd=spool, start_new_session=True)
    started += [outside.pid, inside.pid]
    wait_for(lambda: _ppid(inside.pid) is not None, 5, "the worker")
    cluster.stop(Progress())
    inside.wait(timeout=10)
    assert outside.poll() is None, "a process outside the cluster was stopped"
    said = capsys.readouterr().err
    assert f"stopped pid {inside.pid}" in said and "working directory" in said


def test_processes_using_finds_cwd_open_files_and_arguments(
    tmp_path: Path, started: list[int]
) -> None:
    data = tmp_path / "data"
    (data / "base").mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    # The path reaches the holder through its environment, not its arguments: an open
    # file is then the only way to find it.
    hold = "import os, time; f = open(os.environ['HOLD']); time.sleep(300)"
    by_cwd = subprocess.Popen(SLEEP, cwd=data / "base")
    by_file = subprocess.Popen(
        [sys.executable, "-c", hold], cwd="/", env={**os.environ, "HOLD": str(data / "PG_VERSION")}
    )
    by_arg = subprocess.Popen([*SLEEP, f"--pg1-path={data}"], cwd="/")
    elsewhere = subprocess.Popen([*SLEEP, str(tmp_path / "data2")], cwd=tmp_path)
    procs = [by_cwd, by_file, by_arg, elsewhere]
    started += [p.pid for p in procs]

    def seen() -> dict[int, str]:
        return {p.pid: p.why for p in processes.processes_using(data)}

    # The open file appears once the interpreter has started and opened it.
    wait_for(lambda: by_file.pid in seen(), 10, "the open file")
    found = seen()
    assert found.get(by_cwd.pid) == "working directory"
    assert found.get(by_file.pid) == f"open file {data / 'PG_VERSION'}"
    assert found.get(by_arg.pid) == f"argument --pg1-path={data}"
    assert elsewhere.pid not in found, "data2 is not under data"
    assert processes.processes_using(tmp_path / "empty") == []


def test_a_reused_pid_and_its_session_are_never_signalled(started: list[int]) -> None:
    stranger = processes.spawn(
        [sys.executable, "-c", DAEMON, "/dev/null"], log_file=Path("/dev/null")
    )
    started.append(stranger)
    wait_for(lambda: len(processes.session_members(stranger, started_since=None)) == 1, 15, "child")
    (child,) = processes.session_members(stranger, started_since=None)
    started.append(child.pid)
    real = processes.process_start_time(stranger)
    assert real is not None
    ok, stopped = processes.stop_session(stranger, real - 1, timeout=1)
    assert ok and stopped == []
    assert processes.is_alive(stranger) and processes.is_alive(child.pid)
    # Seen once, then the PID is taken by another start: stop_processes skips it.
    stale = processes.ProcessInfo(**{**child.__dict__, "start_time": child.start_time - 1})
    assert processes.stop_processes([stale], timeout=1) == []
    assert processes.is_alive(child.pid)
    # A session member older than the recorded daemon cannot be its child.
    assert processes.session_members(stranger, started_since=child.start_time + 1) == []


def test_a_process_whose_main_thread_exited_is_alive_while_a_thread_runs(
    started: list[int],
) -> None:
    """As a killed rclone is while its threads exit: it still holds its port."""
    script = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=time.sleep, args=(300,)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    started.append(proc.pid)

    def main_thread_gone() -> bool:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(main_thread_gone, 10, "the main thread to exit")
    assert processes.is_alive(proc.pid)
    proc.kill()
    deadline = time.monotonic() + 10
    while processes.is_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.is_alive(proc.pid)
