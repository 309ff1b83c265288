"""verify on a real one-unit local cluster (docs/behaviour/verify.md): a clean repository
verifies and list-backups shows each backup's last verification; one object of a backup
overwritten through the S3 API makes verify fail naming that backup, not the other."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import repository_bucket

from pgbackups.core.ids import parse_id
from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

NAME = "verify"
UNIT = f"{NAME}/0"


def run(run_cli: Callable[..., Any], *args: str) -> Any:
    return run_cli("run", "--name", NAME, UNIT, *args, timeout=600)


def parse_exposition(text: str) -> dict[str, float]:
    """``name{labels} value`` lines of the text exposition (comments skipped)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def listed(run_cli: Callable[..., Any]) -> dict[str, Any]:
    res = run(run_cli, "list-backups", "format=json", "--json")
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)["results"]["backups"]
    return {r["backup-id"]: r for r in rows}


def test_a_corrupted_object_fails_verify_naming_its_backup(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any]
) -> None:
    started = time.monotonic()
    cluster = make_cluster(NAME, units=1)
    assert run_cli("s3", "set", "--name", NAME).returncode == 0
    cluster.unit(UNIT).query("create table t as select g from generate_series(1, 50000) g")
    ids = []
    for _ in range(2):
        res = run(run_cli, "create-backup", "--json")
        assert res.returncode == 0, res.stderr
        ids.append(json.loads(res.stdout)["results"]["backup-id"])
        time.sleep(1.1)  # backup ids are seconds
    first, second = ids

    res = run(run_cli, "verify", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    clean = round(time.monotonic() - started, 1)
    rows = listed(run_cli)
    assert rows[first]["last-verified"].endswith(" valid")
    assert rows[second]["last-verified"].endswith(" valid")

    # Overwrite bytes in the middle of the first backup's largest object, through S3.
    bucket, path = repository_bucket(cluster)
    prefix = f"{path}/" if path else ""
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        try:
            keys = bucket.list_keys(f"{prefix}backup/local.{NAME}/")
            mine = [k for k in keys if f"/{rows[first]['backup-path'].rsplit('/', 1)[-1]}/" in k]
            data_keys = [k for k in mine if "/bundle/" in k or "/pg_data/" in k]
            assert data_keys, mine
            sizes = {k: len(bucket.get(k) or b"") for k in data_keys}
            victim = max(sizes, key=lambda k: sizes[k])
            body = bytearray(bucket.get(victim) or b"")
            middle = len(body) // 2
            body[middle : middle + 64] = bytes(64)
            bucket.put(victim, bytes(body))
        finally:
            bucket.close()

    res = run(run_cli, "verify")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"Verification failed: backup {first}: " in res.stderr, res.stderr
    assert f"backup {second}" not in res.stderr
    rows = listed(run_cli)
    assert " invalid: " in rows[first]["last-verified"], rows[first]
    assert rows[second]["last-verified"].endswith(" valid")

    # backup-id reports one backup: the good one passes.
    res = run(run_cli, "verify", f"backup-id={second}")
    assert res.returncode == 0, res.stdout + res.stderr

    # The metrics answer with what happened (docs/behaviour/metrics.md).
    res = run_cli("metrics", "--name", NAME)
    assert res.returncode == 0, res.stderr
    samples = parse_exposition(res.stdout)
    stanza = f'stanza="local.{NAME}"'
    second_end = rows[second]["finish-time"]
    assert samples[f'pgbackups_backup_last_success_timestamp_seconds{{{stanza},type="full"}}'] == (
        parse_id(second_end).timestamp()
    )
    assert samples[f'pgbackups_backup_last_duration_seconds{{{stanza},type="full"}}'] >= 0
    assert samples[f'pgbackups_backup_last_size_bytes{{{stanza},type="full"}}'] > 0
    assert samples[f'pgbackups_backups{{{stanza},status="finished"}}'] == 2
    assert samples[f"pgbackups_stanza_status_code{{{stanza}}}"] == 0
    assert samples[f'pgbackups_verify_backup_valid{{backup_id="{first}",{stanza}}}'] == 0
    assert samples[f'pgbackups_verify_backup_valid{{backup_id="{second}",{stanza}}}'] == 1
    assert samples[f"pgbackups_archive_failed_total{{{stanza}}}"] == 0
    assert samples[f"pgbackups_archive_archived_total{{{stanza}}}"] > 0
    assert 0 <= samples[f"pgbackups_archive_lag_seconds{{{stanza}}}"] < 600
    assert samples[f"pgbackups_archive_gap_segments{{{stanza}}}"] == 0
    earliest = samples[
        f'pgbackups_recoverable_window_earliest_timestamp_seconds{{{stanza},timeline="1"}}'
    ]
    assert earliest >= parse_id(first).timestamp()
    print("verify e2e:", {"clean verify": clean, "end": round(time.monotonic() - started, 1)})
