"""The cluster's agent: a small supervised process that plays Juju's clock
(``Cluster.start_agent`` starts it; this is what runs in it).

Juju runs update-status on every unit every few minutes; locally nothing did unless
someone typed ``pgbackups status``, so archiving problems went unseen and schedules
could not run. ``pgbackups up`` starts one agent per cluster (``pgbackups agent``, a
daemon recorded by PID in the cluster state like etcd and the S3 server); ``down``
stops it with the rest, and a leftover one is stopped as any process that still uses
the cluster's folder.

Every ``interval`` seconds it takes the cluster's operation lock (hooks and actions
never overlap on a unit, as under Juju), fires update-status on every unit (the leader
first: it asks for a due scheduled backup, which the named unit then runs in the same
pass), and lets go. While it holds the lock it keeps ``agent.busy`` in the cluster's
folder, so that a command that finds the lock taken waits for the agent instead of
failing (``Cluster.operation``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from pgbackups.local.errors import PgbackupsError
from pgbackups.local.machinery.paths import write_file
from pgbackups.local.runtime.cluster import AGENT_INTERVAL_SECONDS, Cluster
from pgbackups.local.runtime.host import Runtime

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = AGENT_INTERVAL_SECONDS


class Agent:
    def __init__(self, cluster: Cluster, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.stopping = threading.Event()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("agent: signal %d, stopping after this pass", signum)
        self.stopping.set()

    def tick(self) -> bool:
        """One update-status pass, if the cluster runs and no command holds its lock;
        True when it ran."""
        cluster = self.cluster
        if not cluster.exists() or not cluster.any_running():
            return False
        try:
            with cluster.operation("agent", wait_for_agent=False):
                busy = cluster.paths.agent_busy
                write_file(busy, f"{os.getpid()}\n", mode=0o644)
                try:
                    outcomes = Runtime(cluster).fire_all("update-status")
                finally:
                    busy.unlink(missing_ok=True)  # root's own folder: no link followed
        except PgbackupsError as exc:
            log.debug("agent: pass skipped: %s", exc)
            return False
        log.debug("agent: update-status %s", {u: type(o).__name__ for u, o in outcomes.items()})
        return True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("agent of cluster %s: update-status every %gs", self.cluster.name, self.interval)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("agent: update-status pass failed")
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))
        log.info("agent of cluster %s stopped", self.cluster.name)
