"""``pgbackups tls enable|disable``: what a TLS certificates operator does to a cluster.

``enable`` issues a certificate per unit from the cluster CA; ``disable`` takes them
away. Either way ``certificates-changed`` fires on every unit: PostgreSQL's ssl follows
(reload, no restart) and the pgBackRest TLS servers are reconciled (docs/behaviour/tls-server.md).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.progress import Progress

if TYPE_CHECKING:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.unit import Unit

SSL_TIMEOUT_SECONDS = 30.0


def wait_for_ssl(cluster: Cluster, setting: str, progress: Progress) -> None:
    """Patroni applies a reload on its next loop: return once PostgreSQL serves it."""
    for unit in cluster.units():
        if unit.is_running():
            progress.wait(
                f"{unit.name}: ssl {setting}",
                lambda unit=unit: _ssl(unit) == setting,  # type: ignore[misc]
                timeout=SSL_TIMEOUT_SECONDS,
            )


def _ssl(unit: Unit) -> str | None:
    import psycopg

    try:
        return str(unit.query("show ssl")[0][0])
    except psycopg.Error:
        return None


def cmd_enable(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("tls enable"):
        for unit in cluster.units():
            cluster.issue_unit_tls(unit)
            progress.say(f"{unit.name}: certificate issued by the cluster CA")
        cluster.set_tls_flag(True)
        progress.say("certificates-changed on every unit")
        Runtime(cluster).certificates_changed()
        wait_for_ssl(cluster, "on", progress)
    print_unit_statuses(cluster)
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(args.name)
    progress = Progress()
    with cluster.operation("tls disable"):
        cluster.set_tls_flag(False)
        progress.say("certificates-changed on every unit")
        Runtime(cluster).certificates_changed()
        wait_for_ssl(cluster, "off", progress)
        for unit in cluster.units():
            cluster.remove_unit_tls(unit)
            progress.say(f"{unit.name}: certificate removed")
    print_unit_statuses(cluster)
    return 0


def register(sub: Subparsers) -> None:
    tls = subcommand(
        sub,
        "tls",
        "turn unit certificates (TLS) on or off",
        "enable: issue a certificate per unit (PostgreSQL ssl, pgBackRest TLS servers).\n"
        "disable: take them away. Both fire certificates-changed on every unit.\n"
        "With TLS and more than one unit, backups run on a replica "
        "(docs/behaviour/create-backup.md).",
        """
        pgbackups tls enable
        pgbackups tls disable --name demo
        """,
    )
    verbs = tls.add_subparsers(dest="tls_command", metavar="VERB", required=True)
    p = subcommand(
        verbs, "enable", "issue unit certificates", "Turn TLS on.", "pgbackups tls enable"
    )
    add_name(p)
    p.set_defaults(func=cmd_enable)
    p = subcommand(
        verbs, "disable", "remove unit certificates", "Turn TLS off.", "pgbackups tls disable"
    )
    add_name(p)
    p.set_defaults(func=cmd_disable)
