"""The measurements. Each returns plain data (seconds, bytes) for the report.

Pairs are measured back to back in the same run, their order alternating between
repetitions, so that the ratio of their medians is what the machine's noise leaves alone.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import fabricate
from benchmarks.env import NAME, Bench, BenchError, log, now, timed
from pgbackups.core.archive import parse_segment_name, segment_name
from pgbackups.core.ids import label_time, label_to_id
from pgbackups.local.runtime.unit import Unit

BYTES_PER_RANDOM_ROW = 1170  # 1 KiB of gen_random_bytes plus tuple overhead, measured
BYTES_PER_PGBENCH_SCALE = 15_700_000  # pgbench -i -s 1, tables and indexes, measured
BARMAN_PREFIX = "barman"
# The directly restored PostgreSQL listens on its own unix socket directory only.
DIRECT_PORT = 5432
PGBACKUPS_TYPES = {"full": "full", "diff": "differential", "incr": "incremental"}


@dataclass
class Samples:
    """Seconds per repetition for named measurements."""

    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(round(seconds, 3))


# ---------------------------------------------------------------------------
# Data


def generate_data(bench: Bench, size_bytes: int) -> dict[str, int]:
    """A ``postgres`` database of about ``size_bytes``: half pgbench tables (compressible),
    the rest a table of ``gen_random_bytes`` (incompressible)."""
    half = size_bytes // 2
    scale = max(1, round(half / BYTES_PER_PGBENCH_SCALE))
    bench.pgbench("-i", "-q", "-s", str(scale), timeout=3600)
    bench.sql("create extension if not exists pgcrypto")
    bench.sql("drop table if exists bench_random")
    current = int(bench.sql("select pg_database_size('postgres')")[0][0])
    rows = max(1, (size_bytes - current) // BYTES_PER_RANDOM_ROW)
    bench.sql("create table bench_random(id int, payload bytea)")
    chunk = 100_000
    for first in range(1, rows + 1, chunk):
        last = min(rows, first + chunk - 1)
        bench.sql(
            "insert into bench_random select g, gen_random_bytes(1024) "
            "from generate_series(%s::int, %s::int) g",
            (first, last),
        )
    bench.sql("checkpoint")
    sizes = bench.sql(
        "select pg_database_size('postgres'), pg_total_relation_size('bench_random')"
    )[0]
    return {
        "pgbench_scale": scale,
        "random_rows": rows,
        "database_bytes": int(sizes[0]),
        "random_bytes": int(sizes[1]),
    }


def change_some_data(bench: Bench, transactions: int = 2000) -> None:
    """The same amount of change before each differential/incremental pair."""
    bench.pgbench("-n", "-c", "2", "-j", "2", "-t", str(transactions // 2), timeout=600)


# ---------------------------------------------------------------------------
# Backups


def backup_pgbackups(bench: Bench, kind: str) -> tuple[float, str]:
    """``pgbackups run bench/0 create-backup type=…``: seconds, backup-id."""
    seconds, out = timed(
        lambda: bench.pgbackups(
            "run",
            "--name",
            bench.name,
            "0",
            "create-backup",
            f"type={PGBACKUPS_TYPES[kind]}",
            "--json",
        )
    )
    doc = json.loads(out)
    if doc.get("status") != "completed":
        raise BenchError(f"create-backup {kind}: {doc}")
    return seconds, str(doc["results"]["backup-id"])


def backup_direct(bench: Bench, kind: str, *options: str) -> float:
    """``pgbackrest backup`` with the same configuration file, as the database user."""
    seconds, _ = timed(lambda: bench.pgbackrest("backup", f"--type={kind}", *options))
    return seconds


def backup_barman(
    bench: Bench, name: str, *options: str, jobs: int | None = None
) -> tuple[float, int]:
    """``barman-cloud-backup`` into the same S3 server: seconds, bytes stored. ``name``
    tells settings apart (a server name each); ``jobs`` defaults to the CPUs."""
    s3 = bench.s3()
    unit = bench.unit
    server = f"bench-{name}"
    argv = [
        "barman-cloud-backup",
        "--endpoint-url",
        s3.endpoint,
        *unit.client_args(),
        "--immediate-checkpoint",
        "-J",
        str(jobs or os.cpu_count() or 1),
        *options,
        f"s3://{s3.bucket}/{BARMAN_PREFIX}",
        server,
    ]
    prefix = f"{BARMAN_PREFIX}/{server}/base/"
    before = bench.prefix_size(prefix)
    seconds, _ = timed(lambda: bench.run_db(argv, env=bench.s3_env()))
    return seconds, bench.prefix_size(prefix) - before


def newest(bench: Bench) -> dict[str, Any]:
    backups = bench.info()
    if not backups:
        raise BenchError("no backup in the repository")
    return backups[-1]


def measure_backups(
    bench: Bench, repeat: int, *, kinds: tuple[str, ...], barman: bool
) -> tuple[Samples, str]:
    """Per kind and repetition: through pgbackups, then directly (order alternating);
    fulls also against barman-cloud-backup. Returns samples and the newest full's id."""
    samples = Samples()
    last_full_id = ""
    for rep in range(repeat):
        for kind in kinds:
            order = ["pgbackups", "direct"] if rep % 2 == 0 else ["direct", "pgbackups"]
            if kind == "full" and barman:
                order.insert(rep % 3, "barman")
            for position, who in enumerate(order):
                # A differential copies what changed since the full: one change serves
                # both; an incremental copies what changed since the previous backup.
                if kind == "incr" or (kind == "diff" and position == 0):
                    change_some_data(bench)
                bench.wait_archived()
                if who == "pgbackups":
                    seconds, backup_id = backup_pgbackups(bench, kind)
                    if kind == "full":
                        last_full_id = backup_id
                    info = newest(bench)["info"]
                    samples.extra.setdefault(f"{kind}_size", []).append(info["size"])
                    samples.extra.setdefault(f"{kind}_repo_size", []).append(
                        info["repository"]["size"]
                    )
                elif who == "direct":
                    seconds = backup_direct(bench, kind)
                else:
                    seconds, stored = backup_barman(bench, "none")
                    samples.extra.setdefault("barman_repo_size", []).append(stored)
                samples.add(f"{kind}:{who}", seconds)
                log(f"backup {kind} via {who}: {seconds:.2f}s")
    return samples, last_full_id


def measure_fixed_cost(bench: Bench, repeat: int) -> Samples:
    """The fixed cost per create-backup: incrementals of the tiny database (the least a
    backup can copy, so pgBackRest's own time is its floor) through pgbackups and
    directly, interleaved; ``repeat`` pairs. The cost is the difference of the medians."""
    samples = Samples()
    for rep in range(repeat):
        order = ["pgbackups", "direct"] if rep % 2 == 0 else ["direct", "pgbackups"]
        for who in order:
            bench.wait_archived()
            if who == "pgbackups":
                seconds, _ = backup_pgbackups(bench, "incr")
            else:
                seconds = backup_direct(bench, "incr")
            samples.add(f"fixed:{who}", seconds)
            log(f"fixed cost, tiny incremental via {who}: {seconds:.2f}s")
    return samples


def measure_cli(bench: Bench, repeat: int) -> Samples:
    """``pgbackups --help`` and ``pgbackups status --json`` on the running cluster, each
    ``repeat`` times, interleaved with a bare interpreter start (the floor of any
    Python command)."""
    samples = Samples()
    commands: dict[str, tuple[str, ...]] = {
        "help": ("--help",),
        "status": ("status", "--name", bench.name, "--json"),
    }
    for _ in range(repeat):
        started = now()
        bench.python("pass")
        samples.add("cli:python", now() - started)
        for name, args in commands.items():
            started = now()
            bench.pgbackups(*args)
            samples.add(f"cli:{name}", now() - started)
    return samples


# ---------------------------------------------------------------------------
# Restores


def restore_pgbackups(bench: Bench, backup_id: str) -> float:
    """``pgbackups run … restore --wait``, then until the primary commits a write."""
    start = now()
    bench.pgbackups(
        "run", "--name", bench.name, "0", "restore", f"backup-id={backup_id}", "--wait", "--json"
    )
    bench.wait_writable()
    return now() - start


def restore_direct(
    bench: Bench,
    label: str,
    options: tuple[str, ...] = (),
    *,
    start_postgres: bool = True,
    slot: int = 0,
) -> float:
    """``pgbackrest restore`` into an empty directory, then ``postgres`` until it commits
    a write (recovery to consistency, promoted). Same options as the pgbackups restore.
    ``slot`` > 0: one of several run side by side (its own directory, port and lock
    path: pgBackRest's asynchronous archive-get takes a lock per stanza)."""
    root = bench.home / ("direct-restore" if slot == 0 else f"direct-restore-{slot}")
    data = bench.make_db_dir(root / "data")
    sock = bench.make_db_dir(root / "sock")
    # Its own spool path: pgBackRest restore empties the spool's archive queue, and the
    # live cluster's asynchronous archive-push keeps its acknowledgements there.
    spool = bench.make_db_dir(root / "spool")
    # PostgreSQL opens its own log as the database user (processes.spawn): in its folder.
    logs = bench.make_db_dir(root / "log")
    start = now()
    bench.pgbackrest(
        "restore",
        f"--pg1-path={data}",
        f"--spool-path={spool}",
        f"--set={label}",
        "--type=immediate",
        "--target-action=promote",
        "--archive-mode=off",
        *((f"--lock-path={bench.make_db_dir(root / 'lock')}",) if slot else ()),
        *options,
    )
    if not start_postgres:
        seconds = now() - start
        shutil.rmtree(root, ignore_errors=True)
        return seconds
    port = DIRECT_PORT + slot
    argv = [
        bench.pg_tool("postgres"),
        "-D",
        str(data),
        "-c",
        f"port={port}",
        "-c",
        "listen_addresses=",
        "-c",
        f"unix_socket_directories={sock}",
        "-c",
        "archive_mode=off",
        "-c",
        f"hba_file={data}/pg_hba.conf",
        "-c",
        f"ident_file={data}/pg_ident.conf",
        "-c",
        "cluster_name=bench-direct",
    ]
    pid = bench.spawn_db(argv, logs / "postgres.log")
    try:
        probe = _DirectUnit(sock, port)
        deadline = now() + 600
        while not probe.writable():
            if now() > deadline:
                raise BenchError(f"the directly restored PostgreSQL did not accept writes; {root}")
            time.sleep(0.05)
        seconds = now() - start
    finally:
        bench.stop_spawned(pid)
    shutil.rmtree(root, ignore_errors=True)
    return seconds


class _DirectUnit:
    def __init__(self, sock: Path, port: int) -> None:
        self.sock, self.port = sock, port

    def writable(self) -> bool:
        try:
            with psycopg.connect(
                host=str(self.sock), port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2, autocommit=True,
            ) as conn:  # fmt: skip
                row = conn.execute("select pg_is_in_recovery()").fetchone()
                if row is None or row[0] is not False:
                    return False
                conn.execute("create table if not exists bench_probe(at timestamptz)")
                conn.execute("insert into bench_probe values (now())")
                return True
        except psycopg.Error:
            return False


def label_of(bench: Bench, backup_id: str) -> str:
    for record in reversed(bench.info()):
        if backup_id in (record["label"], label_to_id(record["label"])):
            return str(record["label"])
    raise BenchError(f"backup {backup_id} is not in the repository")


def measure_restores(bench: Bench, repeat: int, backup_id: str) -> Samples:
    samples = Samples()
    label = label_of(bench, backup_id)
    for rep in range(repeat):
        order = ["pgbackups", "direct"] if rep % 2 == 0 else ["direct", "pgbackups"]
        for who in order:
            if who == "pgbackups":
                seconds = restore_pgbackups(bench, backup_id)
            else:
                seconds = restore_direct(bench, label)
            samples.add(f"restore:{who}", seconds)
            log(f"restore via {who}: {seconds:.2f}s")
    return samples


# ---------------------------------------------------------------------------
# A restore of a cluster of several units, until every replica streams again


def add_units(bench: Bench, total: int, timeout: float = 1800) -> None:
    """Units added until the cluster has ``total``, each streaming before the next."""
    while len(bench.cluster.units()) < total:
        bench.pgbackups("add-unit", "--name", NAME, timeout=timeout)
        bench.reload_cluster()
        wait_streaming(bench, timeout)


def _timeline_of(unit: Unit) -> int | None:
    """The primary's current timeline (its WAL file name's first 8 hex digits)."""
    rows = unit.query("select pg_walfile_name(pg_current_wal_lsn())")
    return int(str(rows[0][0])[:8], 16) if rows else None


def replicas_streaming(bench: Bench) -> bool:
    """Every unit but the primary (unit 0, the leader the restore ran on) streams the
    primary's current timeline, and the primary sees them all streaming."""
    primary = bench.unit
    others = [u for u in bench.cluster.units() if u.name != primary.name]
    try:
        timeline = _timeline_of(primary)
        streaming = primary.query(
            "select count(*) from pg_stat_replication where state = 'streaming'"
        )
        if timeline is None or not streaming or int(streaming[0][0]) < len(others):
            return False
        for unit in others:
            rows = unit.query("select status, received_tli from pg_stat_wal_receiver")
            if not rows or rows[0][0] != "streaming" or rows[0][1] != timeline:
                return False
    except psycopg.Error:
        return False
    return True


def wait_streaming(bench: Bench, timeout: float = 1800) -> None:
    deadline = now() + timeout
    while not replicas_streaming(bench):
        if now() > deadline:
            raise BenchError(f"the replicas did not all stream within {timeout:g}s")
        time.sleep(0.1)


def restore_cluster_pgbackups(bench: Bench, backup_id: str) -> float:
    """``pgbackups run bench/0 restore --wait`` on the leader of the whole cluster, then
    until the primary commits a write and every replica streams its new timeline."""
    start = now()
    bench.pgbackups(
        "run", "--name", NAME, "0", "restore", f"backup-id={backup_id}", "--wait", "--json"
    )
    bench.wait_writable()
    wait_streaming(bench)
    return now() - start


def restore_direct_side_by_side(bench: Bench, label: str, count: int) -> float:
    """``count`` bare restores (pgBackRest + postgres until writable) at once, until the
    last is writable: what the units' own restores would cost with nothing around them."""
    start = now()
    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [
            pool.submit(restore_direct, bench, label, slot=slot) for slot in range(count)
        ]:
            future.result()
    return now() - start


def measure_cluster_restores(bench: Bench, units: int, repeat: int) -> Samples:
    """The restore of an ``units``-unit cluster to a new full backup against as many bare
    restores of it side by side, interleaved like the one-unit restore.

    The backup is taken first: a unit added later creates itself from the newest backup,
    on the primary's timeline. From an older one (timeline 1, after the restores before)
    it would stream only, and PostgreSQL's walreceiver asks the primary for the history
    of every timeline in between, which a primary restored twice does not have
    (docs/performance.md, "The cluster figure")."""
    samples = Samples()
    _, backup_id = backup_pgbackups(bench, "full")
    log(f"cluster restore: growing the cluster to {units} units")
    add_units(bench, units)
    label = label_of(bench, backup_id)
    samples.extra["units"] = units
    for rep in range(repeat):
        order = ["pgbackups", "direct"] if rep % 2 == 0 else ["direct", "pgbackups"]
        for who in order:
            if who == "pgbackups":
                seconds = restore_cluster_pgbackups(bench, backup_id)
            else:
                seconds = restore_direct_side_by_side(bench, label, units)
            samples.add(f"cluster-restore:{who}", seconds)
            log(f"{units}-unit restore via {who}: {seconds:.2f}s")
    return samples


# ---------------------------------------------------------------------------
# Settings: compression, process-max, bundling (direct pgBackRest, same data)


def measure_settings(bench: Bench, repeat: int, cpus: int) -> Samples:
    """Full backups with one option changed from the rendered defaults; restores at
    process-max 1 and ``cpus``. Repository sizes from pgBackRest info."""
    samples = Samples()
    variants: list[tuple[str, tuple[str, ...]]] = [
        ("zst p=1", ("--compress-type=zst", "--process-max=1")),
        ("lz4 p=1", ("--compress-type=lz4", "--process-max=1")),
        ("gz p=1", ("--compress-type=gz", "--process-max=1")),
        (f"zst p={cpus}", ("--compress-type=zst", f"--process-max={cpus}")),
        (f"lz4 p={cpus}", ("--compress-type=lz4", f"--process-max={cpus}")),
        (f"gz p={cpus}", ("--compress-type=gz", f"--process-max={cpus}")),
        (f"none p={cpus}", ("--compress-type=none", f"--process-max={cpus}")),
        (f"zst p={cpus} no bundle", ("--compress-type=zst", f"--process-max={cpus}",
                                     "--no-repo1-bundle")),
    ]  # fmt: skip
    zst_label = ""
    for rep in range(repeat):
        order = variants if rep % 2 == 0 else list(reversed(variants))
        for name, options in order:
            bench.wait_archived()
            seconds = backup_direct(bench, "full", *options)
            record = newest(bench)
            samples.add(f"backup:{name}", seconds)
            samples.extra.setdefault(f"repo_size:{name}", []).append(
                record["info"]["repository"]["size"]
            )
            if name == f"zst p={cpus}":
                zst_label = str(record["label"])
            log(f"settings: full backup {name}: {seconds:.2f}s")
        for p in (1, cpus) if rep % 2 == 0 else (cpus, 1):
            seconds = restore_direct(
                bench, zst_label, (f"--process-max={p}",), start_postgres=False
            )
            samples.add(f"restore:p={p}", seconds)
            log(f"settings: restore (files only) process-max={p}: {seconds:.2f}s")
    return samples


# ---------------------------------------------------------------------------
# Loss window under load


def measure_loss_window(bench: Bench, seconds: float, rate: int | None) -> dict[str, Any]:
    """pgbench for ``seconds`` (``-R rate`` when given); at random moments the age of the
    newest archived WAL (``now() - pg_stat_archiver.last_archived_time``) and the number
    of segments waiting (``.ready``)."""
    unit = bench.unit
    bench.wait_archived()
    argv = [
        bench.pg_tool("pgbench"),
        "-n",
        *unit.client_args(),
        "-c",
        "2",
        "-j",
        "2",
        "-T",
        str(int(seconds)),
    ]
    if rate:
        argv += ["-R", str(rate)]
    argv.append("postgres")
    lsn_start = bench.sql("select pg_current_wal_lsn()")[0][0]
    started = now()
    proc = bench.popen_db(argv)
    ages: list[float] = []
    ready: list[int] = []
    rng = random.Random()
    try:
        time.sleep(min(2.0, seconds / 10))
        while proc.poll() is None:
            row = bench.sql(
                "select extract(epoch from now() - last_archived_time)::float8, "
                "(select count(*) from pg_ls_archive_statusdir() where name like '%%.ready') "
                "from pg_stat_archiver"
            )[0]
            if row[0] is not None:
                ages.append(round(float(row[0]), 3))
                ready.append(int(row[1]))
            time.sleep(rng.uniform(0.2, 1.5))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    if proc.returncode != 0:
        raise BenchError(f"pgbench load exited {proc.returncode}: {err[-500:]}")
    elapsed = now() - started
    wal = bench.sql("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn_start,))
    tps = re.search(r"tps = ([\d.]+)", out)
    return {
        "seconds": round(elapsed, 1),
        "rate_limit_tps": rate,
        "tps": round(float(tps.group(1)), 1) if tps else None,
        "wal_bytes_per_second": float(wal[0][0]) / elapsed,
        "ages": ages,
        "ready": ready,
        "archive_timeout": str(bench.sql("show archive_timeout")[0][0]),
    }


# ---------------------------------------------------------------------------
# list-backups on a repository with many backups


def _copy_objects(bench: Bench, base: str, copies: list[fabricate.Copy]) -> None:
    client = bench.s3_client()
    bucket = bench.s3().bucket
    listing: dict[str, list[tuple[str, int]]] = {}
    for template in {c.template for c in copies}:
        prefix = f"{base}/{template}/"
        keys: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        listing[template] = keys
    manifests = {
        t: client.get_object(Bucket=bucket, Key=f"{base}/{t}/backup.manifest")["Body"]
        .read()
        .decode()
        for t in listing
    }

    def one(copy: fabricate.Copy) -> None:
        text = fabricate.rewrite_manifest(manifests[copy.template], copy.template, copy)
        for key, _size in listing[copy.template]:
            rel = key[len(f"{base}/{copy.template}/") :]
            dest = f"{base}/{copy.label}/{rel}"
            if rel in ("backup.manifest", "backup.manifest.copy"):
                client.put_object(Bucket=bucket, Key=dest, Body=text.encode())
            else:
                client.copy_object(
                    Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": key}
                )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, copies))


def _delete_backups(bench: Bench, base: str, labels: set[str]) -> None:
    """Every object of the backups ``labels`` under ``base`` (one listing of ``base``)."""
    keys = [
        k for k, _ in _list_keys(bench, f"{base}/") if k[len(base) + 1 :].split("/")[0] in labels
    ]
    _delete_keys(bench, keys)


def _list_keys(bench: Bench, prefix: str) -> list[tuple[str, int]]:
    client = bench.s3_client()
    keys: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bench.s3().bucket, Prefix=prefix
    ):
        keys += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
    return keys


_WAL_KEY_RE = re.compile(r"^(?P<dir>.*/)(?P<segment>[0-9A-F]{24})(?P<rest>-[0-9a-f]{40}\.\w+)$")


def _copy_wal(bench: Bench, base: str, segments: int) -> list[str]:
    """A month of WAL after the archive's last segment (fabricate.plan_wal): copies of
    the smallest real segment object under the next names; the keys written. (The
    smallest: a month is some 45,000 objects, and rclone stores each copy in full.)"""
    real = [
        (k, size, m) for k, size in _list_keys(bench, f"{base}/") if (m := _WAL_KEY_RE.match(k))
    ]
    if not real:
        raise BenchError(f"no archived WAL segment under {base}/")
    source = min(real, key=lambda item: item[1])[0]
    template, _, match = max(real, key=lambda item: item[2].group("segment"))
    parsed = parse_segment_name(match.group("segment"))
    if parsed is None:
        raise BenchError(f"not a segment name: {template}")
    timeline, last = parsed
    archive_id = match.group("dir").rstrip("/").rsplit("/", 2)[0]  # archive/<stanza>/15-1
    keys = []
    for segno in fabricate.plan_wal(last, segments):
        name = segment_name(timeline, segno)
        keys.append(f"{archive_id}/{name[:16]}/{name}{match.group('rest')}")
    client = bench.s3_client()
    bucket = bench.s3().bucket

    def one(key: str) -> None:
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, keys))
    return keys


def _delete_keys(bench: Bench, keys: list[str]) -> None:
    """DeleteObjects, 1000 keys a request (one request per key took minutes for a month)."""
    client = bench.s3_client()
    bucket = bench.s3().bucket

    def batch(first: int) -> None:
        chunk = [{"Key": k} for k in keys[first : first + 1000]]
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        if answer.get("Errors"):
            raise BenchError(f"S3 refused to delete: {answer['Errors'][:3]}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(batch, range(0, len(keys), 1000)))


def list_backups_json(bench: Bench) -> dict[str, Any]:
    """``pgbackups run bench/0 list-backups format=json --json``, parsed."""
    out = bench.pgbackups("run", "--name", bench.name, "0", "list-backups", "format=json", "--json")
    doc: dict[str, Any] = json.loads(out)
    if doc.get("status") != "completed":
        raise BenchError(f"list-backups: {doc}")
    return doc


def time_listing(bench: Bench, repeat: int) -> Samples:
    samples = Samples()
    for rep in range(repeat):
        order = ["pgbackups", "info"] if rep % 2 == 0 else ["info", "pgbackups"]
        for who in order:
            if who == "pgbackups":
                seconds, doc = timed(lambda: list_backups_json(bench))
                samples.extra["listed"] = len(doc["results"]["backups"])
                samples.extra["gaps"] = doc["results"].get("archive-gaps", "")
            else:
                seconds, _ = timed(lambda: bench.pgbackrest("info", "--output=json"))
                started = now()
                bench.pgbackrest("info", "--output=json")
                config = f"--config={bench.config_path}"
                repo_ls = ["repo-ls", f"archive/{bench.stanza}"]
                bench.run_db(["pgbackrest", config, "--recurse", "--output=json", *repo_ls])
                samples.add("list:floor", now() - started)
            samples.add(f"list:{who}", seconds)
    return samples


def take_month_templates(bench: Bench) -> list[dict[str, Any]]:
    """A full and an incremental of a tiny database, the templates of a month
    (pgBackRest info's entries of the stanza's backups afterwards)."""
    bench.pgbench("-i", "-q", "-s", "1")  # a tiny database: small backups
    backup_pgbackups(bench, "full")
    bench.sql("create table if not exists bench_tiny(x int); insert into bench_tiny values (1)")
    backup_pgbackups(bench, "incr")
    return bench.info()


@dataclass(frozen=True)
class Month:
    """A fabricated month in the repository (see :func:`month_repository`)."""

    copies: list[fabricate.Copy]
    total: int  # backups pgBackRest info lists, real ones included
    days: int
    wal_segments: int
    backups_seconds: float
    wal_seconds: float


@contextmanager
def month_repository(
    bench: Bench, real: list[dict[str, Any]], count: int, wal_per_day: int = fabricate.WAL_PER_DAY
) -> Iterator[Month]:
    """``count`` backups in all: the ``real`` ones and a month of nightly fulls and
    15-minute incrementals made from the newest real full and incremental
    (fabricate.plan_month), with a month of WAL after the real archive (``wal_per_day``
    segments a day: a minute's each by default, as an idle cluster archives). pgBackRest is
    stopped for the stanza meanwhile (archive-push waits): a real segment archived now
    would take a fabricated one's name. Afterwards the copies and the WAL are removed,
    ``backup.info`` put back as it was, and pgBackRest started again."""
    full = [b for b in real if b["type"] == "full"][-1]
    incr = next(b for b in reversed(real) if b["type"] == "incr" and b["prior"] == full["label"])
    client = bench.s3_client()
    bucket = bench.s3().bucket
    base = f"backup/{bench.stanza}"
    info_key = f"{base}/backup.info"
    original = client.get_object(Bucket=bucket, Key=info_key)["Body"].read()
    copies = fabricate.plan_month(
        count - len(real),
        before=label_time(real[0]["label"]),
        full_template=full["label"],
        incr_template=incr["label"],
    )
    days = -(-len(copies) // fabricate.BACKUPS_PER_DAY)
    bench.wait_archived()
    bench.pgbackrest("stop")
    wal: list[str] = []
    try:
        started = now()
        _copy_objects(bench, base, copies)
        text, total = fabricate.add_to_backup_info(
            original.decode(), copies, {full["label"]: None, incr["label"]: full["label"]}
        )
        for key in (info_key, f"{info_key}.copy"):
            client.put_object(Bucket=bucket, Key=key, Body=text.encode())
        backups_seconds = now() - started
        wal = _copy_wal(bench, f"archive/{bench.stanza}", days * wal_per_day)
        wal_seconds = now() - started - backups_seconds
        listed = len(bench.info())
        if listed != total:
            raise BenchError(f"pgBackRest info lists {listed} backups, expected {total}")
        # A copy must be a real backup: pgBackRest verifies one's manifest checksum here.
        bench.pgbackrest("info", f"--set={copies[-1].label}")
        yield Month(copies, total, days, len(wal), backups_seconds, wal_seconds)
    finally:
        for key in (info_key, f"{info_key}.copy"):
            client.put_object(Bucket=bucket, Key=key, Body=original)
        _delete_backups(bench, base, {c.label for c in copies})
        _delete_keys(bench, wal)
        bench.pgbackrest("start")
    if len(bench.info()) != len(real):
        raise BenchError("the copied backups were not all removed")


def measure_list_backups(bench: Bench, count: int, repeat: int) -> dict[str, Any]:
    """list-backups with the two real backups, then with ``count`` (a month)."""
    real = take_month_templates(bench)
    few = time_listing(bench, max(3, repeat))
    with month_repository(bench, real, count) as month:
        # Untimed first: the first listing after 60,000 new objects pays rclone's cold
        # directory reads (measured 9.9 s against 2-3 s for the next ones), which a
        # repository that grew over a month never sees at once.
        list_backups_json(bench)
        many = time_listing(bench, max(3, repeat))
        if many.extra.get("listed") != month.total or many.extra.get("gaps"):
            raise BenchError(
                f"list-backups listed {many.extra.get('listed')} of {month.total} backups, "
                f"archive gaps {many.extra.get('gaps')!r}"
            )
    return {
        "backups": month.total,
        "real_backups": len(real),
        "days": month.days,
        "wal_segments": month.wal_segments,
        "fabricate_seconds": round(month.backups_seconds, 1),
        "fabricate_wal_seconds": round(month.wal_seconds, 1),
        "listed_by_pgbackups": many.extra.get("listed"),
        "few": few.values,
        "many": many.values,
    }
