"""An S3 outage shows in ``status`` and clears by itself (issue 15, "archive health"), on
a real one-unit local cluster: the S3 server is frozen (SIGSTOP) while the primary
writes five rows a second, until ``status`` says so (the issue's user froze it for two
minutes; that is the limit here). ``status`` used to show the unit active and
``WAL archiving: on`` throughout; now the primary is Blocked "WAL archiving failing
since <when>" and returns to active once S3 answers again, with no hole in the archive.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import switch_and_wait_archived

from pgbackups.core import archive
from pgbackups.local.runtime.cluster import S3, Cluster
from pgbackups.local.runtime.host import LocalHost, peer_store

pytestmark = pytest.mark.real

CliRunner = Callable[..., Any]
FROZEN_SECONDS = 120


def _status(run_cli: CliRunner, name: str) -> dict[str, Any]:
    res = run_cli("status", "--name", name, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_a_frozen_s3_shows_as_failing_archiving_and_clears(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name, ref = "archfreeze", "archfreeze/0"
    cluster = make_cluster(name, units=1)
    unit = cluster.unit(ref)
    assert run_cli("s3", "set", "--name", name).returncode == 0
    unit.query("create table t (v int)")
    first = switch_and_wait_archived(cluster, unit)
    assert _status(run_cli, name)["units"][0]["status"] == "active"

    s3 = cluster.service(S3)
    assert s3 is not None and s3.is_ours()
    written = 0
    stop = threading.Event()

    def write() -> None:  # five rows a second, as the user did
        nonlocal written
        while not stop.is_set():
            unit.query("insert into t values (%s)", (written,))
            written += 1
            time.sleep(0.2)

    writer = threading.Thread(target=write)
    os.kill(s3.pid, signal.SIGSTOP)
    frozen_at = time.time()
    writer.start()
    seen: dict[str, Any] | None = None
    try:
        while seen is None and time.time() - frozen_at < FROZEN_SECONDS:
            unit.query("select pg_switch_wal()")
            time.sleep(5)
            view = _status(run_cli, name)
            if view["units"][0]["status"] == "blocked":
                seen = view
        assert seen is not None, "status never said archiving failed while S3 was frozen"
    finally:
        os.kill(s3.pid, signal.SIGCONT)
        frozen_for = time.time() - frozen_at
        stop.set()
        writer.join()
    message = seen["units"][0]["message"]
    assert message.startswith("WAL archiving failing since 20"), message
    assert "check your S3 settings" in message and "WAL segment" in message
    since = message.split(" since ", 1)[1].split(",", 1)[0]
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(frozen_at - 90)) <= since
    assert seen["s3"]["backups"]["archiving"].startswith("on, WAL archiving failing")

    # S3 answers again: the waiting segments are archived and the status clears itself.
    last = switch_and_wait_archived(cluster, unit, timeout=240)
    deadline = time.monotonic() + 180
    while (view := _status(run_cli, name))["units"][0]["status"] != "active":
        assert time.monotonic() < deadline, view["units"][0]
        unit.query("select pg_switch_wal()")
        time.sleep(5)
    assert view["units"][0]["message"] == "" and view["s3"]["backups"]["archiving"] == "on"

    # Every segment from before the freeze to after it is in the repository: no gap,
    # so every row written while S3 was frozen can be restored.
    host = LocalHost(cluster, unit, peer_store(cluster))
    with cluster.facts.control():  # the S3 machine, when the units are machines
        segments = host.backup_tool.archive_segments(host.stanza_name)
    assert archive.gaps(segments) == []
    names = {s.name for s in segments}
    assert first in names and last in names
    assert int(unit.query("select count(*) from t")[0][0]) == written > 5 * frozen_for * 0.8
