"""The workload's services as systemd units on a Juju machine (``ServiceRunner``).

- ``pgbackups-patroni.service``: Patroni (which runs PostgreSQL), as ``postgres``;
- ``pgbackups-pgbackrest-server.service``: ``pgbackrest server``, as ``postgres``.

The unit files are rendered here and rewritten before each start (a charm upgrade may
change them). A service that is started is also enabled, one that is stopped disabled:
after a reboot the machine runs what the charm last asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pgbackups.adapters import processes
from pgbackups.adapters.files import write_if_changed
from pgbackups.core.host import CommandResult, WorkloadError
from pgbackups.workload.services import Service

log = logging.getLogger(__name__)

Runner = Callable[..., CommandResult]

UNIT_NAMES = {
    Service.PATRONI: "pgbackups-patroni.service",
    Service.TLS_SERVER: "pgbackups-pgbackrest-server.service",
}
SYSTEMCTL_TIMEOUT = 120


def systemd_unit(description: str, exec_start: str, *, user: str = "postgres") -> str:
    return (
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-online.target\n"
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
    return systemd_unit(
        "Patroni (PostgreSQL high availability), managed by pgbackups-postgresql",
        f"/usr/bin/patroni {patroni_config}",
    )


def tls_server_unit(pgbackrest_config: str) -> str:
    return systemd_unit(
        "pgBackRest TLS server, managed by pgbackups-postgresql",
        f"/usr/bin/pgbackrest --config={pgbackrest_config} server",
    )


class SystemdServices:
    def __init__(
        self,
        *,
        patroni_config: str,
        pgbackrest_config: str,
        systemd_dir: str = "/etc/systemd/system",
        run: Runner = processes.run,
    ) -> None:
        self._units = {
            Service.PATRONI: patroni_unit(patroni_config),
            Service.TLS_SERVER: tls_server_unit(pgbackrest_config),
        }
        self._systemd_dir = systemd_dir
        self._run = run

    def write_units(self) -> None:
        """Write the unit files (root's, 0644) and have systemd read them if they changed."""
        changed = False
        for service, text in self._units.items():
            path = f"{self._systemd_dir}/{UNIT_NAMES[service]}"
            changed |= write_if_changed(text, path, None, 0o644)
        if changed:
            self._systemctl("daemon-reload")

    def _systemctl(self, *args: str) -> None:
        result = self._run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT)
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"systemctl {' '.join(args)} failed: {reason}")

    def start(self, service: Service) -> None:
        self.write_units()
        self._systemctl("enable", "--now", UNIT_NAMES[service])

    def stop(self, service: Service) -> None:
        self.write_units()  # a unit systemd does not know cannot be disabled
        self._systemctl("disable", "--now", UNIT_NAMES[service])

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
