"""The charm's own code path on three machines, against the real services.

Each unit is a machine of its own (network + mount namespace, :mod:`machines.world`);
Juju is stood in by ops.testing (:mod:`machines.juju`), systemd by supervised processes
(:mod:`machines.systemd`); everything from the charm's event handlers down (charm.py,
CharmHost, the core, the workload, PostgreSQL, Patroni on the charm's Raft, pgBackRest,
the S3 server) is real. The steps follow a deployment's life, in order, each on what the
ones before left: deploy 3 units, integrate S3, integrate TLS, create-backup on a
replica, list-backups, scale down to 1, restore, scale back to 3, a leader change.
Outcomes are checked where they are (rows in every unit's database, objects in the
bucket, members streaming), not in exit codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from ops import testing

import charm
from machines.juju import APP, S3, TLS, Juju
from machines.providers import CertificatesProvider, S3Integrator
from machines.world import World
from pgbackups.adapters import certificates
from workload import system_postgresql_version

pytestmark = pytest.mark.real

PG_VERSION = system_postgresql_version()
DEPLOY_TIMEOUT = 180.0
ROWS_BEFORE = 100
PRIMARY = "Primary"


@dataclass
class Scenario:
    world: World
    juju: Juju = field(default_factory=Juju)
    next_unit: int = 0
    backup_id: str = ""

    def add_unit(self) -> int:
        unit = self.next_unit
        self.next_unit += 1
        self.juju.add_unit(unit, self.world.add_machine(unit))
        return unit

    def remove_unit(self, unit: int) -> None:
        self.juju.remove_unit(unit)
        self.world.remove_machine(f"u{unit}")

    def sql(self, unit: int, query: str) -> str:
        return self.world.sql(self.world.machines[f"u{unit}"], query, version=PG_VERSION)

    def try_sql(self, unit: int, query: str) -> str | None:
        try:
            return self.sql(unit, query)
        except RuntimeError:
            return None

    def units(self) -> list[int]:
        return sorted(self.juju.agents)

    def primaries(self) -> list[int]:
        return [u for u in self.units() if self.try_sql(u, "select pg_is_in_recovery()") == "f"]

    def replicas(self) -> list[int]:
        return [u for u in self.units() if self.try_sql(u, "select pg_is_in_recovery()") == "t"]

    def streaming(self) -> int:
        """How many replicas stream from the one primary (0 without exactly one)."""
        primaries = self.primaries()
        if len(primaries) != 1:
            return 0
        got = self.try_sql(
            primaries[0], "select count(*) from pg_stat_replication where state = 'streaming'"
        )
        return int(got) if got else 0

    def statuses(self) -> dict[int, Any]:
        return {u: a.status for u, a in self.juju.agents.items()}

    def healthy(self) -> bool:
        """Every unit Active, the primary's status Primary, every replica streaming."""
        statuses = self.statuses()
        if not all(isinstance(s, testing.ActiveStatus) for s in statuses.values()):
            return False
        primaries = self.primaries()
        # The leader adds the recoverable window after it: "Primary, recoverable window ...".
        if len(primaries) != 1 or statuses[primaries[0]].message.split(",")[0] != PRIMARY:
            return False
        return self.streaming() == len(statuses) - 1

    def count(self, unit: int) -> int:
        return int(self.sql(unit, "select count(*) from charm_rows"))

    def wait_rows(self, unit: int, expected: int) -> bool:
        return self.try_sql(unit, "select count(*) from charm_rows") == str(expected)


@pytest.fixture(scope="module")
def scenario(machines_world: World) -> Iterator[Scenario]:
    yield Scenario(machines_world)


def test_deploy_three_units(scenario: Scenario) -> None:
    for _ in range(3):
        scenario.add_unit()
    juju = scenario.juju
    juju.settle("three units, one primary, two streaming", scenario.healthy,
                timeout=DEPLOY_TIMEOUT)  # fmt: skip
    # Only the leader bootstrapped: one cluster, one system identifier on every unit.
    ids = {scenario.sql(u, "select system_identifier from pg_control_system()")
           for u in scenario.units()}  # fmt: skip
    assert len(ids) == 1
    assert juju.app_bag.get("cluster_initialised")
    scenario.sql(scenario.primaries()[0], "create table charm_rows (n int primary key)")


def test_integrate_s3(scenario: Scenario) -> None:
    world, juju = scenario.world, scenario.juju
    assert world.s3 is not None
    s3 = world.s3
    integrator = S3Integrator(
        app="s3-integrator",
        endpoint=s3.endpoint,
        access_key=s3.credentials.access_key,
        secret_key=s3.credentials.secret_key,
        ca_pem=s3.ca.cert_pem,
    )
    juju.integrate(S3, integrator)
    # The integrator answered only after our leader asked for a bucket.
    relation = juju.related[S3]
    # What the s3 interface's requirer writes for both integrator tracks (track 2 also
    # waits for lib-version and reads the keys from the secret it names).
    assert relation.app_bag == {
        "bucket": APP,
        "lib-version": "1.0",
        "requested-secrets": '["access-key", "secret-key"]',
    }
    assert relation.provider_bag["bucket"] == APP

    def archiving() -> bool:
        stanza = juju.app_bag.get("stanza")
        if not stanza:
            return False
        keys = s3.keys(APP, f"charm-on-machines/archive/{stanza}/")
        return any(k.endswith("archive.info") for k in keys)

    juju.settle("the stanza is made, WAL is archived, every unit is healthy",
                lambda: archiving() and scenario.healthy(), timeout=DEPLOY_TIMEOUT)  # fmt: skip


def test_integrate_tls(scenario: Scenario) -> None:
    juju, world = scenario.juju, scenario.world
    ca = certificates.new_authority("self-signed-certificates-ca")
    juju.integrate(TLS, CertificatesProvider(ca, world.home))
    for unit in scenario.units():
        assert juju.unit_bags[unit].get("tls") == "enabled", juju.unit_bags[unit]
    juju.settle("TLS on every unit", lambda: all(
        scenario.try_sql(u, "show ssl") == "on" for u in scenario.units()
    ), timeout=DEPLOY_TIMEOUT)  # fmt: skip
    juju.settle("healthy with TLS", scenario.healthy, timeout=DEPLOY_TIMEOUT)


def test_create_backup_on_a_replica_and_list_it(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    juju, world = scenario.juju, scenario.world
    assert world.s3 is not None
    primary = scenario.primaries()[0]
    scenario.sql(primary, f"insert into charm_rows select generate_series(1, {ROWS_BEFORE})")
    replica = scenario.replicas()[0]
    # The primary refuses with TLS and replicas, as the reference does.
    refused = juju.action(primary, "create-backup")
    assert refused.failure is not None
    result = juju.action(replica, "create-backup", type="full")
    assert result.failure is None, result.failure
    assert result.results is not None
    listed = juju.action(scenario.units()[0], "list-backups", format="json")
    assert listed.failure is None, listed.failure
    assert listed.results is not None
    backups = json.loads(listed.results["backups"])
    finished = [b for b in backups if b["status"] == "finished" and b["action"] == "full backup"]
    assert len(finished) == 1, backups
    scenario.backup_id = finished[0]["backup-id"]
    stanza = juju.app_bag["stanza"]
    keys = world.s3.keys(APP, f"charm-on-machines/backup/{stanza}/")
    assert any("backup.manifest" in k for k in keys), keys
    # The leader's status says the recoverable window the backup opened, read by the
    # charm from the real repository (at every update-status here: the hooks are forked
    # from this process).
    monkeypatch.setattr(charm, "WINDOW_REFRESH_SECONDS", 0.0)
    leader = juju.leader
    assert leader is not None

    def says_window() -> bool:
        return "recoverable window " in scenario.statuses()[leader].message

    juju.settle("the leader says the recoverable window", says_window, timeout=60)
    message = scenario.statuses()[leader].message
    earliest = message.split("recoverable window ")[1].split(" ")[0]
    assert earliest >= scenario.backup_id, message  # the same form: UTC, to the second
    # Rows written after the backup: the restore to it leaves them out.
    scenario.sql(primary, "insert into charm_rows values (100000)")


def test_scale_down_to_one(scenario: Scenario) -> None:
    juju = scenario.juju
    leader = juju.leader
    assert leader is not None
    for unit in [u for u in scenario.units() if u != leader]:
        scenario.remove_unit(unit)
    assert scenario.units() == [leader]
    juju.settle("the last unit is the primary", scenario.healthy, timeout=DEPLOY_TIMEOUT)
    assert scenario.count(leader) == ROWS_BEFORE + 1


def test_restore_on_the_single_unit(scenario: Scenario) -> None:
    juju = scenario.juju
    leader = juju.leader
    assert leader is not None
    result = juju.action(leader, "restore", **{"backup-id": scenario.backup_id})
    assert result.failure is None, result.failure
    juju.settle("the restore ended", lambda: not juju.app_bag.get("restoring-backup")
                and scenario.healthy(), timeout=DEPLOY_TIMEOUT)  # fmt: skip
    assert scenario.count(leader) == ROWS_BEFORE
    # The data from before the restore: deleted on the unit's machine by a process the
    # restore did not wait for (rm as the database user, inside the machine's mounts).
    machine = scenario.world.machines[f"u{leader}"]
    postgres_dir = machine.root / "fs" / "var-lib-postgresql" / PG_VERSION
    juju.settle("the old data removed", lambda: not [
        p for p in postgres_dir.iterdir() if ".before-restore-" in p.name
    ], timeout=60)  # fmt: skip
    assert (postgres_dir / "pgbackups" / "PG_VERSION").is_file()


def test_scale_back_to_three(scenario: Scenario) -> None:
    juju = scenario.juju
    for _ in range(2):
        scenario.add_unit()
    juju.settle("three units again", scenario.healthy, timeout=DEPLOY_TIMEOUT)
    juju.settle("every unit has the restored rows, and only those", lambda: all(
        scenario.wait_rows(u, ROWS_BEFORE) for u in scenario.units()
    ), timeout=60)  # fmt: skip


def test_a_leader_change(scenario: Scenario) -> None:
    juju = scenario.juju
    old = juju.leader
    new = next(u for u in scenario.units() if u != old)
    juju.elect(new)
    juju.update_status()
    assert juju.leader == new
    listed = juju.action(new, "list-backups", format="json")
    assert listed.failure is None, listed.failure
    assert listed.results is not None
    assert any(b["backup-id"] == scenario.backup_id for b in json.loads(listed.results["backups"]))
    juju.settle("healthy under the new leader", scenario.healthy, timeout=DEPLOY_TIMEOUT)
    # The restored cluster backs up again (on its new timeline), from a replica.
    replica = scenario.replicas()[0]
    result = juju.action(replica, "create-backup", type="full")
    assert result.failure is None, result.failure
    listed = juju.action(new, "list-backups", format="json")
    assert listed.results is not None
    rows = json.loads(listed.results["backups"])
    full = [b for b in rows if b["action"] == "full backup" and b["status"] == "finished"]
    assert len(full) == 2, rows
    assert full[-1]["timeline"] > full[0]["timeline"], rows
