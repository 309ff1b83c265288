"""An object the local S3 server acknowledged is still there, whole, after the server
is killed, stopped, or restarted (the real rclone, started and stopped by the runtime).

pgBackRest treats a 200 to its PUT as "this WAL segment is safe": if the server loses
the body after that, ``verify`` finds the segment invalid and a restore silently stops
short of committed rows. So the checks are byte for byte, right after the restart and
again once a write-back cache (if the server had one) would have flushed.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from boto3.s3.inject import upload_fileobj
from boto3.s3.transfer import TransferConfig
from realservers import Postgres, owned_dir, wait_for

from pgbackups.adapters import processes
from pgbackups.adapters.pgbackrest import (
    PgBackRest,
    PgBackRestConfig,
    Timeouts,
    detect_features,
    render_config,
    write_ca_chain,
    write_config,
)
from pgbackups.adapters.processes import OsUser
from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core.host import ObjectStoreError
from pgbackups.core.settings import S3Settings
from pgbackups.local.machinery import ports
from pgbackups.local.progress import Progress
from pgbackups.local.runtime.cluster import S3, Cluster

pytestmark = pytest.mark.real

MB = 1024 * 1024
# boto3 splits an upload above 8 MB into parts: the 20 MB objects go up as multipart
# uploads (three parts), the 16 MB one (a WAL segment's size) as one PUT through
# put_object, the way pgBackRest sends a segment.
MULTIPART = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB)
SIZES = (0, 1, 1000, 64 * 1024 + 7, MB, 5 * MB + 3, 16 * MB, 20 * MB, 20 * MB + 1)
# rclone's write-back cache uploaded 5 s after the last write (--vfs-write-back):
# reading again after that catches a body lost when the cache flushed.
WRITE_BACK_SETTLED = 7.0
STANZA = "it.durable"
HOW = ["sigkill", "clean-stop"]


@pytest.fixture
def cluster(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster with no unit: its files, CA and S3 server, as ``up`` makes them."""
    made = Cluster("durable", workdir / re.sub(r"[^a-z0-9-]+", "-", request.node.name))
    with made.operation("up"):  # makes the home and the cluster's directory, as `up` does
        made._create(0, False)
        made._start_s3(Progress(quiet=True))
    yield made
    made.stop_service(S3)


def _settings(cluster: Cluster, path: str = "/") -> S3Settings:
    s3 = cluster.s3()
    return S3Settings(
        bucket=s3.bucket,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        endpoint=s3.endpoint,
        region=s3.region,
        path=path,
        uri_style=s3.uri_style,
        tls_ca_chain=(Path(s3.ca_file).read_text(),),
    )


def _bucket(cluster: Cluster) -> S3Bucket:
    return S3Bucket(_settings(cluster), read_timeout=120)


def _go_away_and_return(cluster: Cluster, how: str) -> None:
    """Kill or stop the server at once, then start it again on the same directories."""
    proc = cluster.service(S3)
    assert proc is not None and proc.is_ours()
    if how == "sigkill":
        os.kill(proc.pid, signal.SIGKILL)
        assert processes.stop(proc.pid, timeout=10)  # reaps it; nothing left to signal
    else:
        cluster.stop_service(S3)  # the path `pgbackups down` takes
    assert not cluster.service_running(S3)
    port = cluster.state().s3_port
    wait_for(lambda: ports.port_is_free(port), 10, f"port {port} released")
    cluster._start_s3(Progress(quiet=True))


def _served(cluster: Cluster, keys: list[str]) -> dict[str, bytes | str]:
    """Each key's body, or why it could not be read (a short body fails the read)."""
    bucket = _bucket(cluster)
    served: dict[str, bytes | str] = {}
    try:
        for key in keys:
            try:
                body = bucket.get(key)
                served[key] = "missing" if body is None else body
            except ObjectStoreError as exc:
                served[key] = str(exc)
    finally:
        bucket.close()
    return served


def _differences(expected: dict[str, bytes], served: dict[str, bytes | str]) -> list[str]:
    wrong = []
    for key, body in expected.items():
        got = served[key]
        if isinstance(got, str):
            wrong.append(f"{key}: {got[:120]}")
        elif hashlib.sha256(got).digest() != hashlib.sha256(body).digest():
            wrong.append(f"{key}: {len(got)} bytes served, {len(body)} acknowledged")
    return wrong


def _objects() -> dict[str, bytes]:
    rng = random.Random(20260528)  # fixed: a failure names the same bodies every run
    return {f"wal/{i:02d}-{size}": rng.randbytes(size) for i, size in enumerate(SIZES)}


@pytest.mark.parametrize("how", HOW)
def test_objects_put_through_boto3_survive(cluster: Cluster, how: str) -> None:
    objects = _objects()
    bucket = _bucket(cluster)
    try:
        for key, body in objects.items():
            if len(body) > MULTIPART.multipart_threshold:
                # boto3's managed transfer on our botocore client (the adapter does
                # not build boto3's, which is what injects upload_fileobj).
                upload_fileobj(
                    bucket.client, io.BytesIO(body), bucket.settings.bucket, key, Config=MULTIPART
                )
            else:
                bucket.put(key, body)
    finally:
        bucket.close()

    _go_away_and_return(cluster, how)
    assert _differences(objects, _served(cluster, list(objects))) == []
    time.sleep(WRITE_BACK_SETTLED)
    assert _differences(objects, _served(cluster, list(objects))) == []
    on_disk = cluster.paths.s3_data / cluster.state().bucket
    for key, body in objects.items():
        assert (on_disk / key).read_bytes() == body, key

    # A ranged read, as pgBackRest makes them.
    key = next(k for k in objects if len(objects[k]) > MULTIPART.multipart_threshold)
    bucket = _bucket(cluster)
    try:
        part = bucket.client.get_object(
            Bucket=bucket.settings.bucket, Key=key, Range="bytes=100-8388708"
        )["Body"].read()
    finally:
        bucket.close()
    assert part == objects[key][100:8388709]

    # And a plain restart after that changes nothing.
    cluster.stop_service(S3)
    cluster._start_s3(Progress(quiet=True))
    assert _differences(objects, _served(cluster, list(objects))) == []


def _files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("how", HOW)
def test_a_pgbackrest_repository_survives(
    cluster: Cluster,
    how: str,
    workdir: Path,
    db_user: OsUser,
    make_postgres: Callable[..., Postgres],
) -> None:
    """Stanza, full backup, then WAL pushed by PostgreSQL's archiver; the server goes
    away right after the last push is acknowledged. Every object must then be served
    as the file that was acknowledged, and ``pgbackrest verify`` must find no error."""
    state = cluster.state()
    base = owned_dir(workdir / f"pgbr-{how}", db_user, 0o750)
    for sub in ("log", "lock", "spool"):
        owned_dir(base / sub, db_user)
    conf = base / "pgbackrest.conf"
    settings = _settings(cluster, "/repo")
    write_ca_chain(settings, base / "ca.pem", db_user)
    pg = make_postgres(
        f"durable-{how}",
        {
            "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'",
        },
    )
    config = PgBackRestConfig(
        stanza=STANZA,
        pg_path=str(pg.data_dir),
        s3=settings,
        pg_port=pg.port,
        pg_socket_path=str(pg.socket_dir),
        log_path=str(base / "log"),
        lock_path=str(base / "lock"),
        spool_path=str(base / "spool"),
        ca_file=str(base / "ca.pem"),
        process_max=2,
        io_timeout=10,
        features=detect_features(),
    )
    write_config(render_config(config), conf, db_user)
    tool = PgBackRest(conf, STANZA, user=db_user, timeouts=Timeouts(command=90, backup=120))
    for result in (tool.stanza_create(), tool.backup("full", on_primary=True)):
        assert result.ok, result.stderr
    pg.psql("create table acknowledged as select generate_series(1, 100000) g", db_user)
    archived = int(pg.psql("select archived_count from pg_stat_archiver", db_user))
    pg.psql("select pg_switch_wal()", db_user)
    wait_for(
        lambda: int(pg.psql("select archived_count from pg_stat_archiver", db_user)) > archived,
        60,
        "the switched segment archived",
    )
    last = pg.psql("select last_archived_wal from pg_stat_archiver", db_user)

    _go_away_and_return(cluster, how)
    time.sleep(WRITE_BACK_SETTLED)
    repo = cluster.paths.s3_data / state.bucket
    on_disk = _files_under(repo)
    assert any(key.startswith(f"repo/archive/{STANZA}/") and last in key for key in on_disk)
    assert _differences(on_disk, _served(cluster, list(on_disk))) == []
    verify = processes.run(
        ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "verify",
         "--log-level-console=info"],
        user=db_user,
        timeout=120,
    )  # fmt: skip
    assert verify.ok, verify.stderr
    # verify exits 0 even when it finds errors: it lists them as "status: error" after
    # its first line (which holds the options).
    found = verify.stdout.splitlines()[1:]
    assert found and "verify command end: completed successfully" in found[-1], verify.stdout
    assert not [line for line in found if "error" in line], verify.stdout


def test_an_old_write_back_cache_is_kept_and_reported(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files an older pgbackups' cache holds may be the only copy of an object: the
    runtime leaves them where they are and says so at start."""
    left = cluster.paths.s3_cache / "vfs" / "local" / "segment"
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"acknowledged, never written back")
    cluster.stop_service(S3)
    cluster._start_s3(Progress())
    assert left.read_bytes() == b"acknowledged, never written back"
    said = capsys.readouterr().err
    assert "1 file(s) remain in the old rclone write-back cache" in said
    assert str(cluster.paths.s3_cache / "vfs") in said
