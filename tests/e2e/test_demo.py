"""`pgbackups demo` (the README's first command) passes on a fresh cluster of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


def test_demo_passes_and_takes_its_cluster_down(run_cli: Cli, pgbackups_home: Path) -> None:
    proc = run_cli("demo", "--name", "demo-e2e", timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "PASS: 9 of 9 steps passed" in out
    for shown in (
        "$ pgbackups up --name demo-e2e --units 2 --tls",
        "$ pgbackups s3 set --name demo-e2e",
        "create-backup type=full",
        "create-backup type=differential",
        "restore backup-id=",
        "$ pgbackups down --name demo-e2e --purge",
    ):
        assert shown in out, shown
    assert "exactly the 10 rows of the full backup on both units; new timeline 2" in out
    assert "remove-unit" not in out and "add-unit" not in out
    assert not Cluster("demo-e2e", pgbackups_home).exists()


def test_demo_fails_with_a_summary_when_a_step_fails(run_cli: Cli, pgbackups_home: Path) -> None:
    """Without etcd, Patroni and PostgreSQL on PATH the first step fails: FAIL, exit 1."""
    proc = run_cli("demo", "--name", "demo-nopath", timeout=120, env={"PATH": "/nonexistent"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not found on PATH" in proc.stdout
    assert "FAIL: 0 of 9 steps passed" in proc.stdout
    assert not Cluster("demo-nopath", pgbackups_home).exists()


def test_demo_refuses_a_bad_name_before_anything(run_cli: Cli) -> None:
    proc = run_cli("demo", "--name", "Bad_Name", timeout=60)
    assert proc.returncode == 2
    assert "bad cluster name 'Bad_Name'" in proc.stderr
    assert "[1]" not in proc.stdout
