"""The pgBackRest TLS server (docs/behaviour/tls-server.md): certificates-changed and peer-changed
reconcile it, and s3-credentials-changed runs the same steps once WAL archiving works.

It runs only with TLS and more than one unit (:func:`_steps.tls_server_wanted`); a
replica starts its own only once the primary's answers.
"""

from __future__ import annotations

import logging

from pgbackups.core.handlers._steps import apply_config, tls_server_wanted
from pgbackups.core.host import Host, WorkloadError
from pgbackups.core.outcomes import Deferred, Done, Outcome

log = logging.getLogger(__name__)


def reconcile_tls_server(host: Host) -> Outcome:
    """certificates-changed / peer-changed: re-render (TLS files and peers may have
    changed), then the TLS-server steps. A replica whose primary does not answer yet
    defers."""
    apply_config(host)
    if tls_server_steps(host):
        return Done()
    return Deferred("waiting for the pgBackRest TLS server of the primary")


def tls_server_steps(host: Host) -> bool:
    """False when the TLS server could not be started (yet)."""
    if not tls_server_wanted(host):
        host.workload.stop_tls_server()
        return True
    replica = _is_replica(host)
    if replica is None:
        log.info("Patroni cannot tell this unit's role yet")
        return False
    if replica and not _primary_tls_server_answers(host):
        log.info("Waiting for the pgBackRest TLS server of the primary")
        return False
    try:
        host.workload.start_tls_server()
    except WorkloadError as exc:
        log.error("The pgBackRest TLS server did not start: %s", exc)
        return False
    return True


def _is_replica(host: Host) -> bool | None:
    primary = host.workload.is_primary()
    return None if primary is None else not primary


def _primary_tls_server_answers(host: Host) -> bool:
    address = host.workload.primary_address()
    return address is not None and host.backup_tool.server_ping(address)
