"""The hook and action handlers: one module per chart of docs/behaviour/.

Each handler reads top to bottom like its chart: the guard clauses come in the chart's
order and each box is one small named step. A handler takes a :class:`~pgbackups.core.host.Host`
and returns an :data:`~pgbackups.core.outcomes.Outcome`; everything it does to the world goes
through the host, its workload, its backup tool and its object store. Steps several charts
share are in :mod:`._steps`, with :func:`desired_config`, the one place where the peer
bags become the configuration of a unit. Which event or action runs which handler is
:mod:`pgbackups.core.events`.
"""

from __future__ import annotations

from pgbackups.core.handlers._steps import desired_config
from pgbackups.core.handlers.cluster_restore import on_peer_changed
from pgbackups.core.handlers.config_changed import on_config_changed
from pgbackups.core.handlers.create_backup import on_create_backup
from pgbackups.core.handlers.expire import on_expire
from pgbackups.core.handlers.list_backups import on_list_backups
from pgbackups.core.handlers.restore import on_restore, primary_timeline
from pgbackups.core.handlers.rollback import on_rollback_restore
from pgbackups.core.handlers.s3_credentials import (
    on_leader_elected,
    on_s3_credentials_changed,
    on_s3_credentials_gone,
)
from pgbackups.core.handlers.tls_server import reconcile_tls_server
from pgbackups.core.handlers.update_status import on_update_status
from pgbackups.core.handlers.verify import on_verify

__all__ = [
    "desired_config",
    "on_config_changed",
    "on_create_backup",
    "on_expire",
    "on_leader_elected",
    "on_list_backups",
    "on_peer_changed",
    "on_restore",
    "on_rollback_restore",
    "on_s3_credentials_changed",
    "on_s3_credentials_gone",
    "on_update_status",
    "on_verify",
    "primary_timeline",
    "reconcile_tls_server",
]
