"""The one-backup-per-cluster claim (core/backup_claim.py) against a real ``rclone serve s3``:
S3Bucket's list and delete, and units racing for the claim from separate processes that
start at the same instant, each with its own S3 client, as units on separate machines."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier

import pytest
from realservers import S3Server

from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core import backup_claim
from pgbackups.core.settings import S3Settings

pytestmark = pytest.mark.real

UNITS = [f"main/{n}" for n in range(4)]


def test_list_and_delete(s3: S3Server) -> None:
    bucket = S3Bucket(s3.settings("it-claim-list"))
    try:
        bucket.ensure_bucket()
        bucket.put("p/backup-claims/a", b"1")
        bucket.put("p/backup-claims/b", b"2")
        bucket.put("p/other", b"3")
        assert bucket.list_keys("p/backup-claims/") == ["p/backup-claims/a", "p/backup-claims/b"]
        bucket.delete("p/backup-claims/a")
        bucket.delete("p/backup-claims/absent")  # not an error, as S3 answers it
        assert bucket.list_keys("p/backup-claims/") == ["p/backup-claims/b"]
    finally:
        bucket.close()


def _contend(settings: S3Settings, prefix: str, unit: str, start: Barrier, out: object) -> None:
    """One unit: wait for the others, then take the claim and hold it (a backup runs)."""
    bucket = S3Bucket(settings)
    start.wait(timeout=30)
    outcome = backup_claim.take(
        bucket, prefix, unit, lambda: datetime.now(UTC), set(UNITS) - {unit}
    )
    out.put((unit, type(outcome).__name__, getattr(outcome, "reason", "")))  # type: ignore[attr-defined]
    time.sleep(3)  # hold it while the losers decide (they never wait for the winner)
    bucket.close()


@pytest.mark.parametrize("round_", range(5))
def test_units_starting_at_the_same_instant_end_with_exactly_one_claim(
    s3: S3Server, round_: int
) -> None:
    settings = s3.settings("it-claim-race")
    S3Bucket(settings).ensure_bucket()
    prefix = backup_claim.claims_prefix(f"race{round_}/backup/local.main")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(UNITS))
    out = context.Queue()
    procs = [
        context.Process(target=_contend, args=(settings, prefix, u, start, out)) for u in UNITS
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in UNITS]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    winners = [unit for unit, kind, _ in results if kind == "Claim"]
    assert len(winners) == 1, results
    [winner] = winners
    for unit, kind, reason in results:
        if unit != winner:
            assert kind == "Refused"
            assert reason.startswith(f"{winner} started one at "), results
    keys = S3Bucket(settings).list_keys(prefix)
    claims = [backup_claim.parse_key(prefix, key) for key in keys]
    assert [(c.unit, c.state) for c in claims if c is not None] == [(winner, "running")]
    assert len(keys) == 1
