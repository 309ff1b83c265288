"""``pgbackups metrics``: the cluster's backup metrics in Prometheus' text exposition.

A command, not a listening endpoint: every listening port must authenticate its clients
(docs/security.md), and a local cluster has no scraper to give credentials to. Feed it
to node_exporter's textfile collector, or scrape it through a wrapper of your own.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from pgbackups.local.cli.common import Subparsers, add_name, subcommand

if TYPE_CHECKING:
    from pgbackups.core.metrics import ArchiverStats
    from pgbackups.local.runtime.cluster import Cluster


def cmd_metrics(args: argparse.Namespace) -> int:
    from pgbackups.adapters.prometheus import exposition
    from pgbackups.core.handlers.metrics import collect_metrics
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import LocalHost, peer_store

    cluster = Cluster.load(args.name)
    names = [u.name for u in cluster.units()]
    unit = cluster.unit(cluster.leader if cluster.leader in names else names[0])
    host = LocalHost(cluster, unit, peer_store(cluster))
    archiver = archiver_stats(cluster)
    # pgBackRest and the S3 client reach the repository from the unit's own machine,
    # as its hooks do (on machines the workstation's network is not the unit's).
    with cluster.facts.inside(unit.machine):
        families = collect_metrics(host, archiver)
    print(exposition(families), end="")
    return 0


def archiver_stats(cluster: Cluster) -> ArchiverStats | None:
    """``pg_stat_archiver`` on the primary; None when no primary answers."""
    import psycopg

    from pgbackups.core.metrics import ArchiverStats

    primary = cluster.primary()
    if primary is None:
        return None
    try:
        row = primary.query(
            "select archived_count, failed_count, last_archived_time, last_failed_time,"
            " stats_reset from pg_stat_archiver"
        )[0]
    except psycopg.Error:  # the archiver's part is left out, the rest is still shown
        return None
    times: list[datetime | None] = [t if isinstance(t, datetime) else None for t in row[2:5]]
    return ArchiverStats(int(row[0]), int(row[1]), times[0], times[1], times[2])


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "metrics",
        "print the backup metrics (Prometheus text exposition)",
        "The backup metrics of a cluster: last successful and failed backup per type,\n"
        "duration and size, WAL archiving (pg_stat_archiver on the primary: failures,\n"
        "lag), the recoverable window's ends, archive gaps and verification results.",
        """
        pgbackups metrics
        pgbackups metrics --name main > /var/lib/node_exporter/pgbackups.prom
        """,
    )
    add_name(p)
    p.set_defaults(func=cmd_metrics)
