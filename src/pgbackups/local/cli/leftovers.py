"""``pgbackups leftovers``: list, and remove on request, the copies of data moved aside
beside the units' data directories.

A restore moves the data directory aside (``data.before-restore-<stamp>``), a rollback
moves a failed restore's data aside (``data.failed-restore-<stamp>``), Patroni renames a
bootstrap it gave up to ``data.failed``. Nothing deletes them by itself: each may be
the only copy of something. They are listed by ``status`` too; this command removes the
ones the user names, never the copy a restore that has not succeeded still needs.
"""

from __future__ import annotations

import argparse
import json
import sys

from pgbackups.local.cli.common import Subparsers, add_name, subcommand
from pgbackups.local.errors import PgbackupsError, UsageError


def cmd_list(args: argparse.Namespace) -> int:
    from pgbackups.local.runtime import status as status_mod
    from pgbackups.local.runtime.cluster import Cluster, network_leftovers

    cluster = Cluster.load(args.name)
    needed = status_mod.needed_copy(cluster)
    views = {u.name: status_mod.leftover_views(u, needed) for u in cluster.units()}
    # Network namespaces killed runs left (any cluster's): nothing of value is in them,
    # and the next `up` or `down` removes them; listed so that nothing goes unseen.
    networks = network_leftovers()
    if args.json:
        doc: dict[str, object] = {
            name: [vars(item) for item in items] for name, items in views.items()
        }
        if networks:
            doc["network-namespaces"] = networks
        print(json.dumps(doc, indent=2))
        return 0
    if networks:
        print("network namespaces a killed run left (the next up or down removes them): "
              + ", ".join(networks))  # fmt: skip
    if not any(views.values()):
        print(f"no leftovers in cluster {cluster.name}")
        return 0
    view = status_mod.collect(cluster)
    print(status_mod.render_leftovers(view).strip())
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from pgbackups.core.host import WorkloadError
    from pgbackups.local.runtime import status as status_mod
    from pgbackups.local.runtime.cluster import Cluster
    from pgbackups.workload import moveaside

    cluster = Cluster.load(args.name)
    unit = cluster.unit(args.unit)
    if len(set(args.leftovers)) != len(args.leftovers):
        raise UsageError("a leftover is named twice")
    with cluster.operation("leftovers remove"):
        needed = status_mod.needed_copy(cluster)
        present = {item.name for item in moveaside.leftovers(unit.data_dir)}
        try:
            # Every name is checked before anything is removed: a bad one changes nothing.
            for name in args.leftovers:
                if name not in present:
                    known = ", ".join(sorted(present)) or "none"
                    raise UsageError(f"{unit.name} has no leftover {name!r} (it has: {known})")
                moveaside.check_leftover(unit.data_dir, name, needed=needed)
            for name in args.leftovers:
                path = moveaside.remove_leftover(unit.data_dir, name, needed=needed)
                print(f"removed {path}", file=sys.stderr)
        except WorkloadError as exc:
            raise PgbackupsError(str(exc)) from exc
    return 0


def register(sub: Subparsers) -> None:
    p = subcommand(
        sub,
        "leftovers",
        "list or remove copies of data moved aside (restores, rollbacks, Patroni)",
        "Directories beside a unit's data directory that hold a copy of data:\n"
        "  data.before-restore-<time>  the data a restore replaced (kept until the\n"
        "                              restore succeeded; rollback-restore puts it back)\n"
        "  data.failed-restore-<time>  what a failed restore left, moved aside by a rollback\n"
        "  data.failed                 a bootstrap Patroni gave up (a failed restore)\n"
        "  data.removing-<time>        the data a restore that succeeded replaced, being\n"
        "                              deleted (left part-deleted if that was stopped)\n"
        "Nothing else removes them by itself. Without a verb: list them with size and age\n"
        "(status lists them too). `remove UNIT LEFTOVER...` deletes the ones named; the\n"
        "copy a restore that has not succeeded still needs is refused, and so is anything\n"
        "that is not one of these directories.",
        """
        pgbackups leftovers
        pgbackups leftovers --json
        pgbackups leftovers remove main/0 data.failed data.failed-restore-20261128T150000Z
        """,
    )
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    r = subcommand(
        verbs,
        "remove",
        "delete leftovers of a unit by name",
        "Delete the named leftover directories of UNIT (names as `leftovers` lists\n"
        "them). Every name is checked first: one that is not a leftover of UNIT, or\n"
        "that a failed restore still needs, fails the command and nothing is removed.",
        "pgbackups leftovers remove main/0 data.failed",
    )
    # SUPPRESS: a default here would override a --name given before the verb.
    r.add_argument("--name", default=argparse.SUPPRESS, help="cluster name (default: main)")
    r.add_argument("unit", help="NAME/N or N")
    r.add_argument("leftovers", nargs="+", metavar="LEFTOVER", help="a directory name")
    r.set_defaults(func=cmd_remove)
