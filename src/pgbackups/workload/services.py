"""The long-running programs of a unit, as the workload starts and stops them.

The charm runs them as systemd units; the local runtime spawns them and records their
PID. Either way an operation that fails raises :class:`~pgbackups.core.host.WorkloadError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol


class Service(StrEnum):
    PATRONI = "patroni"  # Patroni, which runs PostgreSQL
    TLS_SERVER = "pgbackrest-server"  # the pgBackRest TLS server
    # PostgreSQL started on restored data until Patroni takes it over (start_recovery).
    RECOVERY = "postgresql-recovery"


class ServiceRunner(Protocol):
    def start(self, service: Service) -> None:
        """Start it if it is not running (and, where the host can, at boot from now on)."""
        ...

    def stop(self, service: Service) -> None:
        """Stop it and wait (and, where the host can, not at boot from now on)."""
        ...

    def restart(self, service: Service) -> None:
        """Stop it if it runs, then start it: it rereads what it reads only at start."""
        ...

    def start_recovery(self, argv: Sequence[str], log_file: str) -> None:
        """Run ``argv`` (the postmaster, as the database user) as :attr:`Service.RECOVERY`,
        output to ``log_file``; not at boot. Once Patroni took the postmaster over it is
        Patroni's to stop: stopping this service is only for one that never was."""
        ...

    def is_running(self, service: Service) -> bool: ...

    def has_failed(self, service: Service) -> bool:
        """It was started and exited without being stopped."""
        ...
