"""The hooks on real local clusters, driven through the CLI as a user would.

Three clusters, each reused by a group of tests in order:
- ``tls2``: 2 units with TLS: backups on the replica, refusals, a backup that fails
  midway because the S3 server stops;
- ``plain2``: 2 units without TLS and a leader that is not the primary;
- ``solo``: 1 unit: S3 mistakes and their fixes, an empty repository, a backup on the
  primary, a restore of an unknown id.
After every refused action the cluster's data is checked unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_helpers import repository_keys, tcp_connect

from pgbackups.adapters import processes
from pgbackups.core import messages
from pgbackups.local.runtime.cluster import S3, Cluster
from pgbackups.local.runtime.host import peer_store

pytestmark = pytest.mark.real

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


class Driver:
    """One cluster, driven with the `pgbackups` command."""

    def __init__(self, cli: Cli, home: Path, name: str) -> None:
        self.cli, self.home, self.name = cli, home, name

    @property
    def cluster(self) -> Cluster:
        return Cluster.load(self.name, self.home)

    def ok(self, *args: str, timeout: float = 600) -> str:
        return self.exits(0, *args, timeout=timeout).stdout

    def exits(
        self, code: int, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        words = 2 if args[0] in ("s3", "tls") else 1
        proc = self.cli(*args[:words], "--name", self.name, *args[words:], timeout=timeout)
        assert proc.returncode == code, f"pgbackups {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def action(self, unit: str, action: str, *params: str) -> dict[str, Any]:
        proc = self.cli("run", "--name", self.name, unit, action, *params, "--json", timeout=600)
        assert proc.stdout.strip(), f"no output from {action}: {proc.stderr}"
        doc: dict[str, Any] = json.loads(proc.stdout)
        assert (proc.returncode == 0) == (doc["status"] == "completed"), proc.stderr
        return doc

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("status", "--json"))
        return data

    def unit_status(self, unit: str) -> tuple[str, str]:
        entry = next(u for u in self.status()["units"] if u["name"] == unit)
        return entry["status"], entry["message"]

    def sql(self, unit: str, query: str) -> str:
        return self.ok("psql", unit, "-XAtc", query).strip()

    def rows(self, unit: str) -> str:
        return self.sql(unit, "select count(*), coalesce(sum(id), 0) from t")

    def cluster_bag(self, unit: str) -> dict[str, str]:
        """A unit's peer bag as the runtime keeps it (peers.json)."""
        return dict(peer_store(self.cluster).unit_bag(self.cluster.unit(unit).name))

    def role(self, role: str) -> str:
        name: str = next(u["name"] for u in self.status()["units"] if u["role"] == role)
        return name


def _driver(cli: Cli, factory: Any, name: str, *up_args: str) -> Iterator[Driver]:
    """Up through the CLI (as a user does: it fires the certificates event); down through
    the shared factory, which stops every recorded PID even when `down` is refused (an
    interrupted command may still hold the cluster's operation lock). ``factory`` is
    tests/conftest.py's ClusterFactory (not imported: charm/tests has a conftest too)."""
    factory.clusters.append(Cluster(name, factory.home))
    driver = Driver(cli, factory.home, name)
    driver.ok("up", *up_args, timeout=300)
    yield driver


@pytest.fixture(scope="module")
def tls2(run_cli: Cli, make_module_cluster: Any) -> Iterator[Driver]:
    yield from _driver(run_cli, make_module_cluster, "tls2", "--units", "2", "--tls")


@pytest.fixture(scope="module")
def plain2(run_cli: Cli, make_module_cluster: Any) -> Iterator[Driver]:
    # Loopback: without TLS servers only units that share a machine reach each other's
    # PostgreSQL (pgN-path), which is what these tests are about.
    yield from _driver(run_cli, make_module_cluster, "plain2", "--units", "2", "--loopback")


@pytest.fixture(scope="module")
def solo(run_cli: Cli, make_module_cluster: Any) -> Iterator[Driver]:
    yield from _driver(run_cli, make_module_cluster, "solo")


# --- 2 units with TLS ------------------------------------------------------------------


def test_tls2_s3_set_turns_archiving_on(tls2: Driver) -> None:
    before = tls2.sql("0", "show archive_command")
    assert before == "/bin/true"
    tls2.ok("s3", "set")
    data = tls2.status()
    assert [u["status"] for u in data["units"]] == ["active", "active"]
    assert data["s3"]["backups"]["archiving"] == "on"
    after = tls2.sql("0", "show archive_command")
    assert "archive-push" in after and "--stanza=local.tls2" in after
    tls2.sql("0", "create table t (id int primary key)")
    tls2.sql("0", "insert into t select generate_series(1, 100)")


def test_tls2_backup_refused_on_the_primary(tls2: Driver) -> None:
    primary = tls2.role("primary")
    doc = tls2.action(primary, "create-backup")
    assert doc == {
        "unit": primary,
        "action": "create-backup",
        "params": {},
        "status": "failed",
        "message": messages.BACKUP_ON_PRIMARY,
    }
    assert tls2.rows(primary) == "100|5050"


def test_tls2_full_differential_incremental_on_the_replica(tls2: Driver) -> None:
    replica, primary = tls2.role("replica"), tls2.role("primary")
    ids = []
    for kind, more in (("full", 101), ("differential", 102), ("incremental", 103)):
        doc = tls2.action(replica, "create-backup", f"type={kind}")
        assert doc["status"] == "completed", doc
        assert doc["results"]["backup-status"] == "backup created"
        assert doc["results"]["type"] == kind
        ids.append(doc["results"]["backup-id"])
        tls2.sql(primary, f"insert into t values ({more})")  # noqa: S608 - a number
        time.sleep(1.1)  # backup ids are seconds: keep them distinct
    rows = tls2.action(primary, "list-backups", "format=json")["results"]["backups"]
    assert [(r["backup-id"], r["action"], r["status"]) for r in rows] == [
        (ids[0], "full backup", "finished"),
        (ids[1], "differential backup", "finished"),
        (ids[2], "incremental backup", "finished"),
    ]
    assert rows[1]["reference-backup-id"] == ids[0]
    assert rows[2]["reference-backup-id"] == ids[1]
    # The replica is back in service: connections allowed, tags cleared.
    assert tls2.unit_status(replica) == ("active", "")
    # The last row was written on the primary after the last backup: streamed, not instant.
    deadline = time.monotonic() + 30
    while tls2.sql(replica, "select count(*) from t") != "103":
        assert time.monotonic() < deadline, "the replica does not catch up after the backups"
        time.sleep(0.3)


def test_tls2_restore_refused_on_a_unit_that_is_not_the_leader(tls2: Driver) -> None:
    """Two units may be restored in place (tests/e2e/test_cluster_restore.py), from the
    leader only."""
    primary = tls2.role("primary")
    before = tls2.rows(primary)
    some_id = tls2.action(primary, "list-backups", "format=json")["results"]["backups"][0]
    other = next(u.name for u in tls2.cluster.units() if u.name != tls2.cluster.leader)
    doc = tls2.action(other, "restore", f"backup-id={some_id['backup-id']}")
    assert doc["status"] == "failed"
    assert doc["message"] == messages.RESTORE_NOT_LEADER
    assert tls2.rows(primary) == before
    assert tls2.status()["units"][0]["state"] == "running"


def _rejected_within(cluster: Cluster, unit_ref: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            tcp_connect(cluster, unit_ref)
        except psycopg.OperationalError as exc:
            if "pg_hba.conf rejects connection" in str(exc):
                return True
        time.sleep(0.2)
    return False


def test_tls2_backup_fails_midway_when_s3_stops(tls2: Driver) -> None:
    """The action fails cleanly within 30 s of S3 going away (it took 141 s: pgBackRest
    retries each request for about twice --io-timeout), the replica accepts client
    connections again with its tags cleared, and once S3 is back list-backups tells the
    truth: the aborted backup is not listed, and the next backup works."""
    primary, replica = tls2.role("primary"), tls2.role("replica")
    # ~200 MB of incompressible data makes the backup last long enough to interrupt.
    tls2.sql(
        primary,
        "create table filler as select g, decode(md5(g::text) || md5((g+1)::text), 'hex')"
        " || gen_random_uuid()::text::bytea as b from generate_series(1, 2000000) g",
    )
    tls2.sql(primary, "checkpoint")
    before = tls2.rows(primary)
    listed_before = tls2.action(primary, "list-backups", "format=json")["results"]["backups"]
    cluster = tls2.cluster
    tcp_connect(cluster, replica)  # clients are served before the backup
    result: dict[str, Any] = {}

    def backup() -> None:
        result.update(tls2.action(replica, "create-backup", "type=full"))
        result["ended"] = time.monotonic()

    runner = threading.Thread(target=backup)
    runner.start()
    s3 = cluster.state().processes[S3]
    # The backup hides the replica from clients before it copies anything...
    assert _rejected_within(cluster, replica, seconds=30), "replica not hidden during backup"
    time.sleep(1.0)
    # ...then the S3 server goes away in the middle of the copy.
    assert processes.stop(s3.pid, timeout=30)
    stopped = time.monotonic()
    runner.join(300)
    assert result.get("status") == "failed", result
    assert result["ended"] - stopped < 30, f"failed {result['ended'] - stopped:.0f}s after S3"
    assert result["message"].startswith(messages.FAILED_TO_BACKUP + ": "), result
    s3_at = f"S3 at {cluster.s3().host}:"
    assert s3_at in result["message"] or "ERROR:" in result["message"], result
    # Always: connections allowed again, the tags cleared and the status restored.
    tcp_connect(cluster, replica)
    name = cluster.unit(replica).member_name
    with cluster.facts.control():
        member = next(m for m in cluster.unit(replica).client().cluster() if m.name == name)
    assert not member.tags.get("nofailover"), member.tags
    tls2.ok("up")  # brings the S3 server back
    # The claim S3 could not remove when the backup failed is noted in the unit's bag,
    # and `status` (update-status) removes it once S3 is back.
    assert tls2.cluster_bag(replica).get("backup-claim-left", "").endswith(".running")
    assert tls2.unit_status(replica) == ("active", "")
    assert "backup-claim-left" not in tls2.cluster_bag(replica)
    assert repository_keys(cluster, "backup/local.tls2/backup-claims/") == []
    assert tls2.rows(primary) == before
    # pgBackRest keeps the aborted backup out of backup.info: not listed as a backup...
    listed = tls2.action(primary, "list-backups", "format=json")["results"]["backups"]
    assert listed == listed_before
    # ...and the next backup runs (its expire removes the aborted one's directory).
    doc = tls2.action(replica, "create-backup", "type=full")
    assert doc["status"] == "completed", doc
    listed = tls2.action(primary, "list-backups", "format=json")["results"]["backups"]
    assert [r["status"] for r in listed] == ["finished"] * (len(listed_before) + 1)


def test_tls2_a_unit_whose_patroni_died_shows_stopped(tls2: Driver) -> None:
    """Not "active": update-status (run by status) sees Patroni gone; `up` brings it back."""
    replica = tls2.role("replica")
    proc = tls2.cluster.unit(replica).process()
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    assert processes.stop(proc.pid, timeout=10)  # gone (reaped by init, not by us)
    table = tls2.ok("status")
    row = next(line for line in table.splitlines() if line.startswith(replica + " "))
    assert row.split()[2:4] == ["stopped", "blocked"], row
    assert messages.DATABASE_STOPPED in row
    (unit,) = [u for u in tls2.status()["units"] if u["name"] == replica]
    assert (unit["state"], unit["status"], unit["message"]) == (
        "stopped",
        "blocked",
        messages.DATABASE_STOPPED,
    )
    tls2.ok("up")
    assert tls2.unit_status(replica) == ("active", "")


# --- 2 units without TLS, the leader is not the primary ---------------------------------


def test_plain2_leader_that_is_not_the_primary_initialises_s3(plain2: Driver) -> None:
    replica = plain2.role("replica")
    plain2.ok("leader", replica)
    assert plain2.ok("leader").strip() == replica
    plain2.ok("s3", "set")
    data = plain2.status()
    assert [u["status"] for u in data["units"]] == ["active", "active"]
    assert data["s3"]["backups"]["stanza"] == "local.plain2"
    assert "archive-push" in plain2.sql(plain2.role("primary"), "show archive_command")
    plain2.sql(plain2.role("primary"), "create table t (id int primary key)")
    plain2.sql(plain2.role("primary"), "insert into t values (1), (2)")


def test_plain2_backup_refused_on_a_replica_without_tls(plain2: Driver) -> None:
    replica = plain2.role("replica")
    doc = plain2.action(replica, "create-backup")
    assert doc["status"] == "failed"
    assert doc["message"] == messages.BACKUP_TLS_DISABLED
    assert plain2.rows(plain2.role("primary")) == "2|3"


def test_plain2_backup_on_the_primary_without_tls(plain2: Driver) -> None:
    doc = plain2.action(plain2.role("primary"), "create-backup")
    assert doc["status"] == "completed", doc


# --- 1 unit ----------------------------------------------------------------------------


def test_solo_wrong_secret_blocks_and_the_right_one_clears(solo: Driver, tmp_path: Path) -> None:
    wrong = tmp_path / "secret"
    wrong.write_text("x" * 40 + "\n")
    # s3 set stores the settings but says the unit is Blocked, and exits 1.
    proc = solo.exits(1, "s3", "set", "--secret-key-file", str(wrong))
    assert "error: solo/0: " in proc.stderr
    status, message = solo.unit_status("solo/0")
    assert status == "blocked"
    assert messages.is_s3_block_message(message), message
    # S3 answers the bucket check 403 (cannot tell whether it exists); pgBackRest then
    # reads the repository with the same keys and says why: the stanza message (issue 4).
    assert message.startswith(messages.FAILED_TO_INITIALIZE_STANZA + ": "), message
    assert "403" in message or "SignatureDoesNotMatch" in message, message
    assert "x" * 40 not in json.dumps(solo.status())
    assert solo.sql("0", "show archive_command") == "/bin/true"
    solo.ok("s3", "set")
    assert solo.unit_status("solo/0") == ("active", "")


def test_solo_pgbackrest_failure_blocks_stanza_then_clears(solo: Driver, tmp_path: Path) -> None:
    """An IP endpoint: boto accepts the IP in the certificate, pgBackRest 2.45 does not
    (on loopback; machines give pgBackRest their address as a DNS name too)."""
    if solo.cluster.facts.network() is not None:
        pytest.skip("on machines the S3 endpoint is an IP address pgBackRest accepts")
    s3 = solo.cluster.s3()
    secret = tmp_path / "secret"
    secret.write_text(s3.secret_key + "\n")
    solo.exits(
        1, "s3", "set", "--endpoint", f"https://127.0.0.1:{s3.port}", "--region", s3.region,
        "--access-key", s3.access_key, "--secret-key-file", str(secret), "--ca-file", s3.ca_file,
        "--path", "/ip-endpoint",
    )  # fmt: skip
    status, message = solo.unit_status("solo/0")
    assert status == "blocked"
    assert message.startswith(messages.FAILED_TO_INITIALIZE_STANZA), message
    assert s3.secret_key not in message
    solo.ok("s3", "set")
    assert solo.unit_status("solo/0") == ("active", "")
    # update-status keeps an active unit active
    assert solo.unit_status("solo/0") == ("active", "")


def test_solo_missing_bucket_is_created_and_lists_empty(solo: Driver) -> None:
    bucket_dir = solo.cluster.paths.s3_data / "fresh-bucket"
    assert not bucket_dir.exists()
    solo.ok("s3", "set", "--bucket", "fresh-bucket", "--path", "/empty")
    assert solo.unit_status("solo/0") == ("active", "")
    assert bucket_dir.is_dir()
    doc = solo.action("0", "list-backups")
    lines = doc["results"]["backups"].splitlines()
    assert lines[:2] == ["Storage bucket name: fresh-bucket", "Backups base path: /empty/backup/"]
    assert lines[3].startswith("backup-id ") and set(lines[4]) == {"-"}
    assert len(lines) == 5  # header, no rows
    assert solo.action("0", "list-backups", "format=json")["results"]["backups"] == []


def test_solo_backup_on_the_primary_and_unknown_restore_id(solo: Driver) -> None:
    solo.sql("0", "create table t (id int primary key)")
    solo.sql("0", "insert into t select generate_series(1, 10)")
    doc = solo.action("0", "create-backup", "type=full")
    assert doc["status"] == "completed", doc
    before = solo.rows("0")
    data_dir = solo.cluster.unit("0").data_dir
    for bad in ("2020-01-01T00:00:00Z", "20200101-000000F", "not-an-id"):
        doc = solo.action("0", "restore", f"backup-id={bad}")
        assert doc["status"] == "failed"
        assert doc["message"] == f"{messages.INVALID_BACKUP_ID}: {bad}"
    doc = solo.action("0", "restore")
    assert messages.has_prefix(doc["message"], messages.MISSING_BACKUP_ID), doc
    assert solo.rows("0") == before
    assert sorted(p.name for p in data_dir.parent.iterdir() if p.name.startswith("data")) == [
        "data"
    ]
    assert solo.unit_status("solo/0") == ("active", "")


def test_solo_bad_parameters_are_usage_errors(solo: Driver, run_cli: Cli) -> None:
    proc = run_cli("run", "--name", "solo", "0", "create-backup", "kind=full")
    assert proc.returncode == 2
    assert "create-backup has no parameter 'kind'; it accepts: type" in proc.stderr
    proc = run_cli("run", "--name", "solo", "0", "create-backup", "type=weekly", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["message"] == (
        "Invalid backup type: weekly. Possible values: full, differential, incremental."
    )
    proc = run_cli("s3", "set", "--name", "solo", "--uri-style", "sideways")
    assert proc.returncode == 2 and "invalid choice: 'sideways'" in proc.stderr
    proc = run_cli("s3", "set", "--name", "solo", "--endpoint", "https://s3.example.com")
    assert proc.returncode == 2 and "needs its own keys" in proc.stderr
    assert solo.unit_status("solo/0") == ("active", "")


def test_plain2_tls_enable_allows_replica_backups_and_disable_stops_servers(
    plain2: Driver,
) -> None:
    cluster = plain2.cluster
    servers = [k for k in cluster.state().processes if k.startswith("pgbackrest-server:")]
    assert servers == []
    plain2.ok("tls", "enable")
    state = cluster.state()
    servers = sorted(k for k in state.processes if k.startswith("pgbackrest-server:"))
    assert servers == [f"pgbackrest-server:{u}" for u in sorted(state.units)]
    assert all(state.processes[k].is_ours() for k in servers)
    assert plain2.sql(plain2.role("primary"), "show ssl") == "on"
    doc = plain2.action(plain2.role("replica"), "create-backup", "type=incremental")
    assert doc["status"] == "completed", doc
    plain2.ok("tls", "disable")
    state = cluster.state()
    assert not [k for k in state.processes if k.startswith("pgbackrest-server:")]
    assert plain2.sql(plain2.role("primary"), "show ssl") == "off"
    doc = plain2.action(plain2.role("replica"), "create-backup")
    assert doc["message"] == messages.BACKUP_TLS_DISABLED


def test_plain2_logs_show_patroni_postgresql_and_pgbackrest(plain2: Driver) -> None:
    primary = plain2.role("primary")
    out = plain2.ok("logs", primary, "--lines", "5")
    assert f"==> {primary} patroni+postgresql: " in out
    assert f"==> {primary} pgbackrest " in out  # a command's log, e.g. archive-push
    only = plain2.ok("logs", primary, "--source", "pgbackrest", "--lines", "1")
    assert "patroni+postgresql" not in only
    assert plain2.cli("logs", "--name", "plain2", "--lines", "0").returncode == 2


def test_tls2_status_brings_back_a_replica_whose_backup_was_killed(
    tls2: Driver, run_cli: Cli, pgbackups_home: Path
) -> None:
    """SIGKILL leaves no chance to the "Always" step; the next update-status does it."""
    replica, primary = tls2.role("replica"), tls2.role("primary")
    cluster = tls2.cluster
    before = tls2.rows(primary)
    env = dict(os.environ, PGBACKUPS_HOME=str(pgbackups_home))
    backup = subprocess.Popen(
        [sys.executable, "-m", "pgbackups", "run", "--name", "tls2", replica, "create-backup"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the CLI and its pgBackRest
    )
    try:
        assert _rejected_within(cluster, replica, seconds=30), "replica not hidden"
    finally:
        os.killpg(backup.pid, signal.SIGKILL)
        backup.wait(30)
    with pytest.raises(psycopg.OperationalError):
        tcp_connect(cluster, replica)  # still hidden: nothing has run since
    assert tls2.unit_status(replica) == ("active", "")  # `status` runs update-status
    tcp_connect(cluster, replica)
    # The killed backup's claim went with its flags: other units may back up.
    assert repository_keys(cluster, "backup/local.tls2/backup-claims/") == []
    assert tls2.rows(primary) == before
    doc = tls2.action(replica, "create-backup", "type=incremental")
    assert doc["status"] == "completed", doc  # the one-backup flag is gone too
