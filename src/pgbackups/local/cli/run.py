"""``pgbackups run UNIT ACTION [key=value …]``: the local twin of ``juju run``.

The action's results are printed (``--json`` for scripts); a failed action prints its
message and exits 1. ``restore --wait`` then runs update-status on the unit until the
restore is detected complete or failed, with progress; ``rollback-restore --wait`` waits
until the unit runs as the primary again on the data that was put back.
"""

from __future__ import annotations

import argparse
import importlib
import json
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pgbackups.core.handlers import primary_timeline
from pgbackups.core.host import StatusKind
from pgbackups.core.messages import is_restored_from_another_cluster
from pgbackups.core.outcomes import ActionFailed, ActionResults, Deferred, Outcome
from pgbackups.core.params import ACTION_PARAMS, check_action_params
from pgbackups.core.restore_state import RestoreState
from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import PgbackupsError, UsageError
from pgbackups.local.progress import Progress

if TYPE_CHECKING:
    from pgbackups.local.runtime.host import Runtime

RESTORE_WAIT_TIMEOUT = 1800.0
# update-status is cheap here (a few REST calls): poll often, the restore's end shows sooner.
RESTORE_POLL_SECONDS = 1.0
# Between two update-status rounds every unit's Patroni is asked (GET /patroni, /primary:
# milliseconds each) this often, and the next round runs as soon as an answer changes: the
# restored primary, or a unit that stopped or streams again, is then seen at once rather
# than up to RESTORE_POLL_SECONDS later (docs/performance.md, "The restore's fixed cost").
RESTORE_WATCH_SECONDS = 0.1


class ActionError(PgbackupsError):
    """The action ran and failed: its message is the error line."""


def parse_params(action: str, pairs: list[str]) -> dict[str, str]:
    accepted = ACTION_PARAMS[action]  # argparse's choices let only known actions through
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"parameter {pair!r} is not key=value (e.g. type=full)")
        if key not in accepted:
            names = ", ".join(accepted) if accepted else "none"
            raise UsageError(f"{action} has no parameter {key!r}; it accepts: {names}")
        if key in params:
            raise UsageError(f"parameter {key!r} is given twice")
        params[key] = value
    return params


class _Ticker:
    """Says "still running" every few seconds while a long action runs."""

    def __init__(self, progress: Progress, what: str, every: float = 10.0) -> None:
        self._progress, self._what, self._every = progress, what, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._every):
            self._progress.say(f"{self._what}: still running ({time.monotonic() - started:.0f}s)")

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _tick(runtime: Runtime, leader: str) -> None:
    """One update-status on every unit, the leader first (what Juju's timer does), and the
    peer-changed events their writes cause."""
    before = runtime.store.snapshot()
    names = [leader] + [u.name for u in runtime.cluster.units() if u.name != leader]
    for name in names:
        runtime.fire(name, "update-status")
    runtime.relay_changes(before)


def _others(runtime: Runtime, unit: str) -> str:
    """The other units' statuses, for the progress line."""
    cluster = runtime.cluster
    parts = []
    for other in cluster.units():
        if other.name != unit:
            status, message = cluster.get_status(other.name)
            parts.append(f"{other.name} {status}" + (f" ({message})" if message else ""))
    return "; ".join(parts)


def wait_for_restore(runtime: Runtime, unit: str, progress: Progress, timeout: float) -> str:
    """Run update-status on every unit until the restore ends on all of them; the final
    status message of ``unit`` (the leader).

    Raises ActionError when the restore failed (Blocked) or did not end in time. A
    restore from another cluster's repository that worked is no failure: the leader's S3
    block then says the data is restored and what to do next.
    """
    cluster = runtime.cluster
    deadline = time.monotonic() + timeout
    progress.say(f"waiting for {unit} to finish the restore")
    # The completion re-checks the repository through botocore: imported meanwhile, on
    # the side, rather than after the restore (0.15 s of CPU; the import lock makes a
    # hook that needs it first wait for it).
    threading.Thread(
        target=importlib.import_module, args=("pgbackups.adapters.s3",), daemon=True
    ).start()
    while True:
        _tick(runtime, unit)
        status, message = cluster.get_status(unit)
        restore = RestoreState.read(runtime.store.app_bag(writable=False))
        over = restore is None or not (restore.in_progress or restore.stage)
        if over and (
            status != StatusKind.BLOCKED.value or is_restored_from_another_cluster(message)
        ):
            if len(cluster.units()) > 1:
                _tick(runtime, unit)  # the other units let clients in again
            progress.say(f"restore complete on {unit}: {status} {message}".rstrip())
            return message
        if status == StatusKind.BLOCKED.value:
            moved = restore.moved_data if restore is not None else ""
            kept = f"; the data from before the restore is kept at {moved}" if moved else ""
            raise ActionError(
                f"restore failed on {unit}: {message}{kept} "
                f"(see: pgbackups logs --name {cluster.name} {unit}; "
                f"pgbackups status --name {cluster.name})"
            )
        if time.monotonic() > deadline:
            raise ActionError(
                f"the restore on {unit} did not finish within {timeout:g}s; it may still "
                f"complete: pgbackups status --name {cluster.name}"
            )
        seen = _members(runtime)
        member = seen.get(unit, (None, None, None))[0]
        others = _others(runtime, unit)
        progress.say(
            f"restoring: {unit} {message or status} (Patroni member state {member or 'starting'})"
            + (f"; {others}" if others else "")
        )
        _until_members_change(runtime, seen, RESTORE_POLL_SECONDS)


Members = dict[str, tuple[str | None, bool | None, str | None]]


def _members(runtime: Runtime) -> Members:
    """Each unit's Patroni member state, whether it runs as the primary (None: no
    answer), and, while Patroni does not run, where a restored PostgreSQL's recovery is
    (its promotion is what lets Patroni take over), asked from the unit's machine."""
    seen: Members = {}
    for unit in runtime.cluster.units():
        with runtime.machine_of(unit.name):
            workload = runtime.host_for(unit.name).workload
            recovery = workload.recovery()
            seen[unit.name] = (
                workload.member_state(),
                workload.is_primary(),
                recovery.state if recovery is not None else None,
            )
    return seen


def _until_members_change(runtime: Runtime, seen: Members, seconds: float) -> None:
    """Sleep up to ``seconds``, less once a unit's Patroni says something else than
    ``seen`` (a bootstrap that ended, a member that became the primary, stopped, or
    streams again): the next update-status round then runs at once rather than up to a
    second later. Only reads: no hook runs meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(RESTORE_WATCH_SECONDS, left))
        if _members(runtime) != seen:
            return


def wait_for_rollback(runtime: Runtime, unit: str, progress: Progress, timeout: float) -> int:
    """Wait until Patroni runs ``unit`` as the primary on the data put back, and every
    other unit runs its own data from before the restore again; the timeline.

    The action returns once Patroni is started; this is the part a script waits for.
    """
    cluster = runtime.cluster
    workload = runtime.host_for(unit).workload
    deadline = time.monotonic() + timeout
    progress.say(f"waiting for {unit} to run as the primary again")
    while True:
        _tick(runtime, unit)
        with runtime.machine_of(unit):  # its Patroni, asked from its machine
            state = workload.member_state() or "starting"
            timeline = primary_timeline(workload)
        restore = RestoreState.read(runtime.store.app_bag(writable=False))
        if timeline is not None and (restore is None or not restore.stage):
            progress.say(f"rollback complete on {unit}: primary on timeline {timeline}")
            return timeline
        if time.monotonic() > deadline:
            raise ActionError(
                f"{unit} did not run as the primary within {timeout:g}s after the rollback "
                f"(Patroni member state {state}; see: pgbackups logs --name {cluster.name} "
                f"{unit}; pgbackups status --name {cluster.name})"
            )
        others = _others(runtime, unit)
        progress.say(f"starting: Patroni member state {state}" + (f"; {others}" if others else ""))
        time.sleep(RESTORE_POLL_SECONDS)


def print_outcome(
    action: str, unit: str, params: Mapping[str, str], outcome: Outcome, *, as_json: bool
) -> None:
    if as_json:
        doc: dict[str, object] = {"unit": unit, "action": action, "params": dict(params)}
        if isinstance(outcome, ActionResults):
            results: dict[str, object] = dict(outcome.results)
            if action == "list-backups" and params.get("format") == "json":
                results["backups"] = json.loads(outcome.results["backups"])
            doc.update(status="completed", results=results)
        elif isinstance(outcome, ActionFailed):
            doc.update(status="failed", message=outcome.message)
        print(json.dumps(doc, indent=2))
        return
    if isinstance(outcome, ActionResults):
        for key, value in outcome.results.items():
            if "\n" in value:
                print(value)
            else:
                print(f"{key}: {value}")


def cmd_run(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime

    cluster = Cluster.load(args.name)
    unit = cluster.unit(args.unit).name
    params = parse_params(args.action, args.params)
    if args.wait and args.action not in WAITERS:
        raise UsageError(
            "--wait is for restore and rollback-restore; the other actions finish before "
            "they return"
        )
    # A value the action refuses (a bad type, an empty restore-to-time) is the action's
    # failure, as `juju run` reports it (exit 1, JSON for scripts), checked before the
    # cluster is locked or any unit runs anything; an unknown key above is a usage error.
    problem = check_action_params(args.action, params)
    if problem is not None:
        refused = ActionFailed(problem)
        print_outcome(args.action, unit, params, refused, as_json=args.json)
        if args.json:
            return 1
        raise ActionError(f"{args.action} failed on {unit}: {problem}")
    runtime = Runtime(cluster)
    progress = Progress(quiet=args.json)
    with cluster.operation(f"run {args.action}"):
        progress.say(f"running {args.action} on {unit}")
        with _Ticker(progress, args.action):
            outcome = runtime.run_action(unit, args.action, params)
        if isinstance(outcome, Deferred):  # an action never defers; a host bug if it does
            outcome = ActionFailed(f"{args.action} could not run now: {outcome.reason}")
        print_outcome(args.action, unit, params, outcome, as_json=args.json)
        if isinstance(outcome, ActionFailed):
            if args.json:
                return 1
            raise ActionError(f"{args.action} failed on {unit}: {outcome.message}")
        progress.say(f"{args.action} on {unit} completed")
        if args.wait:
            WAITERS[args.action](runtime, unit, progress, args.timeout)
    return 0


WAITERS = {"restore": wait_for_restore, "rollback-restore": wait_for_rollback}


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "run",
        "run an action on a unit (create-backup, list-backups, restore, rollback-restore)",
        "Run an action on UNIT, like `juju run`. Parameters are key=value:\n"
        "  create-backup  type=full|differential|incremental (default full)\n"
        "  list-backups   format=table|json (default table)\n"
        "  restore        backup-id=ID and/or restore-to-time=TIME|latest\n"
        "                 ID: a backup (YYYY-MM-DDTHH:MM:SSZ or a pgBackRest label) or a\n"
        "                 timeline (a `restore` row of list-backups; needs restore-to-time)\n"
        "                 TIME: 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]' or ISO 8601\n"
        "                 (2026-11-28T14:00:00Z); a time without a zone is UTC.\n"
        "                 backup-id alone: the end of that backup; with a TIME: that\n"
        "                 backup's timeline up to TIME; with latest: all of its timeline's\n"
        "                 WAL; TIME alone: the nearest backup or timeline before TIME;\n"
        "                 latest alone: the end of the newest timeline.\n"
        "  rollback-restore  (no parameters) after a failed restore: put the data from\n"
        "                 before it back and start the database on it.\n"
        "Results are printed; a failure prints its message and exits 1.\n"
        "restore --wait waits until the restore is complete on every unit, or failed\n"
        "(exit 1; e.g. a point-in-time target the archived WAL does not reach): the other\n"
        "units stop, the leader restores, they re-create themselves from it. A restore\n"
        "from another cluster's repository ends Blocked with backups paused (exit 0).\n"
        "rollback-restore --wait until every unit runs its data from before again.",
        """
        pgbackups run main/1 create-backup type=full
        pgbackups run main/0 list-backups
        pgbackups run main/0 list-backups format=json --json
        pgbackups run main/0 restore backup-id=2026-11-28T14:39:26Z --wait
        pgbackups run main/0 restore "restore-to-time=2026-11-28 14:45:00" --wait
        pgbackups run main/0 restore backup-id=2026-11-28T14:39:26Z restore-to-time=latest
        pgbackups run main/0 rollback-restore --wait
        """,
    )
    add_name(p)
    p.add_argument("unit", help="NAME/N or N")
    p.add_argument("action", choices=sorted(ACTION_PARAMS), help="the action to run")
    p.add_argument("params", nargs="*", metavar="key=value", help="action parameters")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--wait", action="store_true", help="restore, rollback-restore: wait until it is done"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=RESTORE_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long --wait waits (default {RESTORE_WAIT_TIMEOUT:g})",
    )
    p.set_defaults(func=cmd_run)
