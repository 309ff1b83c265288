"""The benchmark package imports, parses its arguments, and its pure helpers compute
what docs/performance.md says they compute. (Not the benchmark itself: make bench.)"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import cli, fabricate, report, restore_phases, stats

from pgbackups.core.ids import label_time

# A real backup.info written by pgBackRest 2.45 (S3 key-free: it holds none).
BACKUP_INFO = """[backrest]
backrest-format=5
backrest-version="2.45"

[backup:current]
20261128-154154F={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000002","backup-archive-stop":"000000010000000000000003","backup-error":false,"backup-info-repo-size":2847134,"backup-info-repo-size-delta":2847134,"backup-info-size":23267234,"backup-info-size-delta":23267234,"backup-lsn-start":"0/2000028","backup-lsn-stop":"0/3000050","backup-timestamp-start":1795880514,"backup-timestamp-stop":1795880516,"backup-type":"full","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}

[db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7713248041118509082
db-version="15"

[db:history]
1={"db-catalog-version":202209061,"db-control-version":1300,"db-system-id":7713248041118509082,"db-version":"15"}

[backrest]
backrest-checksum="760445276445403e9631205dd5aad7d3b6f128e1"
"""


# --- stats ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500", 500_000_000),
        ("500MB", 500_000_000),
        ("1.5GB", 1_500_000_000),
        ("64MiB", 64 * 1024**2),
        (" 30 mb ", 30_000_000),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert stats.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "5 parsecs"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        stats.parse_size(text)


def test_parse_sizes_sorted_and_distinct() -> None:
    assert stats.parse_sizes("60,30,60MB") == [30_000_000, 60_000_000]


def test_median_and_ratio() -> None:
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        stats.median([])
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 2.0) is None
    assert stats.fmt_ratio(1.5) == "1.50x"
    assert stats.fmt_ratio(None) == "n/a"


def test_throughput_and_percentile() -> None:
    assert stats.throughput(100 * stats.MB, 4.0) == 25.0
    assert stats.throughput(1, 0) is None
    assert stats.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert stats.percentile([1.0, 2.0], 1.0) == 2.0


def test_render_table() -> None:
    text = stats.render_table(["a", "bb"], [["x", "1"], ["yyy", "22"]])
    assert text.splitlines()[0] == "| a   | bb |"
    assert text.splitlines()[3] == "| yyy | 22 |"
    with pytest.raises(ValueError):
        stats.render_table(["a"], [["1", "2"]])


# --- arguments ---------------------------------------------------------------


def test_quick_defaults() -> None:
    settings = cli.parse_args(["--quick"])
    assert settings.quick
    assert settings.repeat == 1
    assert settings.sizes == [30_000_000, 60_000_000]
    assert settings.list_backups == 3000


def test_full_defaults_and_overrides() -> None:
    settings = cli.parse_args([])
    assert settings.repeat == 3
    assert settings.sizes[-1] == 500_000_000
    assert len(settings.sizes) >= 2
    custom = cli.parse_args(["--size", "200MB", "--sizes", "50,100,400", "--repeat", "5"])
    assert custom.sizes == [50_000_000, 100_000_000, 200_000_000]
    assert custom.repeat == 5


def test_cluster_units_default_and_skip() -> None:
    assert cli.parse_args([]).cluster_units == 3
    assert cli.parse_args(["--quick", "--cluster-units", "0"]).cluster_units == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeat", "0"],
        ["--size", "huge"],
        ["--list-backups", "1"],
        ["--cluster-units", "1"],
        ["--cluster-units", "-2"],
    ],
)
def test_bad_arguments_exit(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(argv)


# --- fabricated backups ------------------------------------------------------------


def test_info_checksum_matches_pgbackrest() -> None:
    assert fabricate.checksum_ok(BACKUP_INFO)
    assert not fabricate.checksum_ok(BACKUP_INFO.replace("23267234", "23267235", 1))
    # Rendering what was parsed gives a file with the same checksum.
    again = fabricate.render_info(fabricate.parse_info(BACKUP_INFO))
    assert fabricate.checksum_ok(again)
    assert '"760445276445403e9631205dd5aad7d3b6f128e1"' in again


def test_plan_month_nightly_full_then_incrementals() -> None:
    before = datetime(2026, 11, 28, 15, 41, 54, tzinfo=UTC)
    copies = fabricate.plan_month(3000, before=before, full_template="F", incr_template="I")
    assert len(copies) == 3000
    fulls = [c for c in copies if c.type == "full"]
    assert len(fulls) == 32  # ceil(3000 / 96) nights
    assert all(c.start.hour == 0 and c.start.minute == 0 for c in fulls)
    assert all(c.start < before - timedelta(days=1) for c in copies)
    assert [c.label for c in copies] == sorted(c.label for c in copies)
    assert len({c.label for c in copies}) == 3000
    first_incr, second_incr = copies[1], copies[2]
    assert first_incr.type == "incr" and first_incr.label.endswith("I")
    assert first_incr.start - copies[0].start == timedelta(minutes=15)
    assert first_incr.prior == copies[0].label and first_incr.references == copies[0].label
    assert second_incr.prior == first_incr.label and second_incr.references == copies[0].label
    assert label_time(second_incr.label) == second_incr.start
    # The next night starts a new chain.
    assert copies[96].type == "full" and copies[97].references == copies[96].label


def test_plan_wal_follows_the_last_segment() -> None:
    assert fabricate.plan_wal(7, 3) == [8, 9, 10]
    assert fabricate.plan_wal(7, 0) == []


def test_add_to_backup_info_rewrites_entry() -> None:
    full = "20261128-154154F"
    before = label_time(full)
    copies = fabricate.plan_month(2 * 96, before=before, full_template=full, incr_template=full)
    copies = [c for c in copies if c.type == "full"]
    text, count = fabricate.add_to_backup_info(BACKUP_INFO, copies, {full: None})
    assert count == 3
    assert fabricate.checksum_ok(text)
    entry = json.loads(fabricate.parse_info(text)["backup:current"][copies[0].label])
    assert entry["backup-timestamp-start"] == int(copies[0].start.timestamp())


def test_rewrite_incremental_manifest_prior_and_references() -> None:
    full, incr = "20261128-155127F", "20261128-155127F_20261128-155130I"
    manifest = fabricate.render_info(
        {
            "backup": {
                "backup-label": f'"{incr}"',
                "backup-prior": f'"{full}"',
                "backup-reference": f'"{full},{incr}"',
                "backup-timestamp-start": "1795881090",
                "backup-timestamp-stop": "1795881091",
                "backup-type": '"incr"',
            },
            "target:file": {"pg_data/PG_VERSION": f'{{"reference":"{full}","size":3}}'},
        }
    )
    night = "20261101-000000F"
    previous = f"{night}_20261101-001500I"
    copy = fabricate.Copy(
        f"{night}_20261101-003000I",
        "incr",
        incr,
        previous,
        datetime(2026, 11, 1, 0, 30, tzinfo=UTC),
        base=night,
    )
    text = fabricate.rewrite_manifest(manifest, incr, copy)
    assert fabricate.checksum_ok(text)
    backup = fabricate.parse_info(text)["backup"]
    assert backup["backup-prior"] == f'"{previous}"'
    assert backup["backup-reference"] == f'"{night},{copy.label}"'
    assert (
        f'"reference":"{night}"' in fabricate.parse_info(text)["target:file"]["pg_data/PG_VERSION"]
    )


def test_rewrite_manifest_references() -> None:
    full, diff = "20261128-155127F", "20261128-155127F_20261128-155130D"
    manifest = fabricate.render_info(
        {
            "backup": {
                "backup-label": f'"{diff}"',
                "backup-prior": f'"{full}"',
                "backup-reference": f'"{full},{diff}"',
                "backup-timestamp-start": "1795881090",
                "backup-timestamp-stop": "1795881091",
                "backup-type": '"diff"',
            },
            "target:file": {"pg_data/PG_VERSION": f'{{"reference":"{full}","size":3}}'},
        }
    )
    copy = fabricate.Copy(
        "20261101-000000F_20261101-010000D",
        "diff",
        diff,
        "20261101-000000F",
        datetime(2026, 11, 1, 1, tzinfo=UTC),
    )
    text = fabricate.rewrite_manifest(manifest, diff, copy)
    assert fabricate.checksum_ok(text)
    sections = fabricate.parse_info(text)
    assert sections["backup"]["backup-label"] == f'"{copy.label}"'
    assert sections["backup"]["backup-reference"] == f'"{copy.prior},{copy.label}"'
    assert '"reference":"20261101-000000F"' in sections["target:file"]["pg_data/PG_VERSION"]
    assert sections["backup"]["backup-timestamp-stop"] == str(int(copy.start.timestamp()) + 1)


# --- summary ---------------------------------------------------------------------


def test_summarize_ratios() -> None:
    results = {
        "sizes": [
            {
                "data": {"database_bytes": 60 * stats.MB},
                "backups": {"full:pgbackups": [4.0, 2.0, 3.0], "full:direct": [2.0, 2.0, 2.0]},
                "backup_extra": {"full_size": [60 * stats.MB]},
                "restores": {"restore:pgbackups": [9.0], "restore:direct": [3.0]},
            }
        ]
    }
    summary = report.summarize(results)
    ratios = {r["measure"].split(" (")[0]: r["ratio"] for r in summary["ratios"]}
    assert ratios["pgbackups create-backup full"] == 1.5
    assert ratios["pgbackups restore --wait, until writable"] == 3.0
    assert summary["scaling"][0]["backup pgbackups MB/s"] == 20.0
    assert "1.50x" in report.render_text(summary, 3)


def test_cluster_restore_ratio_and_issue_14_targets() -> None:
    """The N-unit restore against N bare restores side by side; the one-unit restore
    against issue 14's 1.5x, the N-unit figure reported beside it."""
    results = {
        "sizes": [
            {
                "data": {"database_bytes": 60 * stats.MB},
                "backups": {"full:pgbackups": [3.0], "full:direct": [2.0]},
                "backup_extra": {"full_size": [60 * stats.MB]},
                "restores": {"restore:pgbackups": [4.2], "restore:direct": [3.0]},
            }
        ],
        "cluster_restore": {
            "units": 3,
            "values": {
                "cluster-restore:pgbackups": [20.0, 24.0],
                "cluster-restore:direct": [8.0, 8.0],
            },
        },
    }
    summary = report.summarize(results)
    rows = {r["measure"].split(" (")[0]: r for r in summary["ratios"]}
    cluster = rows["pgbackups restore --wait of 3 units, until every replica streams"]
    assert (cluster["value_s"], cluster["baseline_s"], cluster["ratio"]) == (22.0, 8.0, 2.75)
    assert cluster["baseline"] == "3 bare restores side by side, until all writable"
    got = {
        t["target"].split(" (")[0]: (t["ratio"], t["limit"], t["met"])
        for t in summary["ratio_targets"]
    }
    # Issue 14's 1.5x is the one-unit restore's; the N-unit figure is reported only.
    assert got == {
        "pgbackups restore --wait, until writable": (1.4, 1.5, True),
        "pgbackups restore --wait of 3 units, until every replica streams": (2.75, None, None),
    }
    text = report.render_text(summary, 2)
    assert "Restore targets (issue 14" in text and "<= 1.50x" in text and "reported" in text
    assert "MISSED" not in text


def test_restore_phases_reads_pgbackrests_restore_lines_after_the_start(tmp_path: Path) -> None:
    """The pgBackRest console lines Patroni's log holds (local time, milliseconds); an
    earlier restore's lines are left out."""
    log_file = tmp_path / "patroni.log"
    log_file.write_text(
        "2026-12-02 10:00:00.000 P00   INFO: restore command begin 2.45: --stanza=x\n"
        "2026-12-02 10:00:05.000 P00   INFO: restore command end: completed successfully\n"
        "2026-12-02 10:06:30,159 INFO: trying to bootstrap from leader 'crestore-0'\n"
        "2026-12-02 10:06:30.191 P00   INFO: restore command begin 2.45: --config=/x\n"
        "2026-12-02 10:06:33.441 P00   INFO: restore command end: completed successfully\n"
    )
    since = datetime(2026, 12, 2, 10, 6, 0).timestamp()
    marks = restore_phases._pgbackrest_times(log_file, since)
    assert round(marks["end"] - marks["begin"], 3) == 3.25
    assert marks["begin"] == datetime(2026, 12, 2, 10, 6, 30, 191000).timestamp()


def test_targets_met_and_missed() -> None:
    results = {
        "fixed_cost": {"fixed:pgbackups": [2.6, 2.5, 2.7], "fixed:direct": [2.2, 2.3, 2.1]},
        "cli": {"cli:help": [0.1, 0.12], "cli:status": [0.6, 0.7], "cli:python": [0.01]},
        "list_backups": {
            "backups": 3000,
            "wal_segments": 46080,
            "real_backups": 2,
            "few": {"list:pgbackups": [0.2]},
            "many": {"list:pgbackups": [2.0], "list:floor": [1.8]},
        },
    }
    got = {t["target"].split(" (")[0]: (t["seconds"], t["met"]) for t in report.targets(results)}
    assert got["fixed cost per create-backup"] == (0.4, False)  # 2.6 - 2.2
    assert got["pgbackups --help"] == (0.11, True)
    assert got["pgbackups status --json, running cluster"] == (0.65, False)
    assert got["list-backups, a month of backups"] == (2.0, False)
    summary = report.summarize(results)
    text = report.render_text(summary, 3)
    assert "MISSED" in text and "3000 backups, 46080 WAL" in text
    rows = {r["measure"]: r for r in summary["ratios"] if r["section"] == "fixed cost"}
    assert rows["pgbackups create-backup incremental (tiny db)"]["baseline_s"] == 2.2
