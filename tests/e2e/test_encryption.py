"""Encryption at rest on a real one-unit local cluster (docs/security.md, "Encryption at
rest"): a new repository is encrypted (aes-256-cbc) with the cluster's generated
passphrase; what the S3 API gives back is ciphertext; the passphrase is in no process's
argv or environment; an encrypted repository restores with its rows; a wrong or missing
passphrase is a Blocked unit with a plain explanation, and the right one clears it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import repository_bucket, segment_keys, switch_and_wait_archived

from pgbackups.local.runtime.cluster import Cluster

pytestmark = pytest.mark.real

NAME = "enc"
UNIT = f"{NAME}/0"
# What OpenSSL's (and pgBackRest's) aes-256-cbc stream starts with: a salt header.
CIPHER_HEADER = b"Salted__"


def rows(cluster: Cluster) -> set[str]:
    return {r[0] for r in cluster.unit(UNIT).query("select v from t")}


def processes_holding(secret: bytes) -> list[str]:
    """Every process whose argv or environment holds ``secret`` (we run as root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                if secret in (entry / part).read_bytes():
                    found.append(f"{entry.name}/{part}")
            except OSError:
                continue
    return found


def test_an_encrypted_repository(
    make_cluster: Callable[..., Cluster], run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    started = time.monotonic()
    cluster = make_cluster(NAME, units=1)
    res = run_cli("s3", "set", "--name", NAME)
    assert res.returncode == 0, res.stderr
    assert "repository encrypted (aes-256-cbc)" in res.stderr
    own = cluster.paths.secrets_dir / "repository-passphrase"
    assert own.stat().st_mode & 0o777 == 0o600 and own.stat().st_uid == 0
    passphrase = own.read_text().strip()
    assert len(passphrase) >= 43
    shown = json.loads(run_cli("s3", "show", "--name", NAME, "--json").stdout)
    assert shown["encryption"] == "aes-256-cbc"
    assert passphrase not in json.dumps(shown)
    # In the unit's pgbackrest.conf (0640 root:db, like the S3 keys), and nowhere else.
    conf = cluster.unit(UNIT).pgbackrest_config
    assert f"repo1-cipher-pass={passphrase}\n" in conf.read_text()
    assert conf.stat().st_mode & 0o777 == 0o640

    unit = cluster.unit(UNIT)
    unit.query("create table t (v text)")
    unit.query("insert into t values ('in-backup')")
    res = run_cli("run", "--name", NAME, UNIT, "create-backup", "--json")
    assert res.returncode == 0, res.stderr
    backup_id = json.loads(res.stdout)["results"]["backup-id"]
    unit.query("insert into t values ('in-wal')")
    segment = switch_and_wait_archived(cluster, unit)
    assert processes_holding(passphrase.encode()) == []

    # Through the S3 API: ciphertext, never the INI text or a WAL page.
    bucket, path = repository_bucket(cluster)
    prefix = f"{path}/" if path else ""
    stanza = f"local.{NAME}"
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        try:
            info = bucket.get(f"{prefix}backup/{stanza}/backup.info")
            assert info is not None and info.startswith(CIPHER_HEADER)
            assert b"[backrest]" not in info and b"backup-current" not in info
            wal = bucket.get(segment_keys(cluster)[segment])
            assert wal is not None and wal.startswith(CIPHER_HEADER)
            files = [
                k
                for k in bucket.list_keys(f"{prefix}backup/{stanza}/")
                if "/pg_data/" in k or "/bundle/" in k
            ]
            assert files, "the backup's files are in the bucket"
            for key in files:
                body = bucket.get(key)
                assert body is not None and body.startswith(CIPHER_HEADER), key
        finally:
            bucket.close()

    # An encrypted repository restores, with its rows.
    res = run_cli(
        "run", "--name", NAME, UNIT, "restore", f"backup-id={backup_id}",
        "restore-to-time=latest", "--wait", "--timeout", "180", timeout=240,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert rows(cluster) == {"in-backup", "in-wal"}
    restored = round(time.monotonic() - started, 1)

    # A wrong passphrase: Blocked with a plain explanation, no traceback, nothing echoed.
    wrong = tmp_path / "wrong"
    wrong.write_text("a-wrong-passphrase-0123456789\n")
    res = run_cli("s3", "set", "--name", NAME, "--encryption-passphrase-file", str(wrong))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    status, message = cluster.get_status(UNIT)
    assert status == "blocked", message
    assert "its encryption passphrase is not the one set (wrong or lost)" in message, message
    assert "a-wrong-passphrase" not in res.stderr + message

    # None at all on an encrypted repository: said so.
    res = run_cli("s3", "set", "--name", NAME, "--no-encryption")
    assert res.returncode == 1, res.stdout + res.stderr
    status, message = cluster.get_status(UNIT)
    assert "the repository is encrypted and no encryption passphrase is set" in message, message

    # The right one clears it; the backups are listed again.
    res = run_cli("s3", "set", "--name", NAME, "--encryption-passphrase-file", str(own))
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.get_status(UNIT)[0] == "active"
    res = run_cli("run", "--name", NAME, UNIT, "list-backups", "--json")
    assert res.returncode == 0 and backup_id in res.stdout, res.stderr
    print("encryption e2e:", {"restored": restored, "end": round(time.monotonic() - started, 1)})
