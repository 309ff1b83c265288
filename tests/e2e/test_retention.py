"""Retention and expire on a real one-unit local cluster (issue 15): the retention goes
into pgbackrest.conf and `status`; `expire` removes the oldest full backup with its WAL
and says so (read from the repository, before and after); pgBackRest applies the same
retention by itself after the next backup; a refused value changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from e2e_helpers import segment_keys

from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

CliRunner = Callable[..., Any]


def _backup(run_cli: CliRunner, name: str, ref: str) -> str:
    time.sleep(1.1)  # labels have a one-second resolution
    res = run_cli("run", "--name", name, ref, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["results"]["backup-id"])


def _listed(run_cli: CliRunner, name: str, ref: str) -> list[dict[str, Any]]:
    res = run_cli("run", "--name", name, ref, "list-backups", "format=json", "--json")
    assert res.returncode == 0, res.stderr
    # --json prints the results with list-backups' JSON already parsed.
    rows: list[dict[str, Any]] = json.loads(res.stdout)["results"]["backups"]
    return [r for r in rows if r["action"] != "restore"]


def test_retention_full_two_expires_the_oldest_with_its_wal(
    make_cluster: Callable[..., Cluster], run_cli: CliRunner
) -> None:
    name, ref = "retain", "retain/0"
    cluster = make_cluster(name, units=1)
    unit = cluster.unit(ref)
    assert run_cli("s3", "set", "--name", name).returncode == 0
    unit.query("create table t (v int)")
    ids = []
    for n in range(3):
        unit.query("insert into t values (%s)", (n,))
        ids.append(_backup(run_cli, name, ref))
    rows = _listed(run_cli, name, ref)
    assert [r["backup-id"] for r in rows] == ids
    before = set(segment_keys(cluster))

    # A refused value: exit 2, the reason, nothing stored.
    res = run_cli("retention", "set", "--name", name, "--full", "0")
    assert res.returncode == 2 and "retention-full '0' is not a whole number" in res.stderr
    assert "retention-full: -" in run_cli("retention", "show", "--name", name).stdout

    res = run_cli("retention", "set", "--name", name, "--full", "2")
    assert res.returncode == 0, res.stderr
    conf = unit.pgbackrest_config.read_text()
    assert "repo1-retention-full-type=count\nrepo1-retention-full=2\n" in conf
    status = json.loads(run_cli("status", "--name", name, "--json").stdout)
    assert status["s3"]["backups"]["retention"] == "full: 2 backups (count)"

    res = run_cli("run", "--name", name, ref, "expire", "--json")
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)["results"]
    assert results["expire-status"] == "backups expired"
    assert results["expired-backups"] == ids[0]
    assert results["kept-backups"] == "2"
    assert results["retention"] == "full: 2 backups (count)"
    oldest, _, up_to = results["expired-wal"].partition(" up to ")
    assert oldest == min(before) and up_to
    assert [r["backup-id"] for r in _listed(run_cli, name, ref)] == ids[1:]
    # The WAL only the expired backup needed is gone from the repository too.
    after = set(segment_keys(cluster))
    assert oldest not in after and min(after) == up_to
    assert all(seg < up_to for seg in before - after)

    # Nothing more to expire now.
    res = run_cli("run", "--name", name, ref, "expire", "--json")
    assert json.loads(res.stdout)["results"]["expire-status"] == "nothing to expire"

    # pgBackRest applies the retention itself after the next backup.
    ids.append(_backup(run_cli, name, ref))
    assert [r["backup-id"] for r in _listed(run_cli, name, ref)] == ids[2:]

    res = run_cli("retention", "unset", "--name", name)
    assert res.returncode == 0, res.stderr
    assert "repo1-retention-full=9999999" in unit.pgbackrest_config.read_text()
