"""s3-credentials-changed (docs/behaviour/s3-credentials.md#s3-credentials-changed), its twin
leader-elected, and s3-credentials-gone.

update-status re-runs :func:`on_s3_credentials_changed` while the leader shows an S3
block (docs/behaviour/update-status.md#3-retry-s3-initialisation: the reference never self-heals).
The retries of ``pgbackrest check`` wait with :data:`SLEEP`, the one place a host (or a test)
replaces the waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import (
    apply_config,
    block_s3,
    claim_repository,
    parse_settings,
    repository_problem,
)
from pgbackups.core.handlers.tls_server import tls_server_steps
from pgbackups.core.host import (
    CommandResult,
    Host,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreForbidden,
    UnitStatus,
)
from pgbackups.core.outcomes import Deferred, Done, Outcome
from pgbackups.core.peer_keys import (
    ARCHIVE_HELD,
    CLUSTER_INITIALISED,
    REPOSITORY,
    S3_BLOCK_MESSAGE,
    STANZA,
)
from pgbackups.core.restore_state import restore_in_progress
from pgbackups.core.settings import S3Settings

log = logging.getLogger(__name__)

# Retries of `pgbackrest check` ("a few retries",
# docs/behaviour/s3-credentials.md#s3-credentials-changed). Module constants so that a host (or a
# test) can override them; SLEEP is the function that waits.
CHECK_ATTEMPTS = 3
CHECK_RETRY_DELAY_SECONDS = 3.0
SLEEP: Callable[[float], None] = time.sleep


def on_s3_credentials_changed(host: Host) -> Outcome:
    """docs/behaviour/s3-credentials.md#s3-credentials-changed, box by box. Also run by
    leader-elected and by update-status (S3 retry)."""
    if not _has_cluster_initialised(host):
        return Deferred("cluster not initialised yet")
    if restore_in_progress(host.app_data):
        # Part of "Has cluster initialised?": a cluster being restored is not (yet) the
        # cluster the repository must be checked against; its completion re-checks ownership
        # (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository).
        return Deferred("a restore is in progress")
    settings = _required_settings(host)
    if settings is None:
        return Done()
    _update_backup_settings(host)
    if not host.is_leader():
        return Done()
    if _is_blocked_other_than_s3(host):
        log.info("S3 initialisation skipped: unit is blocked (%s)", host.get_status().message)
        return Done()
    store = host.object_store(settings)
    if not _could_initialise_stanza(host, settings, store):
        return Done()
    working = _is_wal_archiving_to_s3_working(host, settings, store)
    if working is None:
        return Deferred("waiting for the primary to archive with pgBackRest")
    if not working:
        return Done()
    tls_server_steps(host)  # the chart returns after every TLS branch
    return Done()


def on_leader_elected(host: Host) -> Outcome:
    """A new leader re-runs S3 initialisation: only the old leader saw credentials-gone."""
    return on_s3_credentials_changed(host)


def _has_cluster_initialised(host: Host) -> bool:
    return bool(host.app_data.get(CLUSTER_INITIALISED))


def _required_settings(host: Host) -> S3Settings | None:
    """ "Are all required S3 settings provided?" The settings, or None (logged).

    Missing settings: no status change (docs/behaviour/s3-credentials.md#s3-credentials-changed).
    Invalid settings (a bad CA chain, an unknown URI style...): the leader blocks with a message
    that names the problem; it is an S3 block, so a corrected setting clears it.
    """
    raw = host.s3_parameters()
    settings = parse_settings(raw)
    if isinstance(settings, S3Settings):
        return settings
    if settings is None:
        log.info("No S3 settings: backups are not configured")
    elif settings.missing:
        log.warning("S3 settings incomplete: %s", settings.message())
    else:
        log.error("S3 settings rejected: %s", settings.message())
        if host.is_leader() and not _is_blocked_other_than_s3(host):
            block_s3(host, msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, settings.message()))
    return None


def _update_backup_settings(host: Host) -> None:
    """Render pgbackrest.conf (and Patroni's configuration) on this unit."""
    apply_config(host)


def _is_blocked_other_than_s3(host: Host) -> bool:
    status = host.get_status()
    return status.is_blocked and not msg.is_s3_block_message(status.message)


def _could_initialise_stanza(host: Host, settings: S3Settings, store: ObjectStore) -> bool:
    """Bucket, then repository ownership
    (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository), then
    ``stanza-create``; each failure sets its own Blocked message."""
    host.set_status(UnitStatus.maintenance(msg.INITIALISING_STANZA))
    if not _ensure_bucket(host, store):
        return False
    problem = repository_problem(host, settings, store) or claim_repository(host, settings, store)
    if problem is not None:
        block_s3(host, problem)
        return False
    return _create_stanza(host)


def _ensure_bucket(host: Host, store: ObjectStore) -> bool:
    """True to go on. A 403 on the bucket check (wrong keys, or keys without access) says
    neither that the bucket exists nor that it does not: the next step, pgBackRest reading
    the repository with the same keys, fails with its own error line (issue 4: a wrong
    secret key blocks with ``failed to initialize stanza``). Nothing is written before
    that read succeeds."""
    try:
        if store.ensure_bucket():
            log.info("Created the S3 bucket")
    except ObjectStoreForbidden as exc:
        log.warning("S3 refused the bucket check (%s): pgBackRest will tell why", exc)
    except ObjectStoreError as exc:
        log.error("S3 bucket cannot be accessed or created: %s", exc)
        block_s3(host, msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, str(exc)))
        return False
    return True


def _create_stanza(host: Host) -> bool:
    result = host.backup_tool.stanza_create()
    if result.ok:
        return True
    reason = host.backup_tool.error_line(result)
    log.error("pgBackRest stanza-create failed: %s", reason)
    block_s3(host, msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, reason))
    return False


def _is_wal_archiving_to_s3_working(
    host: Host, settings: S3Settings, store: ObjectStore
) -> bool | None:
    """Archiving on (``stanza``), reload, ``pgbackrest check`` with retries; on failure
    WAL held again and Blocked. On success the leader is Active (the marker was written
    and read back before the stanza was created: ``claim_repository``).

    None means "not known yet": a leader that is not the primary turned archiving on in
    the app bag, but the primary renders its ``archive_command`` only when it sees that
    bag, which is after this hook ends (Juju commits peer data at the end of a hook). The
    hook then defers, keeping ``stanza``, and its re-run decides.
    """
    host.set_status(UnitStatus.maintenance(msg.CHECKING_STANZA))
    host.app_data[STANZA] = host.stanza_name
    # Ownership was verified for exactly these settings (_could_initialise_stanza): WAL
    # goes to this repository now, and is held again if the settings name another one.
    host.app_data[REPOSITORY] = settings.repository_id
    host.app_data[ARCHIVE_HELD] = ""
    apply_config(host)
    result = _check_with_retries(host)
    if not result.ok:
        reason = host.backup_tool.error_line(result)
        if _primary_not_archiving_yet(host, reason):
            log.info("The primary does not archive with pgBackRest yet; checking again later")
            return None
        log.error("pgBackRest check failed: %s", reason)
        block_s3(host, msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, reason))
        return False
    host.app_data[S3_BLOCK_MESSAGE] = ""
    host.set_status(UnitStatus.active())
    log.info("WAL archiving into stanza %s works", host.stanza_name)
    return True


# pgBackRest's error 068: "archive_command '...' must contain pgbackrest".
_ARCHIVE_COMMAND_NOT_PGBACKREST = "[068]"


def _primary_not_archiving_yet(host: Host, reason: str) -> bool:
    if _ARCHIVE_COMMAND_NOT_PGBACKREST not in reason:
        return False
    return host.workload.is_primary() is False


def _check_with_retries(host: Host) -> CommandResult:
    result = host.backup_tool.check()
    for _ in range(CHECK_ATTEMPTS - 1):
        if result.ok or _primary_not_archiving_yet(host, host.backup_tool.error_line(result)):
            break  # success, or nothing this hook can change by waiting
        SLEEP(CHECK_RETRY_DELAY_SECONDS)
        result = host.backup_tool.check()
    return result


# ===========================================================================
# s3-credentials-gone


def on_s3_credentials_gone(host: Host) -> Outcome:
    """Archiving off (the leader clears ``stanza``), re-render without a repository, and
    clear an S3 block: there is nothing left to fix on the S3 side."""
    if host.is_leader():
        # The user removed the repository: no backups, so no WAL to keep for one.
        host.app_data[STANZA] = ""
        host.app_data[ARCHIVE_HELD] = ""
        host.app_data[S3_BLOCK_MESSAGE] = ""
    apply_config(host)
    status = host.get_status()
    if status.is_blocked and msg.is_s3_block_message(status.message):
        host.set_status(UnitStatus.active())
    return Done()
