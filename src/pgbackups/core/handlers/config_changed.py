"""config-changed: the backup options changed (the charm's config; the local runtime's
``pgbackups retention`` and ``pgbackups schedule``). The retention goes into
``pgbackrest.conf`` on this unit; the schedules are read by update-status when it runs.
Refused options are logged with every reason and count as unset (nothing expires,
nothing is scheduled by a value nobody accepted): the local commands refuse them before
storing, Juju's config cannot be refused."""

from __future__ import annotations

import logging

from pgbackups.core.handlers._steps import apply_config
from pgbackups.core.host import Host, WorkloadError
from pgbackups.core.outcomes import Deferred, Done, Outcome
from pgbackups.core.policy import PolicyProblem, parse_policy

log = logging.getLogger(__name__)


def on_config_changed(host: Host) -> Outcome:
    policy = parse_policy(host.config_options())
    if isinstance(policy, PolicyProblem):
        log.error("%s (they count as unset)", policy.message())
    else:
        log.info(
            "Backup options: retention %s; schedules %s",
            policy.retention.describe() if policy.retention else "from the S3 settings",
            {t: s.text for t, s in policy.schedules.items()} or "none",
        )
    try:
        apply_config(host)
    except WorkloadError as exc:
        log.warning("The configuration is not applied yet: %s", exc)
        return Deferred(str(exc))
    return Done()
