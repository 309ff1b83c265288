"""The benchmark's world: its own PGBACKUPS_HOME, the ``bench`` cluster, and the programs.

Everything runs as in production: servers as the database user through the local
runtime, ``pgbackups`` through its CLI (a new Python process per command, as a user
types it), pgBackRest and barman-cloud as the database user. Every process started here
is stopped by PID; the cluster is stopped with ``pgbackups down --purge``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config

from pgbackups.adapters import processes
from pgbackups.local.machinery import programs
from pgbackups.local.runtime.cluster import Cluster, S3Endpoint
from pgbackups.local.runtime.unit import Unit, stanza_name

NAME = "bench"


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which and why."""


def now() -> float:
    return time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Bench:
    """One benchmark run's cluster and helpers."""

    def __init__(
        self, home: Path | None = None, *, name: str = NAME, machines: bool = False
    ) -> None:
        self.name = name
        # Units as machines (network namespaces): the network profiles need a link.
        self.machines = machines
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="pgbackups-bench-", dir="/tmp"))
            self.own_home = True
        else:
            home.mkdir(parents=True, exist_ok=True)
            self.own_home = False
        home.chmod(0o755)  # the database user must traverse it
        self.home = home
        self.db_user = processes.db_user()
        self._cluster: Cluster | None = None
        self._spawned: list[int] = []

    # --- the cluster -----------------------------------------------------------

    def pgbackups(self, *args: str, timeout: float = 1800) -> str:
        """``python -m pgbackups ARGS`` with this run's home; stdout, or BenchError."""
        env = dict(os.environ, PGBACKUPS_HOME=str(self.home))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pgbackups", *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"pgbackups {' '.join(args)}: timed out after {timeout}s") from exc
        if proc.returncode != 0:
            raise BenchError(
                f"pgbackups {' '.join(args)} exited {proc.returncode}:\n"
                f"{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
            )
        return proc.stdout

    def python(self, code: str) -> None:
        """The interpreter that runs ``pgbackups``, started bare (``-c code``)."""
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

    def up(self) -> None:
        # No agent: its update-status passes would make the timed commands wait.
        where = "--machines" if self.machines else "--loopback"
        self.pgbackups("up", "--name", self.name, "--units", "1", "--no-agent", where, timeout=600)
        self._cluster = Cluster.load(self.name, self.home)
        # Unencrypted: fabricate.py copies and rewrites backup.info and manifests as the
        # INI text they are without a cipher, and the measurements before encryption
        # existed stay comparable (its cost is not measured here).
        self.pgbackups("s3", "set", "--name", self.name, "--no-encryption", timeout=600)

    def reload_cluster(self) -> None:
        """Read the cluster's state again (after add-unit in another process)."""
        self._cluster = Cluster.load(NAME, self.home)

    def down(self) -> None:
        for pid in self._spawned:
            processes.stop(pid, timeout=30)
        self._spawned.clear()
        if Cluster(self.name, self.home).exists():
            try:
                self.pgbackups("down", "--name", self.name, "--purge", timeout=600)
            except BenchError as exc:
                log(f"down failed: {exc}")
        if self.own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise BenchError("the cluster is not up")
        return self._cluster

    @property
    def unit(self) -> Unit:
        return self.cluster.unit("0")

    @property
    def stanza(self) -> str:
        return stanza_name(self.cluster)

    @property
    def config_path(self) -> Path:
        return self.unit.pgbackrest_config

    def s3(self) -> S3Endpoint:
        return self.cluster.s3()

    # --- SQL --------------------------------------------------------------------

    def sql(self, text: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.unit.query(text, params)

    def wait_writable(self, timeout: float = 600, unit: Unit | None = None) -> None:
        """Until a write commits on the unit's PostgreSQL (not just a connection)."""
        target = unit or self.unit
        deadline = now() + timeout
        while True:
            try:
                rows = target.query("select pg_is_in_recovery()")
                if rows and rows[0][0] is False:
                    target.query(
                        "create table if not exists bench_probe(at timestamptz);"
                        "insert into bench_probe values (now())"
                    )
                    return
            except psycopg.Error:
                pass
            if now() > deadline:
                raise BenchError(f"{target.name} did not accept writes within {timeout}s")
            time.sleep(0.1)

    def wait_archived(self, timeout: float = 600) -> None:
        """Switch WAL and wait until that segment is archived: a quiet starting line."""
        # A write first: pg_switch_wal() does nothing in a segment with no WAL in it.
        self.sql(
            "create table if not exists bench_probe(at timestamptz);"
            "insert into bench_probe values (now())"
        )
        rows = self.sql("select pg_walfile_name(pg_current_wal_lsn())")
        wanted = str(rows[0][0])
        self.sql("select pg_switch_wal()")
        started = now()
        deadline = started + timeout
        while True:
            last = self.sql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
            if str(last[0][0])[:24] >= wanted:
                if now() - started > 5:
                    log(f"WAL {wanted} took {now() - started:.0f}s to archive: {self.archiver()}")
                return
            if now() > deadline:
                raise BenchError(f"WAL {wanted} was not archived within {timeout}s")
            time.sleep(0.2)

    def archiver(self) -> dict[str, Any]:
        """pg_stat_archiver (a failed archive-push makes PostgreSQL wait a minute)."""
        row = self.sql(
            "select archived_count, failed_count, last_archived_wal, last_failed_wal, "
            "last_failed_time::text from pg_stat_archiver"
        )[0]
        keys = ("archived", "failed", "last_archived", "last_failed", "last_failed_time")
        return dict(zip(keys, row, strict=True))

    # --- programs as the database user ----------------------------------------------

    def run_db(
        self, argv: Sequence[str], *, timeout: float = 3600, env: dict[str, str] | None = None
    ) -> str:
        result = processes.run(argv, user=self.db_user, timeout=timeout, env=env)
        if not result.ok:
            raise BenchError(
                f"{argv[0]} {argv[-1]} exited {result.returncode}:\n"
                f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
            )
        return result.stdout

    def pgbackrest(self, command: str, *options: str, timeout: float = 3600) -> str:
        argv = [
            "pgbackrest",
            f"--config={self.config_path}",
            f"--stanza={self.stanza}",
            *options,
            command,
        ]
        return self.run_db(argv, timeout=timeout)

    def info(self) -> list[dict[str, Any]]:
        """The stanza's backups as pgBackRest ``info --output=json`` lists them."""
        data = json.loads(self.pgbackrest("info", "--output=json", timeout=300))
        if not data:
            return []
        status = data[0].get("status", {})
        if status.get("code") not in (0, 2):
            raise BenchError(f"pgbackrest info: {status}")
        return list(data[0].get("backup") or [])

    def pg_tool(self, name: str) -> str:
        return str(programs.pg_bin_dir() / name)

    def pgbench(self, *args: str, timeout: float = 3600) -> str:
        unit = self.unit
        argv = [self.pg_tool("pgbench"), *unit.client_args(), *args, "postgres"]
        return self.run_db(argv, timeout=timeout)

    def spawn_db(self, argv: Sequence[str], log_file: Path) -> int:
        pid = processes.spawn(argv, log_file=log_file, user=self.db_user)
        self._spawned.append(pid)
        return pid

    def stop_spawned(self, pid: int) -> None:
        processes.stop(pid, timeout=60)
        if pid in self._spawned:
            self._spawned.remove(pid)

    def popen_db(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A long-running client (pgbench load) whose output we read when it ends."""
        user = self.db_user
        switch = not user.is_current
        return subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": user.home},
            user=user.uid if switch else None,
            group=user.gid if switch else None,
            extra_groups=[] if switch else None,
        )

    def make_db_dir(self, path: Path) -> Path:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, mode=0o700)
        os.chown(path, self.db_user.uid, self.db_user.gid)
        return path

    # --- S3 -----------------------------------------------------------------------

    def s3_client(self) -> Any:
        s3 = self.s3()
        return boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name=s3.region,
            verify=s3.ca_file,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=16,
            ),
        )

    def s3_env(self) -> dict[str, str]:
        """Credentials for boto3-based tools (barman-cloud): environment, never argv."""
        s3 = self.s3()
        return {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_CA_BUNDLE": s3.ca_file,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def prefix_size(self, prefix: str) -> int:
        client = self.s3_client()
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3().bucket, Prefix=prefix
        ):
            total += sum(int(obj["Size"]) for obj in page.get("Contents", []))
        return total


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = now()
    result = action()
    return now() - start, result
