"""Errors of the local runtime: one line for the user, exit 1 (usage errors: exit 2)."""

from __future__ import annotations


class PgbackupsError(Exception):
    """A failure the CLI reports as ``error: <message>`` and exit status 1."""

    exit_code = 1


class UsageError(PgbackupsError):
    """Bad arguments (a bad name, ``--units 0``): exit status 2."""

    exit_code = 2


class ClusterNotFound(PgbackupsError):
    pass


class UnitNotFound(PgbackupsError):
    pass


class ProgramMissing(PgbackupsError):
    pass


class StartError(PgbackupsError):
    """A server did not come up; the message says where its log is."""
