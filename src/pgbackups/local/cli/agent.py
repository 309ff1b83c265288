"""``pgbackups agent``: the cluster's agent, which ``pgbackups up`` starts (and ``down``
stops) by itself; it is a command only so that it runs as its own supervised process."""

from __future__ import annotations

import argparse
import logging

from pgbackups.local.cli.common import Subparsers, add_name, subcommand


def cmd_agent(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime.agent import Agent
    from pgbackups.local.runtime.cluster import Cluster

    # Its log (agent.log in the cluster's folder) is what a person reads: every pass
    # that did something, every scheduled backup and how it ended.
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    Agent(Cluster.load(args.name), args.interval).run()
    return 0


def _interval(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError("the interval is 1 to 3600 seconds")
    return value


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "agent",
        "the cluster's agent (started by up, stopped by down)",
        "Runs update-status on every unit every INTERVAL seconds, as Juju does, which\n"
        "also starts the backups the schedules say are due. `pgbackups up` starts it as\n"
        "a daemon recorded in the cluster state; you do not run it yourself. Its log is\n"
        "agent.log in the cluster's folder.",
        """
        pgbackups agent --name main --interval 15
        """,
    )
    add_name(p)
    p.add_argument("--interval", type=_interval, default=15.0, help="seconds between passes")
    p.set_defaults(func=cmd_agent)
