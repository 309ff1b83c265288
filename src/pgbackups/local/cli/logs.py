"""``pgbackups logs [UNIT] [--follow]``: a unit's Patroni, PostgreSQL and pgBackRest logs.

PostgreSQL logs to its standard error, which Patroni's log file receives: one file holds
both. pgBackRest writes one file per command (backup, restore, archive-push, the TLS
server...) under the unit's ``pgbackrest/log``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import UsageError
from pgbackups.local.machinery.logfiles import tail

if TYPE_CHECKING:
    from pgbackups.local.runtime.unit import Unit

SOURCES = ("patroni", "pgbackrest", "all")


@dataclass(frozen=True)
class LogFile:
    label: str
    path: Path


def log_files(units: Iterable[Unit], source: str) -> list[LogFile]:
    files: list[LogFile] = []
    for unit in units:
        if source in ("patroni", "all"):
            files.append(LogFile(f"{unit.name} patroni+postgresql", unit.log_file))
        if source in ("pgbackrest", "all"):
            for path in sorted(unit.paths.pgbackrest_log.glob("*.log")):
                files.append(LogFile(f"{unit.name} pgbackrest {path.stem}", path))
    return files


def follow(files: list[LogFile], poll: float = 0.5) -> None:
    """Print what is appended to any of ``files``, each line prefixed by its source."""
    offsets = {f.path: f.path.stat().st_size if f.path.exists() else 0 for f in files}
    while True:
        for f in files:
            try:
                size = f.path.stat().st_size
            except OSError:
                continue
            if size < offsets[f.path]:
                offsets[f.path] = 0  # truncated or rotated
            if size > offsets[f.path]:
                with open(f.path, "rb") as handle:
                    handle.seek(offsets[f.path])
                    chunk = handle.read(size - offsets[f.path]).decode(errors="replace")
                offsets[f.path] = size
                for line in chunk.splitlines():
                    print(f"[{f.label}] {line}", flush=True)
        time.sleep(poll)


def cmd_logs(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster

    cluster = Cluster.load(args.name)
    units = [cluster.unit(args.unit)] if args.unit else cluster.units()
    if args.lines < 1:
        raise UsageError("--lines must be 1 or more")
    files = log_files(units, args.source)
    for f in files:
        lines = tail(f.path, args.lines)
        print(f"==> {f.label}: {f.path} <==")
        print("\n".join(lines) if lines else "(empty)")  # unreadable shows as empty too
        print()
    sys.stdout.flush()
    if args.follow:
        try:
            follow(files)
        except KeyboardInterrupt:
            return 0
    return 0


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "logs",
        "show a unit's Patroni, PostgreSQL and pgBackRest logs",
        "Print the last lines of the logs of UNIT (every unit without UNIT): Patroni's\n"
        "log, which also holds PostgreSQL's, and each pgBackRest command's log.\n"
        "--follow keeps printing what is appended, each line prefixed by its source.",
        """
        pgbackups logs main/0
        pgbackups logs main/1 --source pgbackrest --lines 100
        pgbackups logs --follow
        """,
    )
    add_name(p)
    p.add_argument("unit", nargs="?", help="NAME/N or N (default: every unit)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument("--lines", "-n", type=int, default=40, help="lines per file (default 40)")
    p.add_argument("--source", choices=SOURCES, default="all", help="which logs (default all)")
    p.set_defaults(func=cmd_logs)
