"""``pgbackups demo``: the scripted backup and restore scenario (see local/demo.py)."""

from __future__ import annotations

import argparse

from pgbackups.local.cli.common import Subparsers, subcommand
from pgbackups.local.machinery.paths import validate_name


def cmd_demo(args: argparse.Namespace) -> int:
    from pgbackups.local.demo import Demo

    validate_name(args.name)  # bad input is a usage error before anything runs
    return Demo(name=args.name, keep=args.keep).run()


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "demo",
        "run the backup and restore demo on a fresh cluster",
        "On a fresh 2-unit TLS cluster of its own: set S3, write rows, take a full\n"
        "backup on the replica, write more, take a differential backup, list them,\n"
        "remove a unit, restore the full backup, check that exactly its rows are\n"
        "there, add a unit back and check it streams, then take the cluster down.\n"
        "Every step shows the command it runs. Exit code 0 means PASS.",
        """
        pgbackups demo
        pgbackups demo --name try --keep     # leave the cluster running afterwards
        """,
    )
    p.add_argument("--name", default="demo", help="cluster name for the demo (default demo)")
    p.add_argument("--keep", action="store_true", help="leave the cluster running")
    p.set_defaults(func=cmd_demo)
