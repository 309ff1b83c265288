"""The backup metrics (docs/behaviour/metrics.md): what the repository, the archiver, the
recoverable window and the verify record say, as metric families.

Pure: the caller reads the facts (pgBackRest info, the window, the verify record,
``pg_stat_archiver`` on the primary) and ``adapters/prometheus.py`` renders the families
in Prometheus' text exposition. Names follow Prometheus' conventions: a ``pgbackups_``
prefix, base units (seconds, bytes), ``_timestamp_seconds`` for a time since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pgbackups.core.archive import ChainProblem
from pgbackups.core.ids import label_to_id, parse_id
from pgbackups.core.repository import StanzaInfo
from pgbackups.core.verification import Verified
from pgbackups.core.window import Window

BACKUP_TYPES = ("full", "diff", "incr")


@dataclass(frozen=True)
class ArchiverStats:
    """``pg_stat_archiver`` on the primary (None fields: never happened)."""

    archived_count: int
    failed_count: int
    last_archived_time: datetime | None
    last_failed_time: datetime | None
    stats_reset: datetime | None = None


@dataclass
class Family:
    """One metric: its samples, each with its labels."""

    name: str
    help: str
    kind: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def backup_families(
    stanza: StanzaInfo | None,
    *,
    windows: Sequence[Window] = (),
    gaps: Sequence[ChainProblem] = (),
    verified: Mapping[str, Verified] | None = None,
    archiver: ArchiverStats | None = None,
    now: datetime,
) -> list[Family]:
    """Every metric of this cluster's stanza; a family without samples is still listed
    (its HELP says what it would hold)."""
    name = stanza.name if stanza is not None else ""
    last_ok = Family(
        "pgbackups_backup_last_success_timestamp_seconds",
        "End of the newest finished backup of each type (full, diff, incr).",
    )
    last_failed = Family(
        "pgbackups_backup_last_failure_timestamp_seconds",
        "Start of the newest failed backup of each type that the repository records.",
    )
    duration = Family(
        "pgbackups_backup_last_duration_seconds",
        "Duration of the newest finished backup of each type.",
    )
    size = Family(
        "pgbackups_backup_last_size_bytes",
        "Database size of the newest finished backup of each type.",
    )
    repo_size = Family(
        "pgbackups_backup_last_repository_size_bytes",
        "Bytes the newest finished backup of each type stored in the repository.",
    )
    count = Family("pgbackups_backups", "Backups in the repository by status.")
    stanza_status = Family(
        "pgbackups_stanza_status_code",
        "pgBackRest's status code of the stanza: 0 ok, 1 missing stanza path, 2 no valid "
        "backups, 99 unreadable; -1 when the repository could not be read at all.",
    )
    collected = Family(
        "pgbackups_collected_timestamp_seconds",
        "When these metrics were collected: a scrape or a textfile serves what was "
        "collected last (the charm's update-status, a cron job).",
    )
    collected.add(_ts(now), stanza=name)
    families = [last_ok, last_failed, duration, size, repo_size, count, stanza_status, collected]
    if stanza is None:
        stanza_status.add(-1, stanza=name)
    else:
        stanza_status.add(stanza.status_code, stanza=name)
        finished = [b for b in stanza.backups if b.finished]
        count.add(len(finished), stanza=name, status="finished")
        count.add(len(stanza.backups) - len(finished), stanza=name, status="failed")
        for kind in BACKUP_TYPES:
            ok = [b for b in finished if b.type == kind]
            if ok:
                newest = max(ok, key=lambda b: b.stop)
                last_ok.add(_ts(newest.stop), stanza=name, type=kind)
                duration.add((newest.stop - newest.start).total_seconds(), stanza=name, type=kind)
                size.add(newest.size, stanza=name, type=kind)
                repo_size.add(newest.repo_size, stanza=name, type=kind)
            bad = [b for b in stanza.backups if b.error and b.type == kind]
            if bad:
                last_failed.add(_ts(max(b.start for b in bad)), stanza=name, type=kind)
    families += _window_families(name, windows, gaps)
    families += _verify_families(name, verified or {})
    families += archiver_families(name, archiver, now)
    return families


def _window_families(
    name: str, windows: Sequence[Window], gaps: Sequence[ChainProblem]
) -> list[Family]:
    earliest = Family(
        "pgbackups_recoverable_window_earliest_timestamp_seconds",
        "Earliest time a restore-to-time reaches, per timeline (the oldest window).",
    )
    latest = Family(
        "pgbackups_recoverable_window_latest_timestamp_seconds",
        "Latest time a restore-to-time reaches, per timeline: just before the last "
        "archived commit (the newest window; absent when unknown).",
    )
    holes = Family(
        "pgbackups_archive_gap_segments",
        "WAL segments missing or empty in the repository between the lowest and highest.",
    )
    by_timeline: dict[int, list[Window]] = {}
    for window in windows:
        by_timeline.setdefault(window.timeline, []).append(window)
    for timeline, mine in sorted(by_timeline.items()):
        earliest.add(_ts(min(w.earliest for w in mine)), stanza=name, timeline=str(timeline))
        newest = max(mine, key=lambda w: w.earliest)
        if newest.latest is not None:
            latest.add(_ts(newest.latest), stanza=name, timeline=str(timeline))
    holes.add(len(gaps), stanza=name)
    return [earliest, latest, holes]


def _verify_families(name: str, verified: Mapping[str, Verified]) -> list[Family]:
    when = Family(
        "pgbackups_verify_last_timestamp_seconds",
        "When the verify action last read each backup.",
    )
    valid = Family(
        "pgbackups_verify_backup_valid",
        "1 when the last verify found the backup valid, 0 when it found it invalid.",
    )
    for label, result in sorted(verified.items()):
        backup_id = label_to_id(label)
        when.add(_ts(parse_id(result.at)), stanza=name, backup_id=backup_id)
        valid.add(1 if result.valid else 0, stanza=name, backup_id=backup_id)
    return [when, valid]


def archiver_families(name: str, stats: ArchiverStats | None, now: datetime) -> list[Family]:
    """The primary's archiver as families (a host whose primary is not the unit that
    reads the repository serves these apart: the charm)."""
    failed = Family(
        "pgbackups_archive_failed_total",
        "WAL archiving attempts that failed since the statistics were reset "
        "(pg_stat_archiver.failed_count on the primary).",
        kind="counter",
    )
    archived = Family(
        "pgbackups_archive_archived_total",
        "WAL segments archived since the statistics were reset (pg_stat_archiver).",
        kind="counter",
    )
    last_ok = Family(
        "pgbackups_archive_last_success_timestamp_seconds",
        "When the primary last archived a WAL segment (pg_stat_archiver).",
    )
    last_failed = Family(
        "pgbackups_archive_last_failure_timestamp_seconds",
        "When archiving last failed on the primary (pg_stat_archiver).",
    )
    lag = Family(
        "pgbackups_archive_lag_seconds",
        "Seconds since the primary last archived a WAL segment; with no success yet, since "
        "the statistics were reset. Grows while archiving fails or WAL is idle.",
    )
    families = [failed, archived, last_ok, last_failed, lag]
    if stats is None:
        return families
    failed.add(stats.failed_count, stanza=name)
    archived.add(stats.archived_count, stanza=name)
    if stats.last_archived_time is not None:
        last_ok.add(_ts(stats.last_archived_time), stanza=name)
    if stats.last_failed_time is not None:
        last_failed.add(_ts(stats.last_failed_time), stanza=name)
    since = stats.last_archived_time or stats.stats_reset
    if since is not None:
        lag.add(max(0.0, (now - since).total_seconds()), stanza=name)
    return families
