"""The one stand-in below the charm's event handlers: systemd (and apt), absent here.

:class:`MachineSystemd` is set as ``PgBackupsCharm.runner`` in a hook's child, inside the
machine. It answers

- ``systemctl enable --now|disable --now|enable|restart|is-active|is-failed|daemon-reload``
  by reading the unit file the charm wrote (``/etc/systemd/system/<unit>`` on the
  machine) and running its ``ExecStart`` under a supervisor (:mod:`machines.supervisor`)
  as its ``User=``, inside the machine's namespaces (it inherits them from the hook);
- ``apt-get update|install`` and ``apt-mark hold`` by checking that every package the
  charm asks for IS installed (``dpkg-query``), and succeeding: the host's dpkg state is
  never changed (``make setup`` installs the packages);

and passes every other command to the real :func:`pgbackups.adapters.processes.run`.
A service's supervisor is recorded in the machine's ``state_dir`` (a host folder); at
scale-down and at the end the harness stops everything in the machine's namespaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pgbackups.adapters import processes
from pgbackups.core.host import CommandResult

log = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"
SYSTEM_PYTHON = "/usr/bin/python3"
STARTED_WITHIN = 10.0


def parse_unit(text: str) -> dict[str, str]:
    """``Key=value`` lines of a unit file (sections ignored: ours have distinct keys)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            fields[key.strip()] = value.strip()
    return fields


def _ok(argv: tuple[str, ...], out: str = "") -> CommandResult:
    return CommandResult(argv, 0, out, "")


def _failed(argv: tuple[str, ...], err: str, code: int = 1) -> CommandResult:
    return CommandResult(argv, code, "", err)


def package_installed(package: str) -> bool:
    result = processes.run(["dpkg-query", "-W", "-f=${Status}", package], timeout=30)
    return result.ok and result.stdout.strip() == "install ok installed"


class MachineSystemd:
    """The runner of one machine (see the module's text)."""

    def __init__(self, state_dir: Path, unit_dir: str = "/etc/systemd/system") -> None:
        self.state_dir = state_dir
        self.unit_dir = unit_dir
        self.commands: list[tuple[str, ...]] = []

    def __call__(self, argv: Any, **kwargs: Any) -> CommandResult:
        args = tuple(str(a) for a in argv)
        if args[0] == "systemctl":
            return self.systemctl(args)
        if args[0] in ("apt-get", "apt-mark"):
            return self.apt(args)
        return processes.run(args, **kwargs)

    # --- apt -----------------------------------------------------------------------

    def apt(self, args: tuple[str, ...]) -> CommandResult:
        words = [a for a in args[1:] if not a.startswith("-") and "::" not in a]
        verb, packages = (words[0], words[1:]) if words else ("", [])
        if verb == "update":
            return _ok(args)
        if verb not in ("install", "hold"):
            return _failed(args, f"the scenario's apt answers install and hold, not {verb!r}")
        missing = [p for p in packages if not package_installed(p)]
        if missing:
            # What a real archive would do is unknowable here; the host lacks them.
            return _failed(args, f"E: not installed on this host (make setup): {missing}", 100)
        log.info("apt: %s %s: already installed, nothing changed", verb, " ".join(packages))
        return _ok(args)

    # --- systemctl -----------------------------------------------------------------

    def _record(self, unit: str) -> Path:
        return self.state_dir / f"{unit}.json"

    def _main_pid_file(self, unit: str) -> Path:
        return self.state_dir / f"{unit}.main-pid"

    def _started_file(self, unit: str) -> Path:
        return self.state_dir / f"{unit}.started"

    def _supervisor(self, unit: str) -> tuple[int, int | None] | None:
        """The recorded supervisor of ``unit`` (PID, start time), if there is a record."""
        try:
            data = json.loads(self._record(unit).read_text())
        except (OSError, ValueError):
            return None
        return int(data["pid"]), data.get("start_time")

    def _supervisor_alive(self, unit: str) -> bool:
        found = self._supervisor(unit)
        if found is None:
            return False
        pid, start = found
        return processes.process_start_time(pid) == start

    def _main_alive(self, unit: str) -> bool:
        try:
            pid = int(self._main_pid_file(unit).read_text())
        except (OSError, ValueError):
            return False
        return processes.is_alive(pid)

    def is_active(self, unit: str) -> bool:
        return self._supervisor_alive(unit) and self._main_alive(unit)

    def is_failed(self, unit: str) -> bool:
        """Started and not stopped by us, but its supervisor gave up."""
        return self._supervisor(unit) is not None and not self._supervisor_alive(unit)

    def start(self, unit: str) -> CommandResult | None:
        if self._supervisor_alive(unit):
            return None
        path = Path(self.unit_dir) / unit
        try:
            fields = parse_unit(path.read_text())
        except OSError as exc:
            return _failed(("systemctl", "start", unit), f"Unit {unit} not found: {exc}", 5)
        spec = {
            "exec": shlex.split(fields["ExecStart"]),
            "user": fields.get("User", "root"),
            "group": fields.get("Group", fields.get("User", "root")),
            "restart": fields.get("Restart", "no"),
            "restart_sec": fields.get("RestartSec", "0.1"),
            "stop_timeout": fields.get("TimeoutStopSec", "90"),
            "log": str(self.state_dir / f"{unit}.log"),
            "main_pid_file": str(self._main_pid_file(unit)),
            "started_file": str(self._started_file(unit)),
        }
        self._started_file(unit).unlink(missing_ok=True)
        supervisor = subprocess.Popen(
            [SYSTEM_PYTHON, str(SUPERVISOR), json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        start_time = processes.process_start_time(supervisor.pid)
        self._record(unit).write_text(json.dumps({"pid": supervisor.pid, "start_time": start_time}))
        # As systemd with Type=simple: done once the program was started, even if it
        # fails right away (Restart=on-failure then runs it again; is-active tells).
        deadline = time.monotonic() + STARTED_WITHIN
        while not self._started_file(unit).exists():
            if supervisor.poll() is not None or time.monotonic() > deadline:
                return _failed(("systemctl", "start", unit), f"{unit} could not be started")
            time.sleep(0.05)
        log.info("systemd stand-in: started %s (supervisor %d)", unit, supervisor.pid)
        return None

    def stop(self, unit: str) -> None:
        found = self._supervisor(unit)
        if found is not None:
            pid, start = found
            if processes.process_start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    processes.stop(pid, timeout=120, sig=signal.SIGTERM)
        self._record(unit).unlink(missing_ok=True)
        self._main_pid_file(unit).unlink(missing_ok=True)

    def systemctl(self, args: tuple[str, ...]) -> CommandResult:
        self.commands.append(args)
        flags = {a for a in args[1:] if a.startswith("-")}
        words = [a for a in args[1:] if not a.startswith("-")]
        verb, units = words[0], words[1:]
        if verb == "daemon-reload":
            return _ok(args)
        if verb == "is-active":
            return _ok(args) if all(self.is_active(u) for u in units) else _failed(args, "", 3)
        if verb == "is-failed":
            return _ok(args) if any(self.is_failed(u) for u in units) else _failed(args, "", 1)
        for unit in units:
            if verb in ("disable", "stop") and ("--now" in flags or verb == "stop"):
                self.stop(unit)
            elif verb == "restart":
                self.stop(unit)
                if (problem := self.start(unit)) is not None:
                    return problem
            elif verb == "start" or (verb == "enable" and "--now" in flags):
                if (problem := self.start(unit)) is not None:
                    return problem
            elif verb not in ("enable", "disable"):
                return _failed(args, f"the scenario's systemctl has no {verb!r}")
        return _ok(args)
