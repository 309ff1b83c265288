"""``pgbackups retention set|show|unset`` and ``pgbackups schedule set|show|unset``: the
local twins of the charm's backup config options (``core/policy.py`` checks both).

The options are validated as a whole before they are stored (a refused value changes
nothing), then ``config-changed`` runs on every unit: the retention goes into each
unit's ``pgbackrest.conf``. Schedules are read by update-status, which the cluster's
agent delivers every few seconds (``pgbackups up`` starts it).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import UsageError
from pgbackups.local.progress import Progress

RETENTION_KEYS = ("retention-full", "retention-full-type", "retention-diff")
SCHEDULE_KEYS = ("full-schedule", "differential-schedule", "incremental-schedule")


def _store(name: str, what: str, change: Mapping[str, str | None]) -> int:
    """Apply ``change`` (None removes a key) to the stored options, check the result,
    store it and fire config-changed on every unit."""
    from pgbackups.core.policy import PolicyProblem, parse_policy
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import Runtime, read_options, write_options
    from pgbackups.local.runtime.status import print_unit_statuses

    cluster = Cluster.load(name)
    progress = Progress()
    with cluster.operation(what):
        options = read_options(cluster)
        for key, value in change.items():
            if value is None:
                options.pop(key, None)
            else:
                options[key] = value
        checked = parse_policy(options)
        if isinstance(checked, PolicyProblem):
            raise UsageError(checked.message() + " (nothing was changed)")
        write_options(cluster, options)
        progress.say(f"{what}: stored")
        outcomes = Runtime(cluster).fire_all("config-changed")
        for unit, outcome in outcomes.items():
            progress.say(f"{unit}: config-changed -> {type(outcome).__name__.lower()}")
    print_unit_statuses(cluster)
    return 0


def _show(name: str, keys: tuple[str, ...]) -> int:
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.local.runtime.host import read_options

    options = read_options(Cluster.load(name))
    for key in keys:
        print(f"{key}: {options.get(key, '-')}")
    return 0


# --- retention --------------------------------------------------------------------------


def cmd_retention_set(args: argparse.Namespace) -> int:
    if (args.full is None) == (args.full_days is None):
        raise UsageError("give exactly one of --full N (backups) or --full-days N (days)")
    count = args.full is not None
    change: dict[str, str | None] = {
        "retention-full": str(args.full if count else args.full_days),
        "retention-full-type": "count" if count else "time",
        "retention-diff": str(args.diff) if args.diff is not None else None,
    }
    return _store(args.name, "retention set", change)


def cmd_retention_show(args: argparse.Namespace) -> int:
    return _show(args.name, RETENTION_KEYS)


def cmd_retention_unset(args: argparse.Namespace) -> int:
    return _store(args.name, "retention unset", dict.fromkeys(RETENTION_KEYS))


# --- schedules --------------------------------------------------------------------------


def cmd_schedule_set(args: argparse.Namespace) -> int:
    change: dict[str, str | None] = {}
    for attr, key in (("full", "full-schedule"), ("differential", "differential-schedule"),
                      ("incremental", "incremental-schedule")):  # fmt: skip
        value = getattr(args, attr)
        if value is not None:
            if not value.strip():
                raise UsageError(f"--{attr} is empty: use `schedule unset --{attr}`")
            change[key] = value
    if not change:
        raise UsageError("give --full, --differential and/or --incremental 'CRON'")
    return _store(args.name, "schedule set", change)


def cmd_schedule_show(args: argparse.Namespace) -> int:
    return _show(args.name, SCHEDULE_KEYS)


def cmd_schedule_unset(args: argparse.Namespace) -> int:
    flags = (args.full, args.differential, args.incremental)
    picked = [key for key, flag in zip(SCHEDULE_KEYS, flags, strict=True) if flag]
    return _store(args.name, "schedule unset", dict.fromkeys(picked or SCHEDULE_KEYS))


def register(sub: Subparsers) -> None:
    retention = subcommand(
        sub,
        "retention",
        "keep N full backups (or N days), expire the rest",
        "The retention pgBackRest applies after every backup and on the expire action\n"
        "(repo1-retention-full, -full-type, -diff). Without it, the S3 settings'\n"
        "delete-older-than-days applies (by default: keep everything). Expired backups\n"
        "take their WAL with them.",
        """
        pgbackups retention set --full 4              # keep the 4 newest full backups
        pgbackups retention set --full-days 30 --diff 7
        pgbackups retention show
        pgbackups run main/0 expire                   # apply it now, see what went
        pgbackups retention unset
        """,
    )
    rsub = retention.add_subparsers(dest="retention_command", metavar="COMMAND", required=True)
    p = subcommand(
        rsub,
        "set",
        "set the retention",
        "Keep N full backups, or full backups of the last N days; optionally N\n"
        "differential backups. Checked before it is stored; then config-changed on every unit.",
        "pgbackups retention set --full 4\npgbackups retention set --full-days 30 --diff 7",
    )
    add_name(p)
    p.add_argument("--full", type=int, metavar="N", help="full backups to keep (count)")
    p.add_argument("--full-days", type=int, metavar="N", help="days to keep full backups (time)")
    p.add_argument("--diff", type=int, metavar="N", help="differential backups to keep")
    p.set_defaults(func=cmd_retention_set)
    p = subcommand(
        rsub,
        "show",
        "show the retention options",
        "The stored retention options (- when unset).",
        "pgbackups retention show",
    )
    add_name(p)
    p.set_defaults(func=cmd_retention_show)
    p = subcommand(
        rsub,
        "unset",
        "back to the S3 settings' delete-older-than-days",
        "Remove the retention options: the S3 settings' delete-older-than-days applies.",
        "pgbackups retention unset",
    )
    add_name(p)
    p.set_defaults(func=cmd_retention_unset)

    schedule = subcommand(
        sub,
        "schedule",
        "take backups on a cron schedule (UTC)",
        "Full, differential and incremental schedules in cron syntax, UTC: minute hour\n"
        "day-of-month month day-of-week, with numbers, ranges a-b, steps /n, lists and *.\n"
        "The cluster's agent (started by `up`) runs update-status every few seconds; it\n"
        "starts a due backup on the unit create-backup would use. A run missed while the\n"
        "cluster was down runs once when it is up again. list-backups marks them\n"
        "'scheduled'.",
        """
        pgbackups schedule set --full '0 2 * * 0' --differential '0 2 * * 1-6'
        pgbackups schedule set --incremental '*/30 * * * *'
        pgbackups schedule show
        pgbackups schedule unset --incremental
        """,
    )
    ssub = schedule.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)
    p = subcommand(
        ssub,
        "set",
        "set one or more schedules",
        "Set the schedules given (cron, UTC); the others are kept.",
        "pgbackups schedule set --full '0 2 * * 0' --incremental '0 */4 * * *'",
    )
    add_name(p)
    for kind in ("full", "differential", "incremental"):
        p.add_argument(f"--{kind}", metavar="CRON", help=f"when to take a {kind} backup")
    p.set_defaults(func=cmd_schedule_set)
    p = subcommand(
        ssub,
        "show",
        "show the schedules",
        "The stored schedules (- when unset).",
        "pgbackups schedule show",
    )
    add_name(p)
    p.set_defaults(func=cmd_schedule_show)
    p = subcommand(
        ssub,
        "unset",
        "remove schedules (all, without an option)",
        "Remove the schedules named, or all of them.",
        "pgbackups schedule unset --incremental\npgbackups schedule unset",
    )
    add_name(p)
    for kind in ("full", "differential", "incremental"):
        p.add_argument(f"--{kind}", action="store_true", help=f"the {kind} schedule")
    p.set_defaults(func=cmd_schedule_unset)
