"""``pgbackups leader [UNIT]``: show or move the runtime's leadership.

Leadership is the operator's (Juju's leader), not PostgreSQL's: the leader need not be
the primary. Moving it fires ``leader-elected`` on the new leader, which re-runs S3
initialisation there, as a new Juju leader does.
"""

from __future__ import annotations

import argparse

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.progress import Progress


def cmd_leader(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(args.name)
    if args.unit is None:
        print(cluster.leader)
        return 0
    unit = cluster.unit(args.unit).name
    progress = Progress()
    with cluster.operation("leader"):
        if cluster.leader == unit:
            progress.say(f"{unit} is already the leader")
        else:
            cluster.set_leader(unit)
            progress.say(f"{unit} is the leader now: leader-elected")
            Runtime(cluster).fire(unit, "leader-elected")
    print_unit_statuses(cluster)
    return 0


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "leader",
        "show or move the operator leadership",
        "Without UNIT, print the leader unit. With UNIT, make it the leader and fire\n"
        "leader-elected on it. The leader runs S3 initialisation and restores; it need\n"
        "not be the PostgreSQL primary.",
        """
        pgbackups leader
        pgbackups leader main/1
        """,
    )
    add_name(p)
    p.add_argument("unit", nargs="?", help="NAME/N or N")
    p.set_defaults(func=cmd_leader)
