"""The facts behind the backup metrics (docs/behaviour/metrics.md), read through the host:
pgBackRest info of this cluster's stanza, the archive's gaps and recoverable window, the
verify record. The archiver's statistics come from the caller (they are the primary's).
A part that cannot be read is left out of the samples (logged), never a failure: metrics
must answer most when something is wrong."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pgbackups.core.archive import ChainProblem
from pgbackups.core.handlers._steps import parse_settings
from pgbackups.core.handlers._wal import own_archive
from pgbackups.core.host import BackupToolError, Host, ObjectStoreError
from pgbackups.core.metrics import ArchiverStats, Family, backup_families
from pgbackups.core.repository import StanzaInfo
from pgbackups.core.settings import S3Settings
from pgbackups.core.verification import Verified, decode, verify_key
from pgbackups.core.window import Window

log = logging.getLogger(__name__)


@dataclass
class RepositoryFacts:
    """What the repository says of this cluster's stanza, read once for the metrics and,
    in the charm, the leader's status (its recoverable window)."""

    stanza: StanzaInfo | None = None
    windows: list[Window] = field(default_factory=list)
    holes: list[ChainProblem] = field(default_factory=list)
    verified: dict[str, Verified] = field(default_factory=dict)
    readable: bool = False  # False: info or the archive could not be read (logged)


def read_repository(host: Host) -> RepositoryFacts:
    facts = RepositoryFacts()
    settings = parse_settings(host.s3_parameters())
    if not isinstance(settings, S3Settings):
        return facts
    try:
        # The own archive is listed while info runs, as list-backups and status do.
        stanzas, listing = host.backup_tool.info_and_archive(host.stanza_name)
        found = [s for s in stanzas if s.name == host.stanza_name and s.exists]
        facts.stanza = found[0] if found else None
        if listing is not None:
            facts.holes, facts.windows = own_archive(
                host, stanzas, listing.timelines, listing.segments
            )
        facts.readable = True
    except BackupToolError as exc:
        log.warning("metrics: the repository could not be read: %s", exc)
    try:
        record = decode(host.object_store(settings).get(verify_key(settings.path)))
        facts.verified = record.get(host.stanza_name, {})
    except ObjectStoreError as exc:
        log.warning("metrics: the verify record could not be read: %s", exc)
    return facts


def collect_metrics(
    host: Host, archiver: ArchiverStats | None, facts: RepositoryFacts | None = None
) -> list[Family]:
    """The metrics' families; ``facts``: the repository as the caller read it already."""
    if facts is None:
        facts = read_repository(host)
    return backup_families(
        facts.stanza,
        windows=facts.windows,
        gaps=facts.holes,
        verified=facts.verified,
        archiver=archiver,
        now=host.now(),
    )
