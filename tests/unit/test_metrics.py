"""The backup metrics (core/metrics.py, adapters/prometheus.py): each family's samples from
the repository's records, the exposition format a Prometheus scraper parses, and metrics
that still answer when the repository cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fakes import STANZA, FakeHost, backup, stanza_info
from prometheus_client.parser import text_string_to_metric_families

from pgbackups.adapters.prometheus import exposition
from pgbackups.core.archive import ChainProblem
from pgbackups.core.handlers.metrics import collect_metrics
from pgbackups.core.metrics import ArchiverStats, backup_families
from pgbackups.core.verification import Verified

NOW = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
FULL, DIFF = "20261128-143926F", "20261128-143926F_20261128-144435D"
FAILED = "20261128-143926F_20261128-150000I"


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a Prometheus scraper reads: (sample name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_family_from_the_records() -> None:
    info = stanza_info(
        backups=[backup(FULL), backup(DIFF), backup(FAILED, error=True, error_message="x")]
    )
    archiver = ArchiverStats(12, 3, NOW - timedelta(seconds=40), NOW - timedelta(seconds=5))
    families = backup_families(
        info,
        gaps=[ChainProblem("000000010000000000000005", "missing")],
        verified={FULL: Verified("2026-11-28T15:30:00Z", "invalid: 1 file missing")},
        archiver=archiver,
        now=NOW,
    )
    got = scraped(exposition(families))
    s = ("stanza", STANZA)
    full_end = datetime(2026, 11, 28, 14, 44, 26, tzinfo=UTC).timestamp()
    assert got[("pgbackups_backup_last_success_timestamp_seconds", (s, ("type", "full")))] == (
        full_end
    )
    assert got[("pgbackups_backup_last_duration_seconds", (s, ("type", "diff")))] == 300
    assert got[("pgbackups_backup_last_size_bytes", (s, ("type", "full")))] == 1000
    assert got[("pgbackups_backup_last_repository_size_bytes", (s, ("type", "full")))] == 100
    failed_at = datetime(2026, 11, 28, 15, 0, tzinfo=UTC).timestamp()
    assert got[("pgbackups_backup_last_failure_timestamp_seconds", (s, ("type", "incr")))] == (
        failed_at
    )
    assert got[("pgbackups_backups", (s, ("status", "failed")))] == 1
    assert got[("pgbackups_stanza_status_code", (s,))] == 0
    assert got[("pgbackups_archive_gap_segments", (s,))] == 1
    assert got[("pgbackups_archive_failed_total", (s,))] == 3
    assert got[("pgbackups_archive_archived_total", (s,))] == 12
    assert got[("pgbackups_archive_lag_seconds", (s,))] == 40
    verified = (("backup_id", "2026-11-28T14:39:26Z"), s)
    assert got[("pgbackups_verify_backup_valid", verified)] == 0
    assert got[("pgbackups_verify_last_timestamp_seconds", verified)] == (
        datetime(2026, 11, 28, 15, 30, tzinfo=UTC).timestamp()
    )


def test_the_window_ends_through_the_host() -> None:
    host = FakeHost()
    host.fake_tool.stanzas = [stanza_info(backups=[backup(FULL)])]
    host.fake_tool.commit_times = {"000000010000000000000002": NOW - timedelta(minutes=30)}
    got = scraped(exposition(collect_metrics(host, None)))
    labels = (("stanza", STANZA), ("timeline", "1"))
    latest = (NOW - timedelta(minutes=30, microseconds=1)).timestamp()
    assert got[("pgbackups_recoverable_window_latest_timestamp_seconds", labels)] == latest
    assert ("pgbackups_recoverable_window_earliest_timestamp_seconds", labels) in got
    # No archiver statistics given: those families are listed without samples.
    assert not [k for k in got if k[0].startswith("pgbackups_archive_failed")]


def test_an_unreadable_repository_still_answers_with_its_status() -> None:
    host = FakeHost()
    host.fake_tool.info_error = "ERROR: [039]: HTTP request failed"
    got = scraped(exposition(collect_metrics(host, None)))
    assert got[("pgbackups_stanza_status_code", (("stanza", ""),))] == -1
