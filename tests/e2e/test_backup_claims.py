"""create-backup's two fixes of issue 14 on a real 3-unit TLS cluster
(docs/behaviour/create-backup.md):

- the type pgBackRest actually took: an incremental asked for on an empty repository is
  taken as a full, and the action says so, as `pgbackrest info` itself lists it;
- one backup per cluster: requests on two units at the same instant end with exactly one
  new backup and one clear refusal. They run in separate processes released by one
  barrier and go straight to the runtime (as two Juju units' agents would: the CLI's
  cluster lock would otherwise queue them), so both reach the handler's checks together.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import repository_keys

from pgbackups.core import backup_claim
from pgbackups.core import messages as msg
from pgbackups.core.ids import label_to_id
from pgbackups.core.outcomes import ActionFailed, ActionResults
from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.host import Runtime

pytestmark = pytest.mark.real

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
NAME = "claims3"


@pytest.fixture(scope="module")
def claims3(run_cli: Cli, make_module_cluster: Any, pgbackups_home: Path) -> Iterator[Cluster]:
    make_module_cluster.clusters.append(Cluster(NAME, pgbackups_home))
    for args in (("up", "--name", NAME, "--units", "3", "--tls"), ("s3", "set", "--name", NAME)):
        proc = run_cli(*args, timeout=400)
        assert proc.returncode == 0, proc.stderr
    yield Cluster.load(NAME, pgbackups_home)


def raw_info(cluster: Cluster) -> list[dict[str, Any]]:
    """The stanza's backups as `pgbackrest info --output=json` prints them (not parsed by
    the adapter that the handler reads them with)."""
    tool = Runtime(cluster).host_for(cluster.units()[0].name).backup_tool
    with cluster.facts.control():  # the S3 machine, reached from the workstation
        result = tool.run(tool.argv("info", "--output=json", stanza=tool.stanza), 120)
    assert result.ok, result.stderr
    [stanza] = json.loads(result.stdout)
    backups: list[dict[str, Any]] = stanza["backup"]
    return backups


def roles(cluster: Cluster) -> tuple[str, list[str]]:
    primary = cluster.primary()
    assert primary is not None
    return primary.name, sorted(u.name for u in cluster.units() if u.name != primary.name)


def _run(home: str, unit: str, params: dict[str, str], start: Barrier, out: Any) -> None:
    cluster = Cluster.load(NAME, Path(home))
    runtime = Runtime(cluster)
    start.wait(timeout=60)
    outcome = runtime.run_action(unit, "create-backup", params)
    if isinstance(outcome, ActionResults):
        out.put((unit, "completed", dict(outcome.results)))
    elif isinstance(outcome, ActionFailed):
        out.put((unit, "failed", outcome.message))
    else:
        out.put((unit, type(outcome).__name__, ""))


def at_once(home: Path, requests: dict[str, dict[str, str]]) -> dict[str, tuple[str, Any]]:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(requests))
    out = context.Queue()
    procs = [
        context.Process(target=_run, args=(str(home), unit, params, start, out))
        for unit, params in requests.items()
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return {unit: (status, detail) for unit, status, detail in results}


def test_incremental_on_an_empty_repository_reports_the_full_backup_taken(
    claims3: Cluster, run_cli: Cli
) -> None:
    assert raw_info(claims3) == []
    _, replicas = roles(claims3)
    proc = run_cli(
        "run", "--name", NAME, replicas[0], "create-backup", "type=incremental", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    [listed] = raw_info(claims3)
    assert (listed["type"], listed["label"][-1]) == ("full", "F")
    assert results == {
        "backup-status": "backup created",
        "backup-id": results["backup-id"],
        "type": "full",
        "requested-type": "incremental",
        "message": "incremental requested; no full backup existed, so a full backup was taken",
    }
    assert label_to_id(listed["label"]) == results["backup-id"]
    # With a full backup there, an incremental is an incremental, and says nothing more.
    proc = run_cli(
        "run", "--name", NAME, replicas[1], "create-backup", "type=incremental", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert (results["type"], results["requested-type"]) == ("incremental", "incremental")
    assert "message" not in results
    assert [(b["type"], b["label"][-1]) for b in raw_info(claims3)] == [
        ("full", "F"),
        ("incr", "I"),
    ]


@pytest.mark.parametrize("round_", range(3))
def test_two_replicas_at_the_same_instant_make_exactly_one_backup(
    claims3: Cluster, pgbackups_home: Path, round_: int
) -> None:
    """A few rounds: which unit wins, and where the loser is stopped (its first look, or
    its second after both wrote), changes from round to round."""
    before = {b["label"] for b in raw_info(claims3)}
    _, replicas = roles(claims3)
    outcomes = at_once(pgbackups_home, {unit: {"type": "full"} for unit in replicas})
    completed = [u for u, (status, _) in outcomes.items() if status == "completed"]
    assert len(completed) == 1, outcomes
    [winner] = completed
    [(_loser, (status, message))] = [(u, o) for u, o in outcomes.items() if u != winner]
    assert status == "failed"
    assert message.startswith(f"{msg.BACKUP_ALREADY_RUNNING}: {winner} started one at "), message
    new = [b for b in raw_info(claims3) if b["label"] not in before]
    assert len(new) == 1 and new[0]["type"] == "full", new
    assert outcomes[winner][1]["backup-id"] == label_to_id(new[0]["label"])
    _assert_no_claim_left(claims3)


def test_the_primary_and_a_replica_at_the_same_instant_make_exactly_one_backup(
    claims3: Cluster, pgbackups_home: Path
) -> None:
    before = {b["label"] for b in raw_info(claims3)}
    primary, replicas = roles(claims3)
    outcomes = at_once(pgbackups_home, {primary: {}, replicas[0]: {}})
    assert outcomes[primary] == ("failed", msg.BACKUP_ON_PRIMARY)
    assert outcomes[replicas[0]][0] == "completed", outcomes
    new = [b for b in raw_info(claims3) if b["label"] not in before]
    assert len(new) == 1, new
    _assert_no_claim_left(claims3)


def _assert_no_claim_left(cluster: Cluster) -> None:
    assert repository_keys(cluster, backup_claim.claims_prefix(f"backup/local.{NAME}")) == []
