"""``pgbackups logs [UNIT] [--follow]``: a unit's Patroni, PostgreSQL and pgBackRest logs.

PostgreSQL logs to its standard error, which Patroni's log file receives: one file holds
both. pgBackRest writes one file per command (backup, restore, archive-push, the TLS
server...) under the unit's ``pgbackrest/log``. Every one is the database user's file in
its folder, read as :mod:`pgbackups.local.machinery.logfiles` says (no link followed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import UsageError
from pgbackups.local.machinery.logfiles import list_logs, read_from, tail

if TYPE_CHECKING:
    from pgbackups.local.runtime.unit import Unit

SOURCES = ("patroni", "pgbackrest", "all")


@dataclass(frozen=True)
class LogFile:
    label: str
    path: Path
    base: Path  # the unit's folder (root's): nothing below it is followed if a link
    owner_uid: int | None  # as root: the database user, who writes every log


def log_files(units: Iterable[Unit], source: str) -> list[LogFile]:
    files: list[LogFile] = []
    for unit in units:
        base = unit.paths.root
        owner = unit.cluster.db_user.uid if os.geteuid() == 0 else None
        if source in ("patroni", "all"):
            files.append(LogFile(f"{unit.name} patroni+postgresql", unit.log_file, base, owner))
        if source in ("pgbackrest", "all"):
            for path in list_logs(unit.paths.pgbackrest_log, base):
                files.append(LogFile(f"{unit.name} pgbackrest {path.stem}", path, base, owner))
    return files


def follow(files: list[LogFile], poll: float = 0.5) -> None:
    """Print what is appended to any of ``files``, each line prefixed by its source."""
    offsets: dict[Path, int] = {}
    for f in files:
        got = read_from(f.path, f.base, 0, f.owner_uid)
        offsets[f.path] = got[1] if got else 0
    while True:
        for f in files:
            got = read_from(f.path, f.base, offsets[f.path], f.owner_uid)
            if got is None:
                continue
            chunk, size = got
            offsets[f.path] = size
            for line in chunk.decode(errors="replace").splitlines():
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
        lines = tail(f.path, args.lines, f.base, f.owner_uid)
        print(f"==> {f.label}: {f.path} <==")
        # Unreadable (missing, a link, not the database user's file) shows as empty too.
        print("\n".join(lines) if lines else "(empty)")
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
