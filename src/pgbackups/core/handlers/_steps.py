"""Steps several charts share, and :func:`desired_config`, the one place where the peer
bags become the configuration of a unit.

- the configuration: :func:`desired_config`, :func:`apply_config`, :func:`tls_server_wanted`
  (the configuration, the TLS server and create-backup's refusal on a primary agree);
- the S3 settings as the host gives them: :func:`parse_settings`;
- the timelines restores created, which list-backups and restore read alike:
  :func:`restore_timelines`;
- the S3 block (s3-credentials-changed, and the restore's re-check of the repository):
  :func:`block_s3`, :func:`repository_problem`
  (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository), :func:`write_marker`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pgbackups.core import messages as msg
from pgbackups.core import targets
from pgbackups.core.host import (
    BackupToolError,
    Host,
    ObjectStore,
    ObjectStoreError,
    ReplicaRestore,
    RestoreTarget,
    UnitStatus,
    WorkloadConfig,
    WorkloadError,
)
from pgbackups.core.marker import ClusterMarker, enclosing_paths, marker_key, ownership_problem
from pgbackups.core.peer_keys import (
    ARCHIVE_HELD,
    CONNECTIVITY,
    CREATING_BACKUP,
    REPOSITORY,
    S3_BLOCK_MESSAGE,
    STANZA,
)
from pgbackups.core.policy import policy_or_default
from pgbackups.core.repository import StanzaInfo, TimelineRecord
from pgbackups.core.restore_state import RESTORE_STAGES, STOPPING, ReplicaSet, RestoreState
from pgbackups.core.settings import S3Settings, S3SettingsProblem, parse_s3_settings

log = logging.getLogger(__name__)


# ===========================================================================
# desired_config: the one place where peer bags become the unit's configuration


def desired_config(host: Host) -> WorkloadConfig:
    """The configuration this unit must run with, derived from the peer bags.

    - ``s3``: the parsed S3 settings; None when absent, incomplete or invalid.
    - ``stanza``: WAL is pushed while app ``stanza`` is set and the settings name the
      repository the leader verified (app ``repository``). The leader moves ``stanza`` to
      ``archive-held`` when the repository cannot be used; settings that name another
      repository (or cannot be parsed) hold WAL until the leader has verified it.
    - ``hold_wal``: WAL is kept on the unit (archive_command fails on purpose) instead of
      being discarded: only a cluster with no repository of its own discards WAL
      (docs/reliability.md, "WAL while S3 is blocked").
    - ``tls_server``: TLS material present and more than one unit (docs/behaviour/tls-server.md).
    - ``connectivity``/``creating_backup``: this unit's bag, set while a replica backs up
      (``creating-backup`` alone, on a primary that backs up, changes nothing here).
    - ``restore``: a restore in progress (app bag), as Patroni's pgBackRest bootstrap.
    - ``retention``: the operator's retention (:mod:`pgbackups.core.policy`); refused
      options retain everything rather than expire by a value nobody accepted.
    - a restore of several units: clients are refused on every unit until every unit
      runs the restored data, and ``replica_restore`` says how a unit re-creates itself
      (:func:`replica_source`).
    """
    app, unit = host.app_data, host.unit_data
    restore = RestoreState.read(app)
    cluster_restore = (
        restore is not None
        and restore.in_progress
        and restore.stage in RESTORE_STAGES
        and bool(host.peers())
    )
    settings = parse_settings(host.s3_parameters())
    s3 = settings if isinstance(settings, S3Settings) else None
    stanza, held = app.get(STANZA) or None, bool(app.get(ARCHIVE_HELD))
    verified = app.get(REPOSITORY)
    # A bag from before `repository` existed has none: its stanza was verified as it is.
    if stanza and (s3 is None or (verified and verified != s3.repository_id)):
        stanza, held = None, True
    return WorkloadConfig(
        s3=s3,
        stanza=stanza,
        hold_wal=held and stanza is None,
        tls_server=tls_server_wanted(host),
        connectivity=unit.get(CONNECTIVITY) != "off" and not cluster_restore,
        # The tags only for a hidden replica: a primary backs up with `creating-backup`
        # set too (one backup per cluster), and must not be tagged out of elections.
        # And on every unit while a cluster restore waits for the units to stop: a
        # replica still running (the leader is the last to stop) took the leader lock
        # once the primary stopped and promoted itself for a few seconds; that stray
        # timeline reached the archive, the restored primary took the next number, and
        # the re-created replicas asked it for the stray timeline's history and never
        # streamed (seen with tests/e2e/test_network_faults.py). Off again from
        # `restoring` on: Patroni never bootstraps a member tagged nofailover.
        creating_backup=(bool(unit.get(CREATING_BACKUP)) and unit.get(CONNECTIVITY) == "off")
        or (cluster_restore and restore is not None and restore.stage == STOPPING),
        restore=restore_target(restore, host.stanza_name),
        retention=policy_or_default(host.config_options()).retention,
        replica_restore=(
            replica_source(host, restore)
            if cluster_restore and restore
            else _replica_after_restore(host, stanza)
        ),
    )


def replica_source(host: Host, state: RestoreState) -> ReplicaRestore:
    """Where the other units re-create themselves from after a cluster restore: the
    repository (the backup set the primary was restored from) when it is this cluster's
    stanza and archiving pushes the restored primary's timeline into it; otherwise the
    primary (pg_basebackup). A standby restored from another cluster's archive would
    replay that cluster's WAL past the point the restored primary branched at, and could
    never follow it."""
    own = (state.stanza or host.stanza_name) == host.stanza_name
    if own and host.app_data.get(STANZA):
        return ReplicaRestore(stanza=host.stanza_name, label=state.label or None)
    return ReplicaRestore(stanza=None)


def _replica_after_restore(host: Host, stanza: str | None) -> ReplicaRestore | None:
    """After a restore, until a backup taken since exists: a unit that creates itself
    as a replica restores the set the restore used (restore_state.ReplicaSet)."""
    pinned = ReplicaSet.read(host.app_data)
    if pinned is None or stanza is None:
        return None
    return ReplicaRestore(stanza=stanza, label=pinned.label)


def restore_target(state: RestoreState | None, own_stanza: str) -> RestoreTarget | None:
    """A restore in progress as Patroni's pgBackRest bootstrap (docs/restore.md).

    pgBackRest 2.45 accepts ``--target`` only with ``--type=time``, ``--target-timeline``
    not with ``--type=immediate`` (it writes ``recovery_target_timeline = 'current'``
    itself), and ``--target-action`` not with ``--type=default``.
    """
    if state is None or not state.in_progress:
        return None
    restore_type = state.type or targets.IMMEDIATE
    return RestoreTarget(
        stanza=state.stanza or own_stanza,
        label=state.label or None,
        type=restore_type,
        target=state.to_time if restore_type == targets.TIME and state.to_time else None,
        target_timeline=state.timeline if restore_type != targets.IMMEDIATE else None,
        target_action=None if restore_type == targets.DEFAULT else "promote",
    )


def apply_config(host: Host) -> None:
    host.workload.apply_config(desired_config(host))


def tls_server_wanted(host: Host) -> bool:
    """The pgBackRest TLS server runs only with TLS and more than one unit
    (docs/behaviour/tls-server.md): the configuration, the server itself and create-backup's refusal
    on a primary agree."""
    return host.tls() is not None and host.planned_units() > 1


def parse_settings(raw: Mapping[str, str] | None) -> S3Settings | S3SettingsProblem | None:
    """The host's S3 parameters parsed; None when there are none (no relation)."""
    return None if raw is None else parse_s3_settings(raw)


def restore_timelines(host: Host, stanzas: list[StanzaInfo]) -> list[TimelineRecord]:
    """The timelines restores created, of every stanza that exists (list-backups and the
    restore target read the same ones). Raises BackupToolError."""
    timelines: list[TimelineRecord] = []
    for stanza in stanzas:
        if stanza.exists:
            timelines += host.backup_tool.timelines(stanza.name)
    return timelines


# ===========================================================================
# The S3 block and the repository's ownership (docs/behaviour/s3-credentials.md)


def block_s3(host: Host, message: str) -> None:
    """An S3 block on the leader: the message kept in the app bag (so that update-status
    can retry and a new leader shows it), Blocked, and WAL no longer pushed.

    WAL is held, not discarded, while the repository was this cluster's (``stanza`` was
    set): PostgreSQL keeps the segments and they are archived once the block clears. Only
    a repository of another cluster's turns archiving off: holding WAL for a repository
    this cluster may never write into would only fill the disk."""
    app = host.app_data
    foreign = message == msg.ANOTHER_CLUSTER_REPOSITORY
    stanza = app.get(STANZA)
    if stanza or (foreign and app.get(ARCHIVE_HELD)):
        app[STANZA] = ""
        app[ARCHIVE_HELD] = "" if foreign else (stanza or app.get(ARCHIVE_HELD) or "")
        apply_config(host)
    if foreign and msg.is_restored_from_another_cluster(app.get(S3_BLOCK_MESSAGE) or ""):
        # The restore from that repository worked: keep saying so, and what to do next
        # (the retry shows "initialising stanza" first: the bag, not the status, remembers).
        message = msg.restored_from_another_cluster()
    host.app_data[S3_BLOCK_MESSAGE] = message
    host.set_status(UnitStatus.blocked(message))


def repository_problem(host: Host, settings: S3Settings, store: ObjectStore) -> str | None:
    """The Blocked message when the repository is not empty and not ours
    (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository)."""
    enclosing = _enclosing_repository(settings, store)
    if enclosing is not None:
        log.error("The S3 path %s is inside the repository at %s", settings.path, enclosing)
        return msg.with_reason(
            msg.FAILED_TO_INITIALIZE_STANZA,
            f"the path {settings.path} is inside the repository at {enclosing}",
        )
    try:
        stanzas = host.backup_tool.info()
    except BackupToolError as exc:
        log.error("pgBackRest cannot list the repository: %s", exc)
        return msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, str(exc))
    try:
        body = store.get(marker_key(settings.path))
    except ObjectStoreError as exc:
        log.error("The cluster marker cannot be read: %s", exc)
        return msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, str(exc))
    system_id = system_identifier(host)
    problem = ownership_problem(
        stanzas=stanzas,
        marker_body=body,
        stanza_name=host.stanza_name,
        cluster_id=host.cluster_id,
        system_identifier=system_id,
    )
    if problem is None:
        return None
    log.error("The S3 repository cannot be used: %s", problem.reason)
    if problem.foreign:
        return msg.ANOTHER_CLUSTER_REPOSITORY
    return msg.with_reason(msg.FAILED_TO_INITIALIZE_STANZA, problem.reason)


def _enclosing_repository(settings: S3Settings, store: ObjectStore) -> str | None:
    """The path of a repository (its cluster marker) that ``settings.path`` lies inside.
    A marker that cannot be read counts as none: the marker of the path itself is read
    next, and its failure blocks."""
    for path in enclosing_paths(settings.path):
        try:
            if store.get(marker_key(path)) is not None:
                return path
        except ObjectStoreError as exc:
            log.warning("The marker at %s could not be read: %s", path, exc)
    return None


def claim_repository(host: Host, settings: S3Settings, store: ObjectStore) -> str | None:
    """Write the cluster marker, then read it back: None when the repository is ours,
    else the Blocked message. The marker is required before archiving starts
    (docs/security.md, "Two clusters, one repository"); reading it back catches a
    second cluster that claimed the same empty path at the same moment (the last
    writer keeps it, the other sees its marker and stops)."""
    marker = _own_marker(host)
    if marker is None:
        return msg.with_reason(
            msg.FAILED_TO_INITIALIZE_STANZA, "the PostgreSQL system identifier cannot be read"
        )
    key = marker_key(settings.path)
    try:
        store.put(key, marker.encode())
        written = store.get(key)
    except ObjectStoreError as exc:
        log.error("The cluster marker cannot be written: %s", exc)
        return msg.with_reason(msg.FAILED_TO_ACCESS_CREATE_BUCKET, str(exc))
    if written != marker.encode():
        log.error("Another cluster claimed the repository at the same time: %r", written)
        return msg.ANOTHER_CLUSTER_REPOSITORY
    return None


def write_marker(host: Host, settings: S3Settings, store: ObjectStore) -> None:
    """Claim the repository again after a restore (the marker names the cluster and its
    system identifier). A failure is logged: the restore stands."""
    marker = _own_marker(host)
    if marker is None:
        log.warning("Cluster marker not written: the system identifier cannot be read")
        return
    try:
        store.put(marker_key(settings.path), marker.encode())
    except ObjectStoreError as exc:
        log.warning("Cluster marker not written: %s", exc)


def _own_marker(host: Host) -> ClusterMarker | None:
    """This cluster's marker; None while PostgreSQL cannot tell its system identifier."""
    system_id = system_identifier(host)
    if system_id is None:
        return None
    return ClusterMarker(host.stanza_name, host.cluster_id, system_id)


def system_identifier(host: Host) -> int | None:
    """The cluster's system identifier, or None while PostgreSQL cannot tell it."""
    return host.workload.system_identifier()


def workload_done(action: Callable[[], object]) -> bool:
    """Run a workload action; False (its reason logged) when it raised WorkloadError,
    the protocol's one way of failing (core/host.py, ``Workload``)."""
    try:
        action()
    except WorkloadError as exc:
        log.error("%s", exc)
        return False
    return True
