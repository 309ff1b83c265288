"""The ``pgbackups`` command line.

Subcommands live in command-group modules; each exposes ``register(subparsers)`` (see
:mod:`pgbackups.local.cli.common`). To add a group, import its module here and list it
in :data:`COMMAND_GROUPS`: a missing module fails at import, one without ``register``
fails mypy, and a test checks the whole set of subcommands.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from pgbackups import __version__
from pgbackups.local.cli import (
    agent,
    cluster,
    demo,
    leader,
    leftovers,
    logs,
    metrics,
    policy,
    run,
    s3,
    tls,
)
from pgbackups.local.cli.common import CommandGroup
from pgbackups.local.errors import PgbackupsError, os_error_line

log = logging.getLogger("pgbackups")

# In the order `pgbackups --help` lists them.
COMMAND_GROUPS: tuple[CommandGroup, ...] = (
    cluster,  # up status down add-unit remove-unit switchover psql
    s3,
    run,
    policy,  # retention schedule
    leader,
    logs,
    leftovers,
    metrics,
    tls,
    demo,
    agent,
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
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_command(args.func, args, verbose=args.verbose)


def run_command(
    func: Callable[[argparse.Namespace], int | None],
    args: argparse.Namespace,
    *,
    verbose: bool = False,
) -> int:
    """Run one subcommand and turn what escapes it into one line and an exit status."""
    try:
        rc = func(args)
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
    except OSError as exc:
        # The last line of defence: a full or read-only disk, a file gone under us. The
        # machine's fault, not a bug of ours: what and where in one line (-v: the
        # traceback too), never a traceback in the user's face.
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    return int(rc or 0)


def entry() -> NoReturn:
    """The ``pgbackups`` command (and ``python -m pgbackups``): :func:`main`, then an
    exit without the interpreter's teardown.

    That teardown frees every object of every loaded module one by one: 0.1-0.3 s of CPU
    at the end of each command once botocore is loaded (measured: ``status`` 0.13 s,
    ``restore --wait`` 0.27 s), for a process that ends anyway. What a normal exit still
    does that matters is done here first, in the same order: other threads joined,
    ``atexit`` functions run (logging's flush among them), the standard streams flushed.
    Tests call :func:`main` and return from it as before.
    """
    try:
        rc = main()
    except BrokenPipeError:  # `pgbackups --help | head`: argparse writes before run_command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(rc)


if __name__ == "__main__":
    entry()
