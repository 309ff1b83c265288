"""The peer-bag keys the handlers share (docs/ARCHITECTURE.md, "Peer-bag keys").

Values are strings and "" deletes a key, in both hosts. The keys of a restore in progress
are not here: :mod:`pgbackups.core.restore_state` is the only code that knows them.
"""

from __future__ import annotations

# App bag
CLUSTER_INITIALISED = "cluster_initialised"  # set by the host once Patroni bootstrapped
STANZA = "stanza"  # the initialised stanza: WAL archiving is on exactly while it is set
S3_BLOCK_MESSAGE = "s3-block-message"  # the leader's S3 Blocked message (update-status retries)

# Unit bag
CONNECTIVITY = "connectivity"  # "off" while a replica takes a backup: clients rejected
CREATING_BACKUP = "creating-backup"  # when this unit's backup started (one per cluster)
