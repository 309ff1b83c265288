"""The workload's services as systemd units on a Juju machine (``ServiceRunner``).

- ``pgbackups-raft.service``: this unit's Raft member (``patroni_raft_controller``), as
  ``postgres``; apart from Patroni, so that it runs while Patroni is stopped (a restore);
- ``pgbackups-patroni.service``: Patroni (which runs PostgreSQL, and is a Raft client),
  as ``postgres``; ordered after the Raft member at boot;
- ``pgbackups-pgbackrest-server.service``: ``pgbackrest server``, as ``postgres``;
- ``pgbackups-postgresql-recovery.service``: a restore's PostgreSQL on the restored data,
  as ``postgres``, written when a restore starts it and never enabled: Patroni takes the
  promoted postmaster over (docs/performance.md, "The restore's fixed cost").

The unit files are rendered here and rewritten before each start (a charm upgrade may
change them). A service that is started is also enabled, one that is stopped disabled:
after a reboot the machine runs what the charm last asked for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from pgbackups.adapters import processes
from pgbackups.adapters.files import write_if_changed
from pgbackups.core.host import CommandResult, WorkloadError
from pgbackups.workload.services import Service

log = logging.getLogger(__name__)

Runner = Callable[..., CommandResult]

UNIT_NAMES = {
    Service.PATRONI: "pgbackups-patroni.service",
    Service.TLS_SERVER: "pgbackups-pgbackrest-server.service",
    Service.RECOVERY: "pgbackups-postgresql-recovery.service",
}
# Not a workload Service: the shared workload knows nothing of Raft; MachineWorkload
# starts and stops it (start_raft, stop_raft).
RAFT_UNIT = "pgbackups-raft.service"
SYSTEMCTL_TIMEOUT = 120


def systemd_unit(
    description: str, exec_start: str, *, user: str = "postgres", after: str = ""
) -> str:
    return (
        "[Unit]\n"
        f"Description={description}\n"
        f"After=network-online.target{' ' + after if after else ''}\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"Group={user}\n"
        f"ExecStart={exec_start}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "KillMode=process\n"
        "TimeoutStopSec=60\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def patroni_unit(patroni_config: str) -> str:
    # After the Raft member: at boot Patroni finds its DCS running (ordering only; the
    # charm starts and stops each itself).
    return systemd_unit(
        "Patroni (PostgreSQL high availability), managed by pgbackups-postgresql",
        f"/usr/bin/patroni {patroni_config}",
        after=RAFT_UNIT,
    )


def raft_unit(raft_config: str) -> str:
    return systemd_unit(
        "Raft member of Patroni's DCS, managed by pgbackups-postgresql",
        f"/usr/bin/patroni_raft_controller {raft_config}",
    )


def tls_server_unit(pgbackrest_config: str) -> str:
    return systemd_unit(
        "pgBackRest TLS server, managed by pgbackups-postgresql",
        f"/usr/bin/pgbackrest --config={pgbackrest_config} server",
    )


# A word of the restore's command line or its log's path: allowed characters only (they
# go unquoted into the unit file and a shell's command string).
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.,:/@+=-]+")


def recovery_unit(argv: Sequence[str], log_file: str, *, user: str = "postgres") -> str:
    """The restore's PostgreSQL: its own unit (not the hook's cgroup, which the agent
    owns), not restarted and not enabled (at boot Patroni starts PostgreSQL itself).
    SIGINT is PostgreSQL's fast shutdown; only a postmaster Patroni never took over is
    stopped through this unit. Its output is appended to ``log_file`` by a shell running
    as ``user`` (the log's folder is the database user's: systemd's own ``append:`` would
    open it as root), which then becomes the postmaster (``exec``)."""
    for word in (*argv, log_file):
        if _PLAIN_WORD.fullmatch(word) is None:
            raise WorkloadError(f"not a plain word for a unit file: {word[:60]!r}")
    command = f"exec {' '.join(argv)} >>{log_file} 2>&1"
    return (
        "[Unit]\n"
        "Description=PostgreSQL on restored data until Patroni takes it over, managed by "
        "pgbackups-postgresql\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={user}\n"
        f"Group={user}\n"
        f'ExecStart=/bin/sh -c "{command}"\n'
        "KillMode=mixed\n"
        "KillSignal=SIGINT\n"
        "TimeoutStopSec=120\n"
        "Restart=no\n"
    )


class SystemdServices:
    def __init__(
        self,
        *,
        patroni_config: str,
        pgbackrest_config: str,
        raft_config: str,
        systemd_dir: str = "/etc/systemd/system",
        run: Runner = processes.run,
    ) -> None:
        self._units = {
            RAFT_UNIT: raft_unit(raft_config),
            UNIT_NAMES[Service.PATRONI]: patroni_unit(patroni_config),
            UNIT_NAMES[Service.TLS_SERVER]: tls_server_unit(pgbackrest_config),
        }
        self._systemd_dir = systemd_dir
        self._run = run

    def write_units(self) -> None:
        """Write the unit files (root's, 0644) and have systemd read them if they changed."""
        changed = False
        for name, text in self._units.items():
            path = f"{self._systemd_dir}/{name}"
            changed |= write_if_changed(text, path, None, 0o644)
        if changed:
            self._systemctl("daemon-reload")

    def _systemctl(self, *args: str) -> None:
        result = self._run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT)
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"systemctl {' '.join(args)} failed: {reason}")

    def _start(self, unit: str) -> None:
        self.write_units()
        self._systemctl("enable", "--now", unit)

    def _stop(self, unit: str) -> None:
        self.write_units()  # a unit systemd does not know cannot be disabled
        self._systemctl("disable", "--now", unit)

    def stop(self, service: Service) -> None:
        if service is Service.RECOVERY:  # never enabled; its file exists once started
            if self.is_running(service):
                self._systemctl("stop", UNIT_NAMES[service])
            return
        self._stop(UNIT_NAMES[service])

    def start(self, service: Service) -> None:
        if service is Service.RECOVERY:
            raise WorkloadError(f"{service} is started with start_recovery")
        self._start(UNIT_NAMES[service])

    def start_recovery(self, argv: Sequence[str], log_file: str) -> None:
        name = UNIT_NAMES[Service.RECOVERY]
        if write_if_changed(
            recovery_unit(argv, log_file), f"{self._systemd_dir}/{name}", None, 0o644
        ):
            self._systemctl("daemon-reload")
        self._systemctl("start", name)

    def start_raft(self) -> None:
        """Start this unit's Raft member (a no-op while it runs: its configuration is
        read at start, and a restart is a moment without this member)."""
        self._start(RAFT_UNIT)

    def stop_raft(self) -> None:
        self._stop(RAFT_UNIT)

    def is_raft_running(self) -> bool:
        return self._run(["systemctl", "is-active", "--quiet", RAFT_UNIT], timeout=30).ok

    def restart(self, service: Service) -> None:
        self.write_units()
        self._systemctl("enable", UNIT_NAMES[service])
        self._systemctl("restart", UNIT_NAMES[service])

    def _query(self, verb: str, service: Service) -> bool:
        return self._run(["systemctl", verb, "--quiet", UNIT_NAMES[service]], timeout=30).ok

    def is_running(self, service: Service) -> bool:
        return self._query("is-active", service)

    def has_failed(self, service: Service) -> bool:
        return self._query("is-failed", service)
