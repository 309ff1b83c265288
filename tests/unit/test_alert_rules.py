"""The charm's alert rules (charm/src/prometheus_alert_rules/): well-formed groups, every
alert the reference has an equivalent of, and every metric an expression names is one
core/metrics.py produces (a rule on a name nobody exports never fires)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from fakes import backup, stanza_info

from pgbackups.core.metrics import ArchiverStats, backup_families

RULES = Path(__file__).parents[2] / "charm/src/prometheus_alert_rules/pgbackups.rules.yaml"
REFERENCE_EQUIVALENTS = {
    "PgBackupsBackupError",  # PgBackRestBackupError
    "PgBackupsBackupTooOld",  # PgBackRestBackupTooOld (7 days)
    "PgBackupsStanzaError",  # PgBackRestStanzaError
    "PgBackupsRepositoryUnreadable",  # PgBackRestRepoError
    "PgBackupsMetricsAbsent",  # PgBackRestExporterError
    "PgBackupsArchivingFailing",
}


def rules() -> list[dict[str, object]]:
    data = yaml.safe_load(RULES.read_text())
    (group,) = data["groups"]
    found: list[dict[str, object]] = group["rules"]
    return found


def test_every_rule_is_complete_and_the_references_are_covered() -> None:
    names = set()
    for rule in rules():
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")  # type: ignore[index]
        names.add(rule["alert"])
    assert names >= REFERENCE_EQUIVALENTS


def test_every_metric_an_expression_names_is_exported() -> None:
    now = datetime(2026, 11, 28, 16, tzinfo=UTC)
    families = backup_families(
        stanza_info(backups=[backup("20261128-143926F")]),
        archiver=ArchiverStats(1, 0, now, None),
        now=now,
    )
    exported = {f.name for f in families}
    for rule in rules():
        for name in re.findall(r"\bpgbackups_[a-z_]+", str(rule["expr"])):
            assert name in exported, (rule["alert"], name)
