"""list-backups over a month of backups, on a real one-unit cluster (not timed:
``benchmarks/`` measures it; docs/performance.md).

A user of the reference operator took a nightly full and an incremental every 15
minutes, and listing a month of them took minutes. The repository here holds that
month: 3,000 backups pgBackRest ``info`` lists as real (two real backups of a tiny
database, the rest server-side copies with rewritten manifests and ``backup.info``
entries, checksums recomputed: benchmarks/fabricate.py) and a month of WAL objects after
the real archive. Every backup must come out once, oldest first, with its type, its
reference and its path, and the contiguous month of WAL must show no gap. The month's WAL
is one segment an hour here (720 objects, not the benchmark's 43,200): every backup is the
same, the listing's cost is the benchmark's to measure, and the suite stays short.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The fabrication is the benchmark's (one way to build the month, checked by both).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import phases
from benchmarks.env import Bench

from pgbackups.core.ids import label_to_id

# Loopback: the benchmark's cluster (benchmarks/env.py) fabricates the month through an S3
# client of the workstation's, which reaches the S3 server only on loopback.
pytestmark = [pytest.mark.real, pytest.mark.loopback]

BACKUPS = 3000
WAL_PER_DAY = 24


def test_a_month_of_backups_is_listed_whole_and_in_order() -> None:
    bench = Bench()
    try:
        bench.up()
        real = phases.take_month_templates(bench)
        with phases.month_repository(bench, real, BACKUPS, WAL_PER_DAY) as month:
            assert month.total == BACKUPS
            assert month.wal_segments == month.days * WAL_PER_DAY
            doc = phases.list_backups_json(bench)
            table = bench.pgbackups("run", "--name", "bench", "0", "list-backups")
            stanza = bench.stanza
    finally:
        bench.down()
    rows: list[dict[str, Any]] = doc["results"]["backups"]
    assert "archive-gaps" not in doc["results"]  # a month of contiguous WAL: no gap
    assert "WAL archive gaps" not in table
    assert len(rows) == BACKUPS
    expected = [(c.label, c.type, c.prior) for c in month.copies] + [
        (b["label"], b["type"], b["prior"]) for b in real
    ]
    # Oldest first: the month, then the real backups it was made from.
    assert [r["backup-id"] for r in rows] == [label_to_id(label) for label, _, _ in expected]
    assert [r["action"] for r in rows] == [
        f"{kind.replace('incr', 'incremental')} backup" for _, kind, _ in expected
    ]
    assert [r["reference-backup-id"] for r in rows] == [
        label_to_id(prior) if prior else None for _, _, prior in expected
    ]
    assert [r["backup-path"] for r in rows] == [f"/{stanza}/{label}" for label, _, _ in expected]
    assert all(r["status"] == "finished" for r in rows)
    # A nightly full and 95 incrementals a day.
    fulls = sum(1 for r in rows if r["action"] == "full backup")
    assert fulls == -(-len(month.copies) // 96) + sum(1 for b in real if b["type"] == "full")
    # The table has the same rows (one line each, after its header lines).
    ids = [line.split()[0] for line in table.splitlines() if line[:4].isdigit()]
    assert ids == [r["backup-id"] for r in rows]
