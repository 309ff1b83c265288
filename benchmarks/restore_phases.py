"""Where the seconds of a pgbackups restore go, until the primary commits a write.

``python -m benchmarks.restore_phases [--size 500MB] [--repeat 3]``: a one-unit local
cluster named ``bench`` in its own PGBACKUPS_HOME, a database of about SIZE, a full
backup, then REPEAT restores of it through the core (the local runtime's Python API, as
``pgbackups run bench/0 restore --wait`` runs it), each followed by a bare ``pgbackrest
restore`` + ``postgres`` of the same backup as the baseline. After the action,
update-status runs every 0.1 s (as ``--wait`` does when something changes) and the
restored PostgreSQL's state is polled; pgBackRest's ``restore command begin/end`` lines
are read from its own log. The time splits into:

- ``checks``: from the action's start until pgBackRest's restore begins (the request
  checked against the repository and the archive);
- ``pgbackrest restore``: pgBackRest's own restore, beside the data directory, while the
  database stops and the cluster is forgotten in the DCS;
- ``swap and start``: from its end until the action returns (the copy renamed into place,
  PostgreSQL started on it);
- ``recovery and promotion``: until that PostgreSQL has promoted at the target;
- ``takeover``: until Patroni, started by the next update-status, runs it as the primary;
- ``completion``: update-status seeing it (keys cleared, repository re-checked, old data
  removed);
- ``until writable``: until a write commits.

The figures are printed as JSON on stdout; the baseline's total is measured in the same
run. This splits the overhead the main benchmark reports (benchmarks/phases.py,
``restore:pgbackups`` against ``restore:direct``) into its steps.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import phases
from benchmarks.env import Bench, BenchError, log, now
from benchmarks.stats import MB, parse_size
from pgbackups.core.host import Recovery
from pgbackups.local.runtime.host import Runtime

_PGBACKREST_LINE = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) P00\s+INFO: "
    r"restore command (?P<what>begin|end)"
)


def _pgbackrest_times(log_file: Path, since: float) -> dict[str, float]:
    """Epoch seconds of the last ``restore command begin`` and ``end`` after ``since``
    (pgBackRest logs local time, to the millisecond)."""
    found: dict[str, float] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        match = _PGBACKREST_LINE.match(line)
        if match is None:
            continue
        when = datetime.strptime(match["when"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if when >= since:
            found[match["what"]] = when
    return found


def restore_with_phases(bench: Bench, backup_id: str) -> dict[str, float]:
    """One restore through the core; seconds per phase (see the module's docstring)."""
    runtime = Runtime(bench.cluster)
    unit = bench.unit
    workload = runtime.host_for(unit.name).workload
    started_wall, started = time.time(), now()
    outcome = runtime.run_action(unit.name, "restore", {"backup-id": backup_id})
    action_done = now()
    if "restore-status" not in getattr(outcome, "results", {}):
        raise BenchError(f"restore refused: {outcome}")
    promoted_at = primary_at = detected_at = None
    deadline = now() + 1800
    while detected_at is None:
        if now() > deadline:
            raise BenchError("the restore did not end")
        recovery = workload.recovery()
        if promoted_at is None and recovery is not None and recovery.state == Recovery.PROMOTED:
            promoted_at = now()
        if primary_at is None and workload.is_member_running() and workload.is_primary():
            primary_at = now()
            promoted_at = promoted_at or primary_at
        runtime.fire(unit.name, "update-status")
        status, message = bench.cluster.get_status(unit.name)
        if status == "blocked":
            raise BenchError(f"restore failed: {message}")
        if status == "active":
            detected_at = now()
        else:
            time.sleep(0.1)
    primary_at = primary_at or detected_at
    promoted_at = promoted_at or primary_at
    bench.wait_writable()
    writable_at = now()
    log_file = Path(unit.paths.pgbackrest_log) / f"{bench.stanza}-restore.log"
    marks = _pgbackrest_times(log_file, started_wall)
    if set(marks) != {"begin", "end"}:
        raise BenchError(f"pgBackRest's restore lines not found in {log_file}: {marks}")
    # pgBackRest's marks are wall-clock; move them onto the monotonic clock of the rest.
    offset = started - started_wall
    begin, end = marks["begin"] + offset, marks["end"] + offset
    return {
        "checks": begin - started,
        "pgbackrest restore": end - begin,
        "swap and start": action_done - end,
        "recovery and promotion": promoted_at - action_done,
        "takeover": primary_at - promoted_at,
        "completion": detected_at - primary_at,
        "until writable": writable_at - detected_at,
        "total": writable_at - started,
    }


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def measure(bench: Bench, size: int, repeat: int) -> dict[str, Any]:
    data = phases.generate_data(bench, size)
    log(f"database: {data['database_bytes'] / MB:.0f} MB")
    _, backup_id = phases.backup_pgbackups(bench, "full")
    label = phases.label_of(bench, backup_id)
    runs: list[dict[str, float]] = []
    direct: list[float] = []
    for rep in range(repeat):
        runs.append(restore_with_phases(bench, backup_id))
        log(f"restore {rep + 1}: {json.dumps({k: round(v, 2) for k, v in runs[-1].items()})}")
        direct.append(phases.restore_direct(bench, label))
        log(f"bare pgbackrest restore + postgres: {direct[-1]:.2f}s")
    medians = {key: round(_median([r[key] for r in runs]), 2) for key in runs[0]}
    baseline = _median(direct)
    return {
        "database_bytes": data["database_bytes"],
        "repeat": repeat,
        "phases_median_s": medians,
        "direct_median_s": round(baseline, 2),
        "ratio": round(medians["total"] / baseline, 2),
        "runs": runs,
        "direct": direct,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore_phases")
    parser.add_argument("--size", default="500MB", help="database size (default 500MB)")
    parser.add_argument("--repeat", type=int, default=3, help="restores (median)")
    parser.add_argument("--home", type=Path, help="PGBACKUPS_HOME (default: new under /tmp)")
    args = parser.parse_args(argv)
    bench = Bench(args.home)
    try:
        bench.up()
        result = measure(bench, parse_size(args.size), args.repeat)
    finally:
        bench.down()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
