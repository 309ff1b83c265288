"""The preloaded Patroni's protocol (local/runtime/patroni_preload.py): its interpreter
waits for SIGUSR1, keeps one sent while it imports, and then runs Patroni's main on the
configuration it was given. Patroni itself is stood in for by a module that records its
arguments: what is tested is the signal protocol; the e2e restores run it with the real
Patroni (every takeover of a restored PostgreSQL starts the preloaded one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from pgbackups.local.machinery.state import ProcessRecord
from pgbackups.local.runtime import patroni_preload

STAND_IN = """\
import json, os, signal, sys
def main():
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    handler = signal.getsignal(signal.SIGUSR1)
    with open(os.environ["RECORD"], "w") as f:
        json.dump({"argv": sys.argv, "usr1_blocked": signal.SIGUSR1 in blocked,
                   "usr1_default": handler == signal.SIG_DFL}, f)
    return 0
"""


def _preload(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    package = tmp_path / "lib" / "patroni"
    package.mkdir(parents=True)
    # Its import takes a second, as Patroni's does on a busy machine: a signal sent
    # meanwhile must wait for the sigwait, not end the process.
    (package / "__init__.py").write_text("import time\ntime.sleep(1.0)\n")
    (package / "__main__.py").write_text(STAND_IN)
    record = tmp_path / "record.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", patroni_preload.PRELOAD, "/etc/patroni.yml"],
        env={"PYTHONPATH": str(tmp_path / "lib"), "RECORD": str(record)},
    )
    return proc, record


def test_a_signal_sent_while_it_imports_is_kept_and_patroni_runs_on_its_config(
    tmp_path: Path,
) -> None:
    proc, record = _preload(tmp_path)
    # At once: release waits until the interpreter blocked the signal, then sends it
    # while the (slow) imports still run: the signal stays pending until its sigwait.
    started = time.monotonic()
    assert patroni_preload.release(ProcessRecord.of(proc.pid))
    assert time.monotonic() - started < 0.9, "sent during the imports"
    assert proc.wait(timeout=30) == 0
    ran = json.loads(record.read_text())
    assert ran == {
        "argv": ["patroni", "/etc/patroni.yml"],
        "usr1_blocked": False,
        "usr1_default": True,
    }


def test_it_waits_for_the_signal_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc, record = _preload(tmp_path)
    time.sleep(2.0)
    assert proc.poll() is None, "it runs nothing until told"
    assert patroni_preload.waits(proc.pid), "and says, in /proc, that it waits"
    assert not record.exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert not record.exists()


def test_release_of_a_process_that_is_gone_or_never_waits() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert not patroni_preload.release(ProcessRecord(int(done.stdout), 1), timeout=0.2)
    with subprocess.Popen(["sleep", "30"]) as other:  # a process that blocks nothing
        assert not patroni_preload.release(ProcessRecord.of(other.pid), timeout=0.2)
        assert other.poll() is None, "never signalled"
        other.kill()


def test_the_interpreter_is_read_from_the_script(tmp_path: Path) -> None:
    def script(first_line: str) -> str:
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        path.write_text(first_line + "\nprint()\n")
        return str(path)

    assert patroni_preload.interpreter_of(script("#!/usr/bin/python3")) == "/usr/bin/python3"
    assert patroni_preload.interpreter_of(script("#!/usr/bin/python3.11")) == "/usr/bin/python3.11"
    # Not a Python run by an absolute path: no preload, Patroni is spawned as usual.
    assert patroni_preload.interpreter_of(script("#!/usr/bin/env python3")) is None
    assert patroni_preload.interpreter_of(script("#!/bin/sh")) is None
    assert patroni_preload.interpreter_of(script("python3")) is None
    assert patroni_preload.interpreter_of(str(tmp_path / "missing")) is None
