"""A recorded PID is ours only while the kernel's start time matches the record: `down`
never signals a process that reused one of our PIDs (real processes, no cluster)."""

from __future__ import annotations

import subprocess
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


def test_spawn_neither_follows_nor_chowns_a_link_at_the_log(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    before = victim.stat()
    log_file = tmp_path / "log" / "server.log"
    log_file.parent.mkdir()
    log_file.symlink_to(victim)
    with pytest.raises(OSError):
        processes.spawn(["true"], log_file=log_file, user=processes.db_user())
    assert victim.read_text() == "precious\n"
    assert (victim.stat().st_uid, victim.stat().st_gid) == (before.st_uid, before.st_gid)
