"""A local unit's services: processes we spawn and record by PID in the cluster state.

Patroni is the unit's own process (:meth:`Unit.start`/:meth:`Unit.stop`); the
pgBackRest TLS server is recorded under :func:`~.cluster.tls_server_key`, so that
``down`` and ``remove-unit`` stop it too. Nothing here starts at boot: ``pgbackups up``
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.adapters.pgbackrest import PgBackRest
from pgbackups.core.host import WorkloadError
from pgbackups.local.machinery.state import ProcessRecord
from pgbackups.local.runtime.cluster import Cluster, tls_server_key
from pgbackups.local.runtime.unit import Unit, recovery_key, stanza_name
from pgbackups.workload.services import Service


class UnitServices:
    """``workload.services.ServiceRunner`` for one unit of a local cluster."""

    def __init__(self, cluster: Cluster, unit: Unit) -> None:
        self.cluster = cluster
        self.unit = unit

    def _record(self, service: Service) -> ProcessRecord | None:
        if service is Service.PATRONI:
            return self.unit.process()
        if service is Service.RECOVERY:
            return self.cluster.service(recovery_key(self.unit))
        return self.cluster.service(tls_server_key(self.unit))

    def start(self, service: Service) -> None:
        if self.is_running(service):
            return
        try:
            if service is Service.PATRONI:
                self.unit.start()
            elif service is Service.TLS_SERVER:
                self._start_tls_server()
            else:
                raise WorkloadError(f"{service} is started with start_recovery")
        except Exception as exc:  # any failure to start is the workload's error
            raise WorkloadError(f"{self.unit.name}: could not start {service}: {exc}") from exc

    def _start_tls_server(self) -> None:
        tool = PgBackRest(
            self.unit.pgbackrest_config, stanza_name(self.cluster), user=self.cluster.db_user
        )
        with self.cluster.facts.inside(self.unit.machine):  # it listens on the unit's address
            pid = tool.start_server(self.unit.paths.pgbackrest_log / "tls-server.log")
        self.cluster.record_service(tls_server_key(self.unit), ProcessRecord.of(pid))

    def start_recovery(self, argv: Sequence[str], log_file: str) -> None:
        """Spawn the postmaster in the unit's machine, as the database user, and record
        it: Patroni's start (Unit.start) takes this one over instead of stopping it as an
        orphan."""
        if self.is_running(Service.RECOVERY):
            raise WorkloadError(f"{self.unit.name}: a restored PostgreSQL runs already")
        with self.cluster.facts.inside(self.unit.machine):
            pid = processes.spawn(argv, log_file=Path(log_file), user=self.cluster.db_user)
        self.cluster.record_service(recovery_key(self.unit), ProcessRecord.of(pid))
        # While it recovers, Patroni's interpreter and imports, for the takeover.
        self.unit.preload_patroni()

    def stop(self, service: Service) -> None:
        if service is Service.TLS_SERVER:
            self.cluster.stop_service(tls_server_key(self.unit))
        elif service is Service.RECOVERY:
            self.cluster.stop_recovery(self.unit)
        elif not self.unit.stop():
            raise WorkloadError(f"{self.unit.name}: Patroni did not stop")

    def restart(self, service: Service) -> None:
        self.stop(service)
        self.start(service)

    def is_running(self, service: Service) -> bool:
        proc = self._record(service)
        return proc is not None and proc.is_ours()

    def has_failed(self, service: Service) -> bool:
        """Started (its PID is recorded: a stop forgets it) and no longer running."""
        proc = self._record(service)
        return proc is not None and not proc.is_ours()
