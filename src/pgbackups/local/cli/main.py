"""The ``pgbackups`` command line.

Subcommands live in their own modules; each exposes ``register(subparsers)``. Add a
module to :data:`COMMAND_MODULES` to add its subcommands (a module that does not exist
yet is skipped, so that parts can land independently).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pgbackups import __version__
from pgbackups.local.errors import PgbackupsError

log = logging.getLogger("pgbackups")

COMMAND_MODULES = (
    "pgbackups.local.cli.cluster",  # up status down add-unit remove-unit switchover psql
    "pgbackups.local.cli.s3",
    "pgbackups.local.cli.run",
    "pgbackups.local.cli.leader",
    "pgbackups.local.cli.logs",
    "pgbackups.local.cli.tls",
    "pgbackups.local.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgbackups",
        description="Backups of clustered PostgreSQL with pgBackRest into S3, and a local "
        "PostgreSQL HA cluster (Patroni, etcd, S3 over TLS) to run them on.",
        epilog="example (a first session):\n"
        "  pgbackups up --units 2 --tls\n"
        "  pgbackups s3 set\n"
        "  pgbackups run main/1 create-backup type=full\n"
        "  pgbackups run main/0 list-backups\n"
        "  pgbackups status\n"
        "  pgbackups down\n"
        "or the whole story at once: pgbackups demo\n"
        "every command has --help with examples",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"pgbackups {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc = args.func(args)
    except PgbackupsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pgbackups logs | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
