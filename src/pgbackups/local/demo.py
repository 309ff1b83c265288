"""The demo: backups and a restore on a fresh 2-unit TLS cluster, step by step.

Each step runs the real ``pgbackups`` command a user would type (shown with ``$``),
then checks what it should have done. The demo ends with a PASS/FAIL summary and its
exit code follows it. It uses a cluster of its own (default name ``demo``) and takes it
down at the end (``--keep`` leaves it running to look around).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgbackups.local.runtime.cluster import Cluster

FIRST_ROWS = 10
MORE_ROWS = 5


class StepFailed(Exception):
    pass


@dataclass
class Demo:
    name: str = "demo"
    keep: bool = False
    out: Any = field(default=sys.stdout)
    results: list[tuple[str, bool, float, str]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    # --- running commands -------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def pgbackups(
        self, *args: str, check: bool = True, show: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a pgbackups command. Shown: printed with its output (progress included,
        in order). Not shown: a check of the demo's own, output kept apart for parsing."""
        # --name belongs to the (sub)command: after the verb for `s3 set`, `tls enable`.
        words = 2 if args[0] in ("s3", "tls") else 1
        argv = [*args[:words], "--name", self.name, *args[words:]]
        shown = "pgbackups " + " ".join(shlex.quote(a) for a in argv)
        if show:
            self.say(f"  $ {shown}")
        proc = subprocess.run(
            [sys.executable, "-m", "pgbackups", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if show else subprocess.PIPE,
            text=True,
            timeout=900,
            check=False,
        )
        if show:
            for line in proc.stdout.rstrip().splitlines():
                self.say(f"    {line}")
        if check and proc.returncode != 0:
            detail = "" if show else f": {(proc.stderr or proc.stdout).strip()[-300:]}"
            raise StepFailed(f"`{shown}` exited {proc.returncode}{detail}")
        return proc

    def sql(self, unit: str, query: str, *, show: bool = True) -> str:
        proc = self.pgbackups("psql", unit, "-XAtc", query, show=show)
        return proc.stdout.strip()

    def status_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.pgbackups("status", "--json", show=False).stdout)
        return data

    def run_action(self, unit: str, action: str, *params: str) -> dict[str, Any]:
        """Run an action as a user would (shown), and return its results."""
        proc = self.pgbackups("run", unit, action, *params)
        results = {}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith("["):
                results[key.strip()] = value.strip()
        return results

    def backups_json(self, unit: str) -> list[dict[str, Any]]:
        proc = self.pgbackups("run", unit, "list-backups", "format=json", "--json", show=False)
        rows: list[dict[str, Any]] = json.loads(proc.stdout)["results"]["backups"]
        return rows

    # --- steps ----------------------------------------------------------------------

    def step(self, title: str, body: Callable[[], str]) -> None:
        number = len(self.results) + 1
        self.say(f"\n[{number}] {title}")
        started = time.monotonic()
        try:
            detail = body()
            ok = True
        except (StepFailed, subprocess.SubprocessError, ValueError, KeyError) as exc:
            detail, ok = str(exc), False
        took = time.monotonic() - started
        self.results.append((title, ok, took, detail))
        self.say(f"  {'ok' if ok else 'FAILED'} ({took:.1f}s): {detail}")
        if not ok:
            raise StepFailed(title)

    def run(self) -> int:
        self.say(f"pgbackups demo on cluster {self.name!r} (a fresh 2-unit TLS cluster)")
        try:
            self._scenario()
        except StepFailed:
            self.say("\nthe demo stopped at the failed step")
            self.say(f"  look around: pgbackups status --name {self.name}; "
                     f"pgbackups logs --name {self.name}")  # fmt: skip
        finally:
            if not self.keep and Cluster(self.name).exists():
                self.say("\n[end] take the cluster down")
                self.pgbackups("down", "--purge", check=False)
        return self._summary()

    def _summary(self) -> int:
        passed = sum(1 for _, ok, _, _ in self.results if ok)
        total = len(self.results)
        self.say("\nsummary")
        for title, ok, took, _ in self.results:
            self.say(f"  {'PASS' if ok else 'FAIL'}  {took:6.1f}s  {title}")
        ok = total == len(STEPS) and passed == total
        verdict = "PASS" if ok else "FAIL"
        self.say(f"{verdict}: {passed} of {len(STEPS)} steps passed in "
                 f"{time.monotonic() - self.t0:.0f}s")  # fmt: skip
        return 0 if ok else 1

    def _scenario(self) -> None:
        state: dict[str, str] = {}
        for title, body in STEPS:
            self.step(title, lambda body=body: body(self, state))  # type: ignore[misc]


# --- the scenario, one function per step -----------------------------------------------


def _fresh_cluster(demo: Demo, state: dict[str, str]) -> str:
    if Cluster(demo.name).exists():
        demo.say(f"  a cluster named {demo.name!r} exists from an earlier demo: purging it")
        demo.pgbackups("down", "--purge")
    demo.pgbackups("up", "--units", "2", "--tls")
    units = demo.status_json()["units"]
    roles = sorted(u["role"] for u in units)
    if roles != ["primary", "replica"]:
        raise StepFailed(f"expected a primary and a replica, got {roles}")
    state["primary"] = next(u["name"] for u in units if u["role"] == "primary")
    state["replica"] = next(u["name"] for u in units if u["role"] == "replica")
    return f"primary {state['primary']}, replica {state['replica']}, TLS on"


def _set_s3(demo: Demo, state: dict[str, str]) -> str:
    demo.pgbackups("s3", "set")
    data = demo.status_json()
    blocked = [u for u in data["units"] if u["status"] != "active"]
    if blocked:
        raise StepFailed(f"not active after s3 set: {[(u['name'], u['message']) for u in blocked]}")
    backups = data["s3"]["backups"]
    if backups.get("archiving") != "on":
        raise StepFailed("WAL archiving did not turn on")
    return f"stanza {backups['stanza']} initialised, WAL archiving on"


def _create_rows(demo: Demo, state: dict[str, str]) -> str:
    demo.sql(state["primary"], "create table demo_rows (id int primary key, note text)")
    demo.sql(
        state["primary"],
        f"insert into demo_rows select g, 'before the full backup' "  # noqa: S608 - constants
        f"from generate_series(1, {FIRST_ROWS}) g",
    )
    count = demo.sql(state["primary"], "select count(*) from demo_rows", show=False)
    if count != str(FIRST_ROWS):
        raise StepFailed(f"expected {FIRST_ROWS} rows, found {count}")
    return f"{FIRST_ROWS} rows in table demo_rows"


def _full_backup(demo: Demo, state: dict[str, str]) -> str:
    state["full"] = demo.run_action(state["replica"], "create-backup", "type=full")["backup-id"]
    return f"full backup {state['full']} taken on the replica {state['replica']}"


def _more_rows(demo: Demo, state: dict[str, str]) -> str:
    demo.sql(
        state["primary"],
        f"insert into demo_rows select g, 'after the full backup' "  # noqa: S608 - constants
        f"from generate_series({FIRST_ROWS + 1}, {FIRST_ROWS + MORE_ROWS}) g",
    )
    return f"{MORE_ROWS} more rows"


def _differential_backup(demo: Demo, state: dict[str, str]) -> str:
    results = demo.run_action(state["replica"], "create-backup", "type=differential")
    state["diff"] = results["backup-id"]
    return f"differential backup {state['diff']}"


def _list(demo: Demo, state: dict[str, str]) -> str:
    demo.pgbackups("run", state["primary"], "list-backups")
    rows = demo.backups_json(state["primary"])
    pairs = [(r["backup-id"], r["action"], r["status"]) for r in rows]
    expected = [
        (state["full"], "full backup", "finished"),
        (state["diff"], "differential backup", "finished"),
    ]
    if pairs != expected:
        raise StepFailed(f"expected {expected}, listed {pairs}")
    return "both backups listed, finished"


def _restore(demo: Demo, state: dict[str, str]) -> str:
    leader = next(u["name"] for u in demo.status_json()["units"] if u["leader"])
    demo.pgbackups("run", leader, "restore", f"backup-id={state['full']}", "--wait")
    return f"restored {state['full']} on both units, none removed"


def _rows_of_backup(demo: Demo, state: dict[str, str]) -> str:
    units = demo.status_json()["units"]
    roles = sorted(u["role"] for u in units)
    if roles != ["primary", "replica"] or {u["status"] for u in units} != {"active"}:
        raise StepFailed(f"expected an active primary and replica, got {units}")
    for unit in units:
        rows = demo.sql(unit["name"], "select count(*), max(id) from demo_rows")
        if rows != f"{FIRST_ROWS}|{FIRST_ROWS}":
            raise StepFailed(
                f"{unit['name']}: expected {FIRST_ROWS} rows (ids 1..{FIRST_ROWS}), found {rows}"
            )
    replica = next(u["name"] for u in units if u["role"] == "replica")
    streaming = demo.sql(replica, "select status from pg_stat_wal_receiver", show=False)
    if streaming != "streaming":
        raise StepFailed(f"{replica}: wal receiver {streaming!r}")
    primary = next(u["name"] for u in units if u["role"] == "primary")
    timeline = demo.sql(primary, "select timeline_id from pg_control_checkpoint()", show=False)
    return (
        f"exactly the {FIRST_ROWS} rows of the full backup on both units; new timeline "
        f"{timeline}; {replica} streams from the restored primary"
    )


STEPS: Sequence[tuple[str, Callable[[Demo, dict[str, str]], str]]] = (
    ("bring up a fresh 2-unit cluster with TLS", _fresh_cluster),
    ("point the cluster at its S3 server (s3-credentials-changed)", _set_s3),
    ("create a table with rows", _create_rows),
    ("full backup on the replica", _full_backup),
    ("write more rows", _more_rows),
    ("differential backup", _differential_backup),
    ("list the backups", _list),
    ("restore the full backup: one action on the leader, both units", _restore),
    ("exactly the rows of that backup, on both units; the replica streams", _rows_of_backup),
)
