"""What the command groups of the CLI share: how a subcommand is declared (a one-line
help, a description and an example for its ``--help``) and the ``--name`` option.

Each command group is a module with ``register(subparsers)``, listed in
:data:`pgbackups.local.cli.main.COMMAND_GROUPS`. A group imports the runtime (psycopg,
boto3, PyYAML) inside its command functions, so that ``pgbackups --help`` and a usage
error stay fast.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Protocol, TypeAlias

from pgbackups.local.machinery.paths import DEFAULT_NAME

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandGroup(Protocol):
    """A module of subcommands (``pgbackups.local.cli.s3``...)."""

    def register(self, sub: Subparsers) -> None: ...


def subcommand(
    sub: Subparsers, name: str, help_text: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with its example (indented, dedented)."""
    return sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog="example:\n" + textwrap.indent(textwrap.dedent(example).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default: main)")
