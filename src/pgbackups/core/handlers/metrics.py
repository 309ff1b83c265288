"""The facts behind the backup metrics (docs/behaviour/metrics.md), read through the host:
pgBackRest info of this cluster's stanza, the archive's gaps and recoverable window, the
verify record. The archiver's statistics come from the caller (they are the primary's).
A part that cannot be read is left out of the samples (logged), never a failure: metrics
must answer most when something is wrong."""

from __future__ import annotations

import logging

from pgbackups.core.archive import ChainProblem, gaps
from pgbackups.core.handlers._steps import parse_settings
from pgbackups.core.handlers._wal import recoverable_windows
from pgbackups.core.host import BackupToolError, Host, ObjectStoreError
from pgbackups.core.metrics import ArchiverStats, Family, backup_families
from pgbackups.core.repository import StanzaInfo
from pgbackups.core.settings import S3Settings
from pgbackups.core.verification import Verified, decode, verify_key
from pgbackups.core.window import Window

log = logging.getLogger(__name__)


def collect_metrics(host: Host, archiver: ArchiverStats | None) -> list[Family]:
    settings = parse_settings(host.s3_parameters())
    stanza: StanzaInfo | None = None
    windows: list[Window] = []
    holes: list[ChainProblem] = []
    verified: dict[str, Verified] = {}
    if isinstance(settings, S3Settings):
        try:
            found = [s for s in host.backup_tool.info(host.stanza_name) if s.exists]
            stanza = found[0] if found else None
            if stanza is not None:
                segments = host.backup_tool.archive_segments(stanza.name)
                holes = gaps(segments)
                windows = recoverable_windows(host, stanza, segments)
        except BackupToolError as exc:
            log.warning("metrics: the repository could not be read: %s", exc)
        try:
            record = decode(host.object_store(settings).get(verify_key(settings.path)))
            verified = record.get(host.stanza_name, {})
        except ObjectStoreError as exc:
            log.warning("metrics: the verify record could not be read: %s", exc)
    return backup_families(
        stanza,
        windows=windows,
        gaps=holes,
        verified=verified,
        archiver=archiver,
        now=host.now(),
    )
