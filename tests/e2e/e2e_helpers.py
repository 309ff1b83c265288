"""Helpers shared by the end-to-end tests (imported as a module: tests/e2e is on sys.path)."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import psycopg

from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core.settings import S3Settings, parse_s3_settings
from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.host import Runtime, read_s3_parameters
from pgbackups.local.runtime.unit import Unit

# Per unit: its rows per tag, or its error as text when it does not answer.
Answers = dict[str, object]


def tcp_connect(cluster: Cluster, unit_ref: str, timeout: int = 5) -> None:
    """Connect to a unit as a TCP client on its machine would (password, the unit's
    address): raises psycopg.OperationalError when refused, e.g. by pg_hba while a unit
    is hidden."""
    unit = cluster.unit(unit_ref)
    with (
        cluster.facts.inside(unit.machine),
        psycopg.connect(
            host=unit.host,
            port=unit.pg_port,
            user="postgres",
            password=cluster.passwords().superuser,
            dbname="postgres",
            connect_timeout=timeout,
        ) as conn,
    ):
        conn.execute("select 1")


def repository_bucket(cluster: Cluster) -> tuple[S3Bucket, str]:
    """The bucket ``s3 set`` gave the cluster, and the repository's path in it."""
    raw = read_s3_parameters(cluster)
    assert raw is not None
    settings = parse_s3_settings(raw)
    assert isinstance(settings, S3Settings)
    return S3Bucket(settings), settings.path.strip("/")


def repository_keys(cluster: Cluster, prefix: str) -> list[str]:
    """The keys under ``prefix`` (after the repository's path) in the cluster's bucket,
    listed from the workstation (which reaches the S3 machine when units are machines)."""
    bucket, path = repository_bucket(cluster)
    with cluster.facts.control():
        try:
            return bucket.list_keys(f"{path}/{prefix}" if path else prefix)
        finally:
            bucket.close()


def full_label(backup_id: str) -> str:
    """pgBackRest's label of a full backup from its id (docs/behaviour/backup-ids.md)."""
    return backup_id.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z") + "F"


def damage_backup(cluster: Cluster, stanza: str, backup_id: str) -> None:
    """Overwrite bytes in the middle of the (full) backup's largest object, through S3:
    its restore fails at pgBackRest's checksum, before the data directory is touched
    (pgBackRest restores beside it)."""
    label = full_label(backup_id)
    bucket, path = repository_bucket(cluster)
    prefix = f"{path}/" if path else ""
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        try:
            keys = bucket.list_keys(f"{prefix}backup/{stanza}/{label}/")
            data = [k for k in keys if "/bundle/" in k or "/pg_data/" in k]
            assert data, keys
            victim = max(data, key=lambda k: len(bucket.get(k) or b""))
            body = bytearray(bucket.get(victim) or b"")
            body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)
            bucket.put(victim, bytes(body))
        finally:
            bucket.close()


def damage_backup_wal(cluster: Cluster, backup_id: str) -> str:
    """Overwrite bytes in the middle of the archived WAL segment a backup starts in (its
    checkpoint record), through S3: pgBackRest restores the backup, then PostgreSQL's
    recovery cannot read that segment and exits, after the data was moved aside (a
    damaged backup fails before: pgBackRest checks every file it restores). The segment's
    name."""
    label = full_label(backup_id)
    tool = Runtime(cluster).host_for(cluster.units()[0].name).backup_tool
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        backups = {b.label: b for s in tool.info() for b in s.backups}
    segment = backups[label].wal_start
    key = segment_keys(cluster)[segment]
    bucket, _path = repository_bucket(cluster)
    with cluster.facts.control():
        try:
            body = bytearray(bucket.get(key) or b"")
            assert body, key
            body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)
            bucket.put(key, bytes(body))
        finally:
            bucket.close()
    return segment


def segment_keys(cluster: Cluster) -> dict[str, str]:
    """Archived WAL segment name -> object key."""
    bucket, path = repository_bucket(cluster)
    prefix = f"{path}/archive/" if path else "archive/"
    keys = {}
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        try:
            for key in bucket.list_keys(prefix):
                name = key.rsplit("/", 1)[-1]
                if len(name) > 24 and name[24] == "-" and name[:24].isalnum():
                    keys[name[:24]] = key
        finally:
            bucket.close()
    return keys


def switch_and_wait_archived(cluster: Cluster, unit: Unit, timeout: float = 120) -> str:
    """Close the current segment and wait until it is in the repository; its name."""
    segment = str(unit.query("select pg_walfile_name(pg_current_wal_lsn())")[0][0])
    unit.query("select pg_switch_wal()")
    deadline = time.monotonic() + timeout
    while segment not in segment_keys(cluster):
        assert time.monotonic() < deadline, f"{segment} never reached the repository"
        unit.query("select pg_switch_wal()")  # wakes the archiver (and pgBackRest's async push)
        time.sleep(1)
    return segment


def restore_and_wait(run_cli: Callable[..., Any], unit_ref: str, *params: str) -> Any:
    """``pgbackups run <unit> restore <params> --wait`` on the unit's cluster."""
    name = unit_ref.split("/", maxsplit=1)[0]
    return run_cli(
        "run",
        "--name",
        name,
        unit_ref,
        "restore",
        *params,
        "--wait",
        "--timeout",
        "180",
        timeout=240,
    )


def backup_on_a_replica(
    cluster: Cluster,
    run_cli: Callable[..., Any],
    *,
    transient: tuple[str, ...] = (),
    retry_for: float = 0,
) -> str:
    """``create-backup`` on a replica of ``cluster``; its backup id.

    A refusal whose output holds one of ``transient`` is tried again until ``retry_for``
    seconds have passed, and each one is reported as a warning, so that a run that
    needed it says so in pytest's summary. Any other refusal fails at once, with what
    ``status`` says of every unit."""
    deadline = time.monotonic() + retry_for
    while True:
        lead = primary(cluster)
        replica = next(u for u in cluster.units() if u.name != lead.name)
        res = run_cli(
            "run", "--name", cluster.name, replica.name, "create-backup", "--json", timeout=600
        )
        output = f"{res.stdout}{res.stderr}"
        if res.returncode == 0:
            return str(json.loads(res.stdout)["results"]["backup-id"])
        if not any(t in output for t in transient) or time.monotonic() > deadline:
            status = run_cli("status", "--name", cluster.name, "--json", timeout=300)
            raise AssertionError(f"{output}\nstatus: {status.stdout}{status.stderr}")
        warnings.warn(
            f"create-backup on {replica.name} refused, tried again: {output}", stacklevel=2
        )
        time.sleep(5)


def wait_writable(unit: Unit, timeout: float = 60) -> None:
    """Until the (restored) primary commits a write."""
    deadline = time.monotonic() + timeout
    while not unit.accepts_writes():
        assert time.monotonic() < deadline, "the restored primary does not accept writes"
        time.sleep(0.3)


def wait_old_data_removed(units: list[Unit], timeout: float = 60) -> None:
    """Until no unit has a data directory moved aside by a restore. A restore that worked
    has it renamed ``data.removing-*`` and removed by a process it does not wait for
    (restore._remove_old_data): gone seconds after the restore reported success."""
    deadline = time.monotonic() + timeout
    while True:
        left = [
            p
            for u in units
            for p in u.data_dir.parent.iterdir()
            if ".before-restore-" in p.name or ".removing-" in p.name
        ]
        if not left:
            return
        assert time.monotonic() < deadline, f"still there after {timeout:g}s: {left}"
        time.sleep(0.2)


# --- rows on every unit -----------------------------------------------------------------
# The tests that restore or cut a cluster count a table ``t (id, v)`` by ``v`` (a tag per
# step) on every unit, against what was committed before each step.


def primary(cluster: Cluster, timeout: float = 120) -> Unit:
    """The unit that answers as the primary (a failover or a restore may be under way)."""
    deadline = time.monotonic() + timeout
    while (found := cluster.primary()) is None:
        assert time.monotonic() < deadline, "no unit answers as primary"
        time.sleep(1)
    return found


def insert(cluster: Cluster, tag: str, n: int) -> None:
    """``n`` rows tagged ``tag``, on the primary."""
    primary(cluster).query("insert into t (v) select %s from generate_series(1, %s)", (tag, n))


def counts(unit: Unit) -> dict[str, int]:
    """The unit's rows per tag, over its own socket."""
    return {str(v): int(c) for v, c in unit.query("select v, count(*) from t group by v")}


def answers(cluster: Cluster) -> Answers:
    """Every unit's rows per tag, or its error as text."""
    found: Answers = {}
    for unit in cluster.units():
        try:
            found[unit.name] = counts(unit)
        except psycopg.Error as exc:
            found[unit.name] = str(exc).strip()
    return found


def wait_rows_everywhere(
    cluster: Cluster,
    expected: dict[str, int],
    timeout: float = 120,
    *,
    never: frozenset[str] = frozenset(),
) -> None:
    """Every unit answers with exactly ``expected`` (replicas once they replayed it), and
    every replica streams. ``never``: tags no unit may answer with meanwhile (the data
    from before a restore that reported success): one such answer fails at once."""
    deadline = time.monotonic() + timeout
    last: Answers = {}
    while time.monotonic() < deadline:
        last = answers(cluster)
        old = {
            name: rows
            for name, rows in last.items()
            if isinstance(rows, dict) and never & set(rows)
        }
        assert not old, f"a unit answered with rows from before the restore: {old}"
        lead = cluster.primary()
        replicas = [u for u in cluster.units() if lead is not None and u.name != lead.name]
        if (
            lead is not None
            and all(v == expected for v in last.values())
            and all(u.is_streaming() for u in replicas)
        ):
            return
        time.sleep(1)
    streaming = {u.name: u.is_streaming() for u in cluster.units()}
    raise AssertionError(
        f"rows per unit {last}, expected {expected} on every unit; streaming {streaming}"
    )
