"""systemd's part for one service of a scenario machine, as a small process of its own.

Started (by :mod:`machines.systemd`) inside the machine's namespaces with the service's
unit as JSON: it runs ``ExecStart`` as ``User=``/``Group=`` with the environment systemd
gives a service (``PATH``, ``HOME``, ``USER``, ``LOGNAME``, ``LANG``), from ``/``, output
appended to the service's log; restarts it after ``RestartSec`` when it fails and
``Restart=on-failure``; on SIGTERM sends SIGTERM to the main process only
(``KillMode=process``), SIGKILL after ``TimeoutStopSec``. The main process's PID is
written to ``main_pid_file`` while it runs, and to ``started_file`` once it was started
(``systemctl start`` of a ``Type=simple`` unit returns then, even if it fails at once).
Exit status: 0 when stopped or when the service ended well, 1 when it failed for good
(``systemctl is-failed``).

Run with the system Python; it imports nothing of the project.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from types import FrameType


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    entry = pwd.getpwnam(spec["user"])
    gid = entry.pw_gid if spec["group"] == spec["user"] else int(spec.get("gid", entry.pw_gid))
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
    }
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    rc = 0
    while not stopping:
        with open(spec["log"], "ab") as out:
            child = subprocess.Popen(
                spec["exec"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                user=entry.pw_uid,
                group=gid,
                extra_groups=[],
            )
        with open(spec["main_pid_file"], "w") as pid_file:
            pid_file.write(str(child.pid))
        with open(spec["started_file"], "w") as started:  # systemctl start returns now
            started.write(str(child.pid))
        stop_deadline: float | None = None
        while child.poll() is None:
            if stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + float(spec["stop_timeout"])
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                child.kill()
            time.sleep(0.1)
        rc = child.returncode
        os.unlink(spec["main_pid_file"])
        if stopping or rc == 0 or spec["restart"] != "on-failure":
            break
        deadline = time.monotonic() + float(spec["restart_sec"])
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
    return 0 if stopping or rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
