"""The status and message catalogue (docs/behaviour/messages.md).

Kept verbatim from the reference operator so that scripts written against it keep
working. A message may carry a short reason after it (``"<message>: <reason>"``);
use :func:`with_reason` for that, and :func:`has_prefix` to recognise one.
"""

from __future__ import annotations

# Maintenance
INITIALISING_STANZA = "initialising stanza"
CHECKING_STANZA = "checking stanza"
CREATING_BACKUP = "creating backup"
RESTORING_BACKUP = "restoring backup"
ROLLING_BACK_RESTORE = "rolling back the restore"
# A restore of a cluster of several units (ours: the reference restores one unit only).
# The leader: "restoring backup: waiting for <units> to stop" / "... to re-create from the
# restored primary"; the other units, in turn:
STOPPING_FOR_RESTORE = "restoring backup: stopping the database"
RECREATING_REPLICA = "re-creating from the restored primary"

# Waiting
WAITING_FOR_RESTORED_PRIMARY = "waiting for the restored primary"
WAITING_FOR_ROLLED_BACK_PRIMARY = "waiting for the primary to roll back the restore"

# Blocked, S3 initialisation: s3-credentials-changed (and update-status) exist to clear these.
FAILED_TO_ACCESS_CREATE_BUCKET = "failed to access/create the bucket, check your S3 settings"
ANOTHER_CLUSTER_REPOSITORY = "the S3 repository has backups from another cluster"
# The same block after a restore from that repository succeeded (a migration, disaster
# recovery): the data is restored; what the user does next is in the message.
RESTORED_FROM_ANOTHER_CLUSTER = (
    "restored; backups paused until S3 points at a path of this cluster's own (change the S3 path)"
)
FAILED_TO_INITIALIZE_STANZA = "failed to initialize stanza, check your S3 settings"
S3_BLOCK_MESSAGES = (
    FAILED_TO_ACCESS_CREATE_BUCKET,
    ANOTHER_CLUSTER_REPOSITORY,
    FAILED_TO_INITIALIZE_STANZA,
)

# Blocked, restore
FAILED_TO_RESTORE_BACKUP = "Failed to restore backup"
CANNOT_RESTORE_PITR_PREFIX = "cannot restore PITR"
CANNOT_RESTORE_PITR = "cannot restore PITR, juju debug-log for details"  # under Juju

# Blocked, the database (update-status; ours: the reference never looks, so a stopped or
# crash-looping database stayed "active"). Cleared by update-status once it runs again.
DATABASE_STOPPED = "database stopped: Patroni is not running"
DATABASE_CRASHING = "database crash-looping"  # followed by ": Patroni member state <state>"
DISK_FULL = "disk full"  # followed by ": <free> free of <total> at <path>"
DATABASE_HEALTH_MESSAGES = (DATABASE_STOPPED, DATABASE_CRASHING)

# WAL archiving on the primary (update-status; ours: the reference never looks, so a unit
# whose archiving failed or dropped WAL stayed "active" with "WAL archiving: on"). Each is
# followed by its facts; update-status clears them once archiving works again (a drop: once
# a backup newer than the hole exists, as pgBackRest says one is needed).
ARCHIVING_FAILING = "WAL archiving failing"  # " since <time>, check your S3 settings: ..."
ARCHIVING_LAGGING = "WAL archiving lagging"  # " since <time>: <n> WAL segments waiting ..."
WAL_DROPPED = "WAL dropped over the archive queue cap"  # ", take a full backup: no restore ..."
ARCHIVE_HEALTH_MESSAGES = (ARCHIVING_FAILING, ARCHIVING_LAGGING, WAL_DROPPED)

# create-backup action failures
BACKUP_UNIT_BLOCKED = "Unit is in a blocking state"
BACKUP_ON_PRIMARY = "Unit cannot perform backups as it is the cluster primary"
BACKUP_TLS_DISABLED = "Unit cannot perform backups as TLS is not enabled"
BACKUP_NOT_RUNNING = "Unit cannot perform backups as it's not in running state"
STANZA_NOT_INITIALISED = "Stanza was not initialised"
S3_RELATION_MISSING = "Relation with s3-integrator charm missing, cannot create backup."
S3_RELATION_MISSING_LIST = "Relation with s3-integrator charm missing, cannot list backups."
S3_RELATION_MISSING_VERIFY = "Relation with s3-integrator charm missing, cannot verify backups."
FAILED_TO_VERIFY = "Failed to verify the repository"  # followed by ": <reason>"
VERIFY_FAILED = "Verification failed"  # followed by ": backup <id>: <what is wrong>; ..."
S3_RELATION_MISSING_RESTORE = "Relation with s3-integrator charm missing, cannot restore backup."
MISSING_S3_PARAMETERS = "Missing S3 parameters"  # followed by ": ['bucket', ...]"
FAILED_TO_UPLOAD_METADATA = "Failed to upload metadata to provided S3"
FAILED_TO_BACKUP = "Failed to backup PostgreSQL"
FAILED_TO_UPLOAD_LOGS = "Error uploading logs to S3"
BACKUP_ALREADY_RUNNING = "Another backup is already running on this cluster"
# The repository's backup claims could not be read or written (followed by ": <S3 error>").
FAILED_TO_CLAIM_BACKUP = "Failed to check for a running backup in provided S3"
INVALID_BACKUP_TYPE = "Invalid backup type"  # followed by ": <t>. Possible values: ..."

# restore action failures
MISSING_BACKUP_ID = "Missing backup-id to restore"
# Neither backup-id nor restore-to-time: the reference's message, with what to give.
MISSING_RESTORE_TARGET = MISSING_BACKUP_ID + ": give backup-id, restore-to-time, or both"
RESTORE_UNIT_BLOCKED = "Cluster or unit is in a blocking state"
# No longer used: a cluster of several units is restored in place (docs/behaviour/restore.md).
# Kept for scripts that compare with the reference's words.
RESTORE_MORE_THAN_ONE_UNIT = (
    "Unit cannot restore backup as there are more than one unit in the cluster"
)
RESTORE_ALREADY_RUNNING = "A restore is already running on this cluster"
RESTORE_NOT_LEADER = "Unit cannot restore backup as it was not elected the leader unit yet"
INVALID_BACKUP_ID = "Invalid backup-id"  # followed by ": <id>"
WORKLOAD_NOT_ACCESSIBLE = "Workload is not accessible yet"

# rollback-restore (ours: docs/behaviour/rollback-restore.md "moved back if the restore fails and
# the user asks")
NO_FAILED_RESTORE = "No failed restore to roll back"  # followed by ": <why>"
ROLLBACK_NOT_LEADER = "Unit cannot roll back the restore as it is not the leader unit"
FAILED_TO_ROLL_BACK = "Failed to roll back the restore"  # followed by ": <why>"

# expire action failures (ours: the reference has no expire action)
FAILED_TO_EXPIRE = "Failed to expire backups"  # followed by ": <pgBackRest error>"
EXPIRE_BACKUP_RUNNING = "Cannot expire backups while a backup runs"  # ": <unit> started..."

# list-backups action failures
FAILED_TO_LIST_BACKUPS = "Failed to list PostgreSQL backups with error"  # followed by ": <error>"

# Action results (keys and values kept from the reference)
RESULT_BACKUP_STATUS = "backup-status"
BACKUP_CREATED = "backup created"
RESULT_RESTORE_STATUS = "restore-status"
RESTORE_STARTED = "restore started"
RESULT_ROLLBACK_STATUS = "rollback-status"
ROLLED_BACK = "the data from before the restore is back"
RESULT_BACKUPS = "backups"
RESULT_EXPIRE_STATUS = "expire-status"
BACKUPS_EXPIRED = "backups expired"
NOTHING_EXPIRED = "nothing to expire"
# Holes or empty objects in the WAL archive (JSON list), only when there are any.
RESULT_ARCHIVE_GAPS = "archive-gaps"
RESULT_RECOVERABLE_WINDOW = "recoverable-window"
RESULT_VERIFY_STATUS = "verify-status"


def backup_type_changed(requested: str, taken: str, *, no_full_backup: bool) -> str:
    """create-backup's result ``message`` when pgBackRest took another type than asked for
    (it turns a differential or incremental backup with no full one before it into a full)."""
    if no_full_backup:
        return f"{requested} requested; no full backup existed, so a {taken} backup was taken"
    return f"{requested} requested; pgBackRest took a {taken} backup (see the backup's log)"


def backup_type_unknown(requested: str, reason: str) -> str:
    """create-backup's result ``message`` when the type taken cannot be read back."""
    return f"{requested} requested; the type taken could not be read back: {reason}"


def with_reason(message: str, reason: str | None) -> str:
    """``message`` followed by a short reason, if there is one."""
    reason = (reason or "").strip()
    return f"{message}: {reason}" if reason else message


def has_prefix(text: str, message: str) -> bool:
    """True when ``text`` is ``message``, with or without a ``": <reason>"`` suffix."""
    return text == message or text.startswith(message + ": ")


def is_s3_block_message(text: str) -> bool:
    """True for the Blocked messages that S3 initialisation sets (and may clear)."""
    return any(has_prefix(text, m) for m in S3_BLOCK_MESSAGES)


def cannot_restore_pitr(log_hint: str) -> str:
    """The Blocked message of an unreachable point-in-time target, naming where the
    details are (``Host.log_hint``): under Juju exactly :data:`CANNOT_RESTORE_PITR`."""
    return f"{CANNOT_RESTORE_PITR_PREFIX}, {log_hint} for details"


def is_cannot_restore_pitr(text: str) -> bool:
    """True for :func:`cannot_restore_pitr` with any host's hint."""
    return text == CANNOT_RESTORE_PITR_PREFIX or text.startswith(CANNOT_RESTORE_PITR_PREFIX + ",")


def is_failed_restore(text: str) -> bool:
    """True for the Blocked messages a failed restore leaves (plain or point-in-time)."""
    return has_prefix(text, FAILED_TO_RESTORE_BACKUP) or is_cannot_restore_pitr(text)


def is_archive_health_message(text: str) -> bool:
    """True for the statuses update-status sets (and clears) about WAL archiving."""
    return any(
        text.startswith(m + " ") or text.startswith(m + ",") for m in ARCHIVE_HEALTH_MESSAGES
    )


def restored_from_another_cluster() -> str:
    """The leader's Blocked status once another cluster's backup is restored."""
    return with_reason(ANOTHER_CLUSTER_REPOSITORY, RESTORED_FROM_ANOTHER_CLUSTER)


def is_restored_from_another_cluster(text: str) -> bool:
    return text == restored_from_another_cluster()


def waiting_for_units(what: str, units: list[str]) -> str:
    """The leader's Maintenance message while other units do their part of a restore."""
    return f"{RESTORING_BACKUP}: waiting for {', '.join(units)} to {what}"


def is_database_health_message(text: str) -> bool:
    """True for the Blocked messages update-status sets (and clears) about the database."""
    return any(has_prefix(text, m) or text.startswith(m + "; ") for m in DATABASE_HEALTH_MESSAGES)
