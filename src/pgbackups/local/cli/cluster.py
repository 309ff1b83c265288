"""CLI subcommands of the local cluster: up, status, down, add-unit, remove-unit,
switchover, psql. :func:`register` adds them to the top-level parser (see main.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import PgbackupsError
from pgbackups.local.progress import Progress

if TYPE_CHECKING:
    from pgbackups.local.runtime.cluster import Cluster


def _print_status(cluster: Cluster) -> None:
    from pgbackups.local.runtime import status as status_mod

    print(status_mod.render_table(status_mod.collect(cluster)))


def cmd_up(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime import cluster as cluster_mod
    from pgbackups.local.runtime.host import Runtime

    progress = Progress()
    cluster = cluster_mod.up(
        args.name,
        units=args.units,
        tls=True if args.tls else None,
        machines=args.machines,
        progress=progress,
        agent=not args.no_agent,
    )
    with cluster.operation("up"):
        runtime = Runtime(cluster)
        if cluster.tls_enabled:
            progress.say("certificates-changed on every unit (pgBackRest TLS servers)")
            runtime.certificates_changed()
        else:
            runtime.rerun_all_deferred()
    _print_status(cluster)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime import status as status_mod
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime

    cluster = Cluster.load(args.name)
    if cluster.any_running() and not args.no_update:
        # Like Juju's update-status: deferred events re-run, restores are detected
        # complete or failed, S3 blocks retried. Skipped while another command works,
        # the cluster's agent included (its pass is an update-status; it may be running
        # a scheduled backup for minutes).
        with (
            contextlib.suppress(PgbackupsError),
            cluster.operation("status", wait_for_agent=False),
        ):
            Runtime(cluster).update_status()
    view = status_mod.collect(cluster, window=True)
    if args.json:
        print(json.dumps(status_mod.to_json(view), indent=2))
    else:
        print(status_mod.render_table(view))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime import cluster as cluster_mod

    progress = Progress()
    cluster = cluster_mod.Cluster.load(args.name)
    if args.purge:
        print(f"purging cluster {args.name}: removing", file=sys.stderr)
        for line in cluster.purge_listing():
            print(line, file=sys.stderr)
    cluster_mod.down(args.name, purge=args.purge, progress=progress)
    progress.say(f"cluster {args.name} " + ("purged" if args.purge else "stopped"))
    return 0


def cmd_add_unit(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("add-unit"):
        runtime = Runtime(cluster)

        def joined(new: str) -> None:
            # Juju's peer-relation-joined on the other units, before the new one starts:
            # their configuration (pg_hba by unit address) must admit it.
            progress.say(f"peer-changed on the other units: {new} joins")
            others = [n for n in runtime.units_primary_first() if n != new]
            runtime.fire_all("peer-changed", others)

        unit = cluster.add_unit(progress, announce=joined)
        # Juju fires peer-relation events on every unit when one joins: the new unit
        # gets the cluster's configuration (archiving, pgBackRest) and TLS servers learn
        # about their new peer.
        progress.say("peer-changed on every unit")
        runtime.peers_changed()
    print(f"added {unit.name}")
    _print_status(cluster)
    return 0


def cmd_remove_unit(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("remove-unit"):
        name = cluster.unit(args.unit).name
        was_leader = cluster.leader == name
        cluster.remove_unit(args.unit, progress)
        runtime = Runtime(cluster)
        runtime.forget_unit(name)
        if was_leader:
            progress.say(f"leadership moves to {cluster.leader}: leader-elected")
            runtime.fire(cluster.leader, "leader-elected")
        progress.say("peer-changed on every unit")
        runtime.peers_changed()
    _print_status(cluster)
    return 0


def cmd_switchover(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("switchover"):
        cluster.switchover(args.unit, progress)
        Runtime(cluster).peers_changed()
    _print_status(cluster)
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster

    cluster = Cluster.load(args.name)
    unit = cluster.unit(args.unit)
    sys.stdout.flush()
    unit.exec_psql(args.psql_args)
    return 0  # not reached


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "up",
        "start a local cluster (create it when new)",
        "Start etcd, an S3 server (TLS) and N units of PostgreSQL 15 under Patroni.\n"
        "Returns when the primary accepts writes and every replica streams.\n"
        "A stopped cluster starts again with its data, ports and keys.",
        """
        pgbackups up                      # cluster 'main', one unit
        pgbackups up --name demo --units 3 --tls
        pgbackups up --units 3 --machines  # each unit, S3 and etcd a machine (root)
        """,
    )
    add_name(p)
    p.add_argument("--units", type=int, default=None, help="number of units (default 1)")
    p.add_argument("--tls", action="store_true", help="issue unit certificates; PostgreSQL TLS")
    p.add_argument(
        "--no-agent",
        action="store_true",
        help="do not start the agent (no update-status every 15 s, no scheduled backups)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--machines",
        action="store_const",
        const=True,
        default=None,
        help="a new cluster: every unit, the S3 server and etcd on a machine of its own "
        "(a network namespace with its own address; needs root)",
    )
    where.add_argument(
        "--loopback",
        dest="machines",
        action="store_const",
        const=False,
        help="a new cluster: everything on 127.0.0.1",
    )
    p.set_defaults(func=cmd_up)

    p = subcommand(
        sub,
        "status",
        "show the units of a cluster",
        "Runs update-status on every unit first (as Juju does periodically): deferred\n"
        "events re-run, a restore is detected complete or failed, S3 blocks are retried.\n"
        "Then one row per unit: leader flag, Patroni role and state, unit status and\n"
        "message, address and data directory; plus etcd, the S3 server and the backup\n"
        "settings (bucket, path, stanza, whether WAL archiving is on).",
        """
        pgbackups status
        pgbackups status --name demo --json
        """,
    )
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-update", action="store_true", help="do not run update-status on the units first"
    )
    p.set_defaults(func=cmd_status)

    p = subcommand(
        sub,
        "down",
        "stop a cluster (--purge: delete it)",
        "Stop every process the cluster started, by PID. Data (S3 too) stays;\n"
        "--purge deletes all of the cluster, S3 data included, after listing it.",
        """
        pgbackups down
        pgbackups down --name demo --purge
        """,
    )
    add_name(p)
    p.add_argument("--purge", action="store_true", help="delete all data of the cluster")
    p.set_defaults(func=cmd_down)

    p = subcommand(
        sub,
        "add-unit",
        "add a replica unit",
        "Add the next unit; it joins as a streaming replica.",
        "pgbackups add-unit --name main",
    )
    add_name(p)
    p.set_defaults(func=cmd_add_unit)

    p = subcommand(
        sub,
        "remove-unit",
        "stop and delete a unit",
        "Stop a unit and delete its files. A primary hands over to another unit first.",
        """
        pgbackups remove-unit main/1
        pgbackups remove-unit 1            # same
        """,
    )
    add_name(p)
    p.add_argument("unit", help="NAME/N or N")
    p.set_defaults(func=cmd_remove_unit)

    p = subcommand(
        sub,
        "switchover",
        "make a unit the primary",
        "Patroni switchover to UNIT; waits until the other units stream from it.",
        "pgbackups switchover main/1",
    )
    add_name(p)
    p.add_argument("unit", help="NAME/N or N")
    p.set_defaults(func=cmd_switchover)

    p = subcommand(
        sub,
        "psql",
        "psql on a unit, as the superuser",
        "Run psql on UNIT as the PostgreSQL superuser, over the unix socket.\n"
        "Arguments after UNIT go to psql.",
        """
        pgbackups psql main/0
        pgbackups psql 1 -c 'select pg_is_in_recovery()'
        """,
    )
    add_name(p)
    p.add_argument("unit", help="NAME/N or N")
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="arguments for psql")
    p.set_defaults(func=cmd_psql)
