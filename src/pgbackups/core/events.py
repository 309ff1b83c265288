"""Which handler runs for which event and action: the one table both hosts dispatch by.

The names are Juju's (the charm's hooks and ``charmcraft.yaml`` actions); the local
runtime fires the same names. A host maps its own events onto these names (the charm:
the peer relation's created/joined/changed/departed are all ``peer-changed``) and runs
the handler with its Host; an action's handler also takes the parameters, which must be
among :data:`ACTION_PARAMS` (charmcraft.yaml declares the same).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from pgbackups.core import handlers, params
from pgbackups.core.host import Host
from pgbackups.core.outcomes import Outcome

# The parameters each action takes: defined with their allow-lists in core/params.py.
ACTION_PARAMS: Mapping[str, tuple[str, ...]] = params.ACTION_PARAMS

HookHandler = Callable[[Host], Outcome]
ActionHandler = Callable[[Host, Mapping[str, str]], Outcome]

HOOKS: Mapping[str, HookHandler] = MappingProxyType(
    {
        "s3-credentials-changed": handlers.on_s3_credentials_changed,
        "s3-credentials-gone": handlers.on_s3_credentials_gone,
        "leader-elected": handlers.on_leader_elected,
        "update-status": handlers.on_update_status,
        # The pgBackRest TLS server is reconciled when certificates or peers change
        # (docs/behaviour/tls-server.md); a peer change also moves a cluster restore on.
        "certificates-changed": handlers.reconcile_tls_server,
        "peer-changed": handlers.on_peer_changed,
        # The backup options changed (charm config; `pgbackups retention|schedule`).
        "config-changed": handlers.on_config_changed,
    }
)

ACTIONS: Mapping[str, ActionHandler] = MappingProxyType(
    {
        "create-backup": handlers.on_create_backup,
        "list-backups": handlers.on_list_backups,
        "restore": handlers.on_restore,
        "rollback-restore": handlers.on_rollback_restore,
        "expire": handlers.on_expire,
        "verify": handlers.on_verify,
    }
)
