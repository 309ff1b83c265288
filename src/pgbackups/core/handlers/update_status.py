"""update-status: the clock of the other charts. It finishes what they left running: a
backup killed before its "Always" step (create-backup), a restore in progress (restore),
and the leader's S3 block (s3-credentials-changed, retried); otherwise it looks whether
the database runs (health: stopped, crash-looping, disk full)."""

from __future__ import annotations

import logging

from pgbackups.core import messages as msg
from pgbackups.core.handlers.archiving import check_archiving
from pgbackups.core.handlers.cluster_restore import restore_step
from pgbackups.core.handlers.create_backup import bring_back_after_interrupted_backup
from pgbackups.core.handlers.health import check_database
from pgbackups.core.handlers.s3_credentials import on_s3_credentials_changed
from pgbackups.core.handlers.schedule import run_schedules
from pgbackups.core.host import Host
from pgbackups.core.outcomes import Done, Outcome
from pgbackups.core.peer_keys import S3_BLOCK_MESSAGE
from pgbackups.core.restore_state import ReplicaSet, RestoreState

log = logging.getLogger(__name__)


def on_update_status(host: Host) -> Outcome:
    """(a) a backup left this unit hidden: bring it back; (b) a restore in progress:
    the leader detects its end and leads a cluster restore from stage to stage, the other
    units do their part (cluster_restore); (c) the leader blocked by S3: retry S3 initialisation
    (docs/behaviour/update-status.md#3-retry-s3-initialisation: the reference never self-heals);
    otherwise (d) is the database running? A stopped or crash-looping one is Blocked, and Active
    again once it runs (ours: the reference shows such a unit active); (e) on the primary,
    does WAL archiving work (failing, lagging, WAL dropped: handlers/archiving.py)? A moved
    data directory still recorded after a finished restore is left alone. Last, (f) the
    backups the schedules say are due (handlers/schedule.py)."""
    bring_back_after_interrupted_backup(host)
    step = restore_step(host)
    if step is not None:
        return step
    restore = RestoreState.read(host.app_data)
    if restore is not None and restore.in_progress:
        return Done()  # a one-unit restore's end is the leader's to see
    if host.is_leader():
        _unpin_replica_set(host)
    if host.is_leader() and _has_s3_block(host):
        log.info("Retrying S3 initialisation")
        return on_s3_credentials_changed(host)
    check_database(host)
    check_archiving(host)
    run_schedules(host)
    return Done()


def _has_s3_block(host: Host) -> bool:
    status = host.get_status()
    if status.is_blocked:
        return msg.is_s3_block_message(status.message)
    return bool(host.app_data.get(S3_BLOCK_MESSAGE))


def _unpin_replica_set(host: Host) -> None:
    """A backup was taken since the last restore ended: pgBackRest's newest set is one a
    new replica can follow again (restore_state.ReplicaSet)."""
    pinned = ReplicaSet.read(host.app_data)
    if pinned is None:
        return
    bags = {host.unit_name: host.unit_data, **host.peer_data()}
    taken = pinned.superseded_by(bags)
    if taken is not None:
        log.info("Backup %s was taken since the restore: new replicas restore the newest", taken)
        ReplicaSet.clear(host.app_data)
