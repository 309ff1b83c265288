"""Patroni started ahead: an interpreter that has imported Patroni and waits for a signal.

A restore's PostgreSQL recovers on its own; once it promoted, Patroni is started to take
it over (docs/behaviour/restore.md, "Completion"). Half of Patroni's start is its
interpreter and imports (0.3-0.4 s of the 0.6 s until it holds the leader key here,
docs/performance.md), and the recovery leaves a CPU idle for a second or more. So while
PostgreSQL recovers, the unit gets a preloaded Patroni: the Python that runs Patroni's
own script, with Patroni's modules imported, waiting for SIGUSR1. ``Unit.start`` sends
the signal and records that process as the unit's Patroni; it then reads its
configuration and runs as if just started. When there is none (or it died) Patroni is
spawned as usual, so nothing depends on it but the time.

Only the local runtime does this: the charm's Patroni is a systemd service, and under
Juju the takeover waits for update-status anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from pgbackups.local.machinery.state import ProcessRecord

log = logging.getLogger(__name__)

# The cluster-state key of a unit's preloaded Patroni (Cluster.record_service): `down`
# stops it with the other recorded daemons, Unit.stop with the unit.
PREFIX = "patroni-preloaded:"

# Run as ``<python> -c PRELOAD <patroni.yml>``, as the database user. SIGUSR1 is blocked
# first: one sent while the imports run stays pending instead of ending the process
# (its default action). Then a handler is set, which never runs (the signal is taken by
# sigwait): it is what says, in /proc (``SigCgt``), that the process is past that point
# (:func:`waits`); the blocked mask cannot say it, since sigwait clears it while it
# waits. Both are undone before Patroni runs, so that nothing Patroni starts inherits
# them. An import that fails is left to Patroni's own start to report in its log.
PRELOAD = """\
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
signal.signal(signal.SIGUSR1, lambda *_: None)
try:
    import patroni.__main__, patroni.config, patroni.validator, patroni.api, patroni.ha
    import patroni.postgresql, patroni.request, patroni.watchdog, patroni.dcs
    import patroni.dcs.etcd, patroni.dcs.etcd3
except Exception:
    pass
signal.sigwait({signal.SIGUSR1})
signal.signal(signal.SIGUSR1, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
sys.argv = ["patroni", sys.argv[1]]
import patroni.__main__
sys.exit(patroni.__main__.main())
"""


def key(unit_name: str) -> str:
    return PREFIX + unit_name


def interpreter_of(script: str) -> str | None:
    """The Python that Patroni's own script runs with (its ``#!`` line), or None when
    the script is not a Python script run by an absolute path (then no preload)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!/"):
        return None
    parts = first[2:].decode("utf-8", "replace").split()
    if len(parts) != 1 or "python" not in Path(parts[0]).name:
        return None
    return parts[0]


def waits(pid: int) -> bool:
    """The process is past blocking SIGUSR1 (its handler is set: ``SigCgt`` in /proc), so
    a signal sent now is kept for its ``sigwait``. Sent earlier, while the interpreter
    starts, it would end it."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1)
    return False


def release(proc: ProcessRecord, timeout: float = 2.0) -> bool:
    """Tell a preloaded Patroni to start, once it waits for that (a few milliseconds
    after its spawn); False when it is gone, is another process now (a PID reused: the
    start time is checked just before the signal), or never waited within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not waits(proc.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    if not proc.is_ours():
        return False
    try:
        os.kill(proc.pid, signal.SIGUSR1)
    except ProcessLookupError:
        return False
    return True
