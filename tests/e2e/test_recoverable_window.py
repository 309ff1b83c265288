"""The recoverable window on a real one-unit local cluster (docs/behaviour/recoverable-window.md):
list-backups shows it, its latest end is 1 µs before the last archived commit (read from the
WAL), and it matches what a restore reaches at both ends: a time just outside either end is refused
before anything changes, with the window in the message; each end itself restores, with
the rows committed by then and no others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e_helpers import restore_and_wait, switch_and_wait_archived, wait_writable

from pgbackups.core.targets import parse_time
from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

NAME = "window"
UNIT = f"{NAME}/0"
NOW_UTC = "select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS.US')"


def sql(cluster: Cluster, statement: str) -> list[tuple[Any, ...]]:
    return cluster.unit(UNIT).query(statement)


def db_now(cluster: Cluster) -> datetime:
    return parse_time(str(sql(cluster, NOW_UTC)[0][0]))


def rows(cluster: Cluster) -> set[str]:
    return {r[0] for r in sql(cluster, "select v from t")}


def timeline(cluster: Cluster) -> int:
    return int(sql(cluster, "select timeline_id from pg_control_checkpoint()")[0][0])


def windows(run_cli: Callable[..., Any]) -> list[dict[str, Any]]:
    res = run_cli("run", "--name", NAME, UNIT, "list-backups", "--json")
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)["results"]
    assert "Recoverable window" in results["backups"]
    found: list[dict[str, Any]] = json.loads(results["recoverable-window"])
    return found


def pg_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def test_the_window_is_what_a_restore_reaches(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any]
) -> None:
    started = time.monotonic()
    cluster = make_cluster(NAME, units=1)
    assert run_cli("s3", "set", "--name", NAME).returncode == 0
    sql(cluster, "create table t (v text)")
    sql(cluster, "insert into t values ('before')")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = json.loads(res.stdout)["results"]["backup-id"]
    time.sleep(1.5)  # nothing committed in the second the backup ended in
    sql(cluster, "insert into t values ('a1')")
    time.sleep(0.2)
    before_last = db_now(cluster)
    sql(cluster, "insert into t values ('a2')")  # the last commit of the archive
    after_last = db_now(cluster)
    switch_and_wait_archived(cluster, cluster.unit(UNIT))

    (window,) = windows(run_cli)
    assert window["timeline"] == 1 and window["earliest-backup"] == backup_id
    assert window["gap"] is None
    earliest, latest = parse_time(window["earliest"]), parse_time(window["latest"])
    last_commit = parse_time(window["last-commit"])
    # Read from the WAL: a2's commit record, between the statements around it.
    assert before_last <= last_commit <= after_last, (before_last, last_commit, after_last)
    assert latest == last_commit - timedelta(microseconds=1)
    print("window:", window, "listed after", round(time.monotonic() - started, 1), "s")
    res = run_cli("status", "--name", NAME, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["s3"]["recoverable-window"] == [window]
    res = run_cli("status", "--name", NAME)
    assert f"recoverable window  timeline 1: {window['earliest']}" in res.stdout, res.stdout

    # Just outside either end: refused before anything changes, with the window shown.
    for outside in (latest + timedelta(microseconds=1), earliest - timedelta(microseconds=1)):
        res = restore_and_wait(run_cli, UNIT, f"restore-to-time={pg_time(outside)}")
        assert res.returncode == 1, res.stdout + res.stderr
        # Before the backup's end targets refuses first ("restore-to-time is before the
        # first backup ended…; recoverable window: …"), after it the window check does.
        assert "recoverable window" in res.stderr, res.stderr
        assert window["earliest"] in res.stderr and window["latest"] in res.stderr
        assert timeline(cluster) == 1 and rows(cluster) == {"before", "a1", "a2"}

    # The latest end itself: everything committed before the last commit (a2 is restored
    # by restore-to-time=latest only: PostgreSQL stops before a later commit, never at one).
    res = restore_and_wait(
        run_cli, UNIT, f"backup-id={backup_id}", f"restore-to-time={pg_time(latest)}"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert rows(cluster) == {"before", "a1"}
    assert timeline(cluster) == 2
    marks = {"latest end restored": round(time.monotonic() - started, 1)}

    # The earliest end: the backup's rows, nothing committed after it.
    res = restore_and_wait(
        run_cli, UNIT, f"backup-id={backup_id}", f"restore-to-time={pg_time(earliest)}"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    wait_writable(cluster.unit(UNIT))
    assert rows(cluster) == {"before"}
    assert timeline(cluster) == 3
    marks["earliest end restored"] = round(time.monotonic() - started, 1)
    print("window e2e timings (s from start):", marks)
