"""The cluster's agent as a process (no PostgreSQL needed): ``start_agent`` records it,
``stop`` ends it by its PID with what its session left; a command that finds the
operation lock taken waits while the agent's pass holds it (``agent.busy``), and fails
at once, as before, when anyone else holds it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgbackups.adapters import processes
from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery.state import ClusterState
from pgbackups.local.runtime.cluster import AGENT, Cluster

pytestmark = pytest.mark.real


def _cluster(home: Path) -> Cluster:
    cluster = Cluster("agented", home)
    cluster.paths.root.mkdir(parents=True)
    cluster.store.create(
        ClusterState(
            name="agented",
            uuid="00000000-0000-0000-0000-000000000001",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            base_port=29900,
            etcd_client_port=29900,
            etcd_peer_port=29901,
            s3_port=29902,
            bucket="pgbackups",
            tls=False,
            leader="agented/0",
        )
    )
    return cluster


def _hold_lock(cluster: Cluster, seconds: float, *, as_agent: bool) -> threading.Thread:
    held = threading.Event()

    def hold() -> None:
        with cluster.operation("holder", wait_for_agent=False):
            if as_agent:
                cluster.paths.agent_busy.write_text("1\n")
            held.set()
            time.sleep(seconds)
            cluster.paths.agent_busy.unlink(missing_ok=True)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_command_waits_for_the_agents_pass_and_not_for_anyone_else(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    holder = _hold_lock(cluster, 3, as_agent=True)
    started = time.monotonic()
    with cluster.operation("run create-backup"):
        waited = time.monotonic() - started
    holder.join()
    assert 2 <= waited < 10

    holder = _hold_lock(cluster, 5, as_agent=False)
    started = time.monotonic()
    with (
        pytest.raises(PgbackupsError, match="another pgbackups command is changing"),
        cluster.operation("run create-backup"),
    ):
        pass
    assert time.monotonic() - started < 3  # the grace for the busy file, not the holder
    holder.join()


def test_the_agent_is_a_recorded_process_that_stop_ends(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    pid = cluster.start_agent(interval=1)
    record = cluster.service(AGENT)
    assert record is not None and record.pid == pid and record.is_ours()
    assert cluster.start_agent(interval=1) == pid  # one agent per cluster
    deadline = time.monotonic() + 20
    while "update-status every 1s" not in cluster.paths.agent_log.read_text():
        assert time.monotonic() < deadline, cluster.paths.agent_log.read_text()
        time.sleep(0.2)
    cluster.stop()
    assert not processes.is_alive(pid)
    assert AGENT not in cluster.state().processes
    assert "stopped" in cluster.paths.agent_log.read_text()  # it ended on SIGTERM, cleanly


def test_an_agent_whose_record_is_lost_is_stopped_as_a_leftover(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    pid = cluster.start_agent(interval=1)
    cluster.record_service(AGENT, None)  # e.g. a state file restored from before it started
    stopped = cluster.stop_leftovers()
    assert pid in [p.pid for p in stopped]  # its log is open in the cluster's folder
    assert not processes.is_alive(pid)
