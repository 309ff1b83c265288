"""The metrics endpoint on this machine: ``pgbackups-metrics.service`` runs
``metrics_server.py`` (standard library only, the system's Python) as ``nobody``, on
loopback, with basic authentication; the hooks write what it serves.

Files, all root's in ``<state_dir>/metrics`` (0750 root:nogroup: the server reads them,
changes none): ``metrics_server.py`` (a copy of the charm's: the service does not depend
on the charm directory's permissions), ``server.json`` (address, user, the password's
SHA-256; 0640) and ``metrics.prom`` (the exposition, replaced atomically; 0640).
"""

from __future__ import annotations

import grp
import json
import logging
import os
from pathlib import Path

from metrics_server import password_sha256
from pgbackups.adapters.files import ensure_dir, read_text, write_if_changed
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import WorkloadError
from systemd_services import SYSTEMCTL_TIMEOUT, Runner

log = logging.getLogger(__name__)

UNIT = "pgbackups-metrics.service"
SERVER_USER = "nobody"
SERVER_GROUP = "nogroup"
SERVER_SOURCE = Path(__file__).resolve().parent / "metrics_server.py"


def metrics_unit(script: str, config: str) -> str:
    # The system's Python in isolated mode (-I: no user site, no PYTHON* variables), as
    # nobody, with nothing it could write.
    return (
        "[Unit]\n"
        "Description=pgbackups metrics endpoint (loopback, basic auth), "
        "managed by pgbackups-postgresql\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"User={SERVER_USER}\n"
        f"Group={SERVER_GROUP}\n"
        f"ExecStart=/usr/bin/python3 -I {script} {config}\n"
        "NoNewPrivileges=yes\n"
        "ProtectSystem=strict\n"
        "ProtectHome=yes\n"
        "PrivateTmp=yes\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


class MetricsService:
    def __init__(self, state_dir: str, systemd_dir: str, run: Runner) -> None:
        self.dir = Path(state_dir) / "metrics"
        self.script = self.dir / "metrics_server.py"
        self.config = self.dir / "server.json"
        self.exposition = self.dir / "metrics.prom"
        self._unit_path = Path(systemd_dir) / UNIT
        self._run = run

    def _owner(self) -> OsUser | None:
        """root:nogroup when we are root (the server reads, root writes); else ourselves."""
        if os.geteuid() != 0:
            return None
        return OsUser("root", 0, grp.getgrnam(SERVER_GROUP).gr_gid, "/root")

    def configure(self, *, host: str, port: int, user: str, password: str) -> bool:
        """Write the server, its configuration and its unit; True if any changed."""
        owner = self._owner()
        ensure_dir(self.dir, 0o750, owner)
        config = {
            "host": host,
            "port": port,
            "user": user,
            "password_sha256": password_sha256(password),
            "exposition": str(self.exposition),
        }
        changed = write_if_changed(SERVER_SOURCE.read_text(), self.script, owner, 0o640)
        changed |= write_if_changed(json.dumps(config, indent=1), self.config, owner, 0o640)
        unit_changed = write_if_changed(
            metrics_unit(str(self.script), str(self.config)), self._unit_path, None, 0o644
        )
        if unit_changed:
            self._systemctl("daemon-reload")
        return changed or unit_changed

    def start(self, *, restart: bool) -> None:
        self._systemctl("enable", "--now", UNIT)
        if restart:  # the server reads its configuration once, at start
            self._systemctl("restart", UNIT)

    def stop(self) -> None:
        if self._unit_path.exists():
            self._systemctl("disable", "--now", UNIT)

    def publish(self, text: str) -> None:
        """What the endpoint serves from now on."""
        owner = self._owner()
        ensure_dir(self.dir, 0o750, owner)
        write_if_changed(text, self.exposition, owner, 0o640)

    def served(self) -> str | None:
        return read_text(self.exposition)

    def _systemctl(self, *args: str) -> None:
        result = self._run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT)
        if not result.ok:
            reason = (result.stderr or result.stdout).strip()[-500:]
            raise WorkloadError(f"systemctl {' '.join(args)} failed: {reason}")
