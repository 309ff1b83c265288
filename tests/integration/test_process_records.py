"""A recorded PID is ours only while the kernel's start time matches the record: `down`
never signals a process that reused one of our PIDs (real processes, no cluster)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgbackups.adapters import processes
from pgbackups.local.machinery.state import ClusterState, ProcessRecord
from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_a_record_matches_only_the_process_it_was_taken_from(
    sleeper: subprocess.Popen[bytes],
) -> None:
    record = ProcessRecord.of(sleeper.pid)
    assert record.start_time is not None
    assert record.is_ours()
    reused = ProcessRecord(sleeper.pid, record.start_time + 1)
    assert not reused.is_ours(), "same PID, another start time: another process"
    sleeper.kill()
    sleeper.wait(timeout=10)
    assert not record.is_ours(), "a process that exited is not ours"


def _cluster_recording(home: Path, records: dict[str, ProcessRecord]) -> Cluster:
    cluster = Cluster("reuse", home)
    cluster.paths.root.mkdir(parents=True)
    cluster.store.create(
        ClusterState(
            name="reuse",
            uuid="00000000-0000-0000-0000-000000000000",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            base_port=29950,
            etcd_client_port=29950,
            etcd_peer_port=29951,
            s3_port=29952,
            bucket="pgbackups",
            tls=False,
            leader="reuse/0",
            processes=records,
        )
    )
    return cluster


def test_stop_leaves_a_process_that_reused_a_recorded_pid_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    real = ProcessRecord.of(sleeper.pid)
    assert real.start_time is not None
    cluster = _cluster_recording(
        tmp_path, {"etcd": ProcessRecord(sleeper.pid, real.start_time - 1)}
    )
    cluster.stop()
    assert sleeper.poll() is None, "a stranger's process was signalled"
    assert processes.is_alive(sleeper.pid)
    assert "etcd" not in cluster.state().processes, "the stale record is dropped"


def test_stop_stops_a_recorded_process_that_is_still_ours(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    cluster = _cluster_recording(tmp_path, {"s3": ProcessRecord.of(sleeper.pid)})
    cluster.stop()
    # processes.stop reaps its own child: the kernel, not Popen, says it is gone.
    assert not processes.is_alive(sleeper.pid), "stopped by down"
    assert cluster.state().processes == {}


@pytest.fixture
def db_folder() -> Iterator[Path]:
    """A folder of the database user's in a folder it can enter (pytest's tmp is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="pgbackups-spawn-", dir="/tmp"))
    os.chmod(base, 0o755)  # noqa: S103 - the database user must enter it
    db = processes.db_user()
    folder = base / "log"
    folder.mkdir(mode=0o700)
    os.chown(folder, db.uid, db.gid)
    yield folder
    shutil.rmtree(base)


def _wait_exit(pid: int) -> None:
    deadline = time.monotonic() + 10
    while processes.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes.is_alive(pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="root spawning for the database user")
def test_spawn_lets_the_daemon_open_its_own_log(db_folder: Path) -> None:
    """Root never opens, creates or chowns a name in the daemon's folder: a link planted
    at the log's name leads only where the database user may write itself."""
    victim = db_folder.parent / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    before = victim.stat()
    log_file = db_folder / "server.log"
    log_file.symlink_to(victim)
    pid = processes.spawn(["echo", "written"], log_file=log_file, user=processes.db_user())
    _wait_exit(pid)
    after = victim.stat()
    assert victim.read_text() == "precious\n"
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="root spawning for the database user")
def test_spawn_log_is_the_database_users_and_the_pid_is_the_program(db_folder: Path) -> None:
    db = processes.db_user()
    log_file = db_folder / "server.log"
    pid = processes.spawn(["sh", "-c", "echo started; exec sleep 30"], log_file=log_file, user=db)
    try:
        deadline = time.monotonic() + 10
        while "started" not in (log_file.read_text() if log_file.exists() else ""):
            assert time.monotonic() < deadline, "no output in the log"
            time.sleep(0.05)
        st = log_file.lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (db.uid, 0o640)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [b"sleep", b"30"]  # the program itself, stoppable by PID
    finally:
        processes.stop(pid, timeout=5)


def test_a_spawned_daemon_that_ends_leaves_no_zombie(tmp_path: Path) -> None:
    """Reaped by us as it ends, without anyone asking: a zombie child of a long-lived
    process (the agent) looks alive to another program that waits for it (Patroni, for a
    restore's PostgreSQL it took over), which then waits for ever."""
    pid = processes.spawn(["/bin/sleep", "0.2"], log_file=tmp_path / "sleep.log")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, Path(f"/proc/{pid}/stat").read_text()
        time.sleep(0.05)
