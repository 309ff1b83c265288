"""The peer-bag keys the handlers share (docs/ARCHITECTURE.md, "Peer-bag keys").

Values are strings and "" deletes a key, in both hosts. The keys of a restore in progress
are not here: :mod:`pgbackups.core.restore_state` is the only code that knows them.
"""

from __future__ import annotations

# App bag
CLUSTER_INITIALISED = "cluster_initialised"  # set by the host once Patroni bootstrapped
STANZA = "stanza"  # the initialised stanza: WAL archiving is on exactly while it is set
S3_BLOCK_MESSAGE = "s3-block-message"  # the leader's S3 Blocked message (update-status retries)
# The repository (S3Settings.repository_id) whose ownership the leader verified before it
# set ``stanza``: settings naming another repository hold WAL until it is verified too.
REPOSITORY = "repository"
# The stanza whose WAL is held on the units: the repository was this cluster's and cannot
# be used now (an S3 block, or settings not verified yet). PostgreSQL keeps every segment
# and archives them once archiving works again; nothing is marked archived meanwhile.
ARCHIVE_HELD = "archive-held"
# Scheduled backups (core/handlers/schedule.py): ``schedule-<type>`` is the expression and
# the last scheduled minute the leader handled (``<cron>|<minute>``); ``scheduled-backup``
# the run it asked for (``<type>|<minute>|<unit>``), cleared once that unit reports it.
SCHEDULE_PREFIX = "schedule-"
SCHEDULED_BACKUP = "scheduled-backup"

# Unit bag
CONNECTIVITY = "connectivity"  # "off" while a replica takes a backup: clients rejected
CREATING_BACKUP = "creating-backup"  # when this unit's backup started (one per cluster)
# The claim (core/backup_claim.py) of a backup that is over and that S3 refused to remove:
# update-status removes this unit's claims and then the key.
BACKUP_CLAIM_LEFT = "backup-claim-left"
BACKUP_READY = "backup-ready"  # "yes" while create-backup would run here (schedules use it)
# The scheduled run this unit did last and how it ended: ``<request>|<backup-id or failed>``.
SCHEDULED_BACKUP_DONE = "scheduled-backup-done"
# The holes (``A..B,C``) pgBackRest left in the archive when it dropped WAL over the
# async queue cap, seen on this unit while it was the primary; cleared by update-status
# once a backup newer than every hole exists.
ARCHIVE_DROPPED = "archive-dropped"
