"""Errors of the local runtime: one line for the user, exit 1 (usage errors: exit 2)."""

from __future__ import annotations

import errno


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


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the file it names and the cause, without the errno noise
    (``/var/lib/pgbackups/clusters/main/state.json: No space left on device``)."""
    cause = exc.strerror or str(exc)
    return f"{exc.filename}: {cause}" if exc.filename else cause


class WriteFailed(PgbackupsError):
    """A file of the runtime could not be written (a full or read-only disk); the file
    still holds what it held before."""

    def __init__(self, what: str, exc: OSError) -> None:
        hint = " (free some space, then run the command again)" if is_disk_full(exc) else ""
        super().__init__(
            f"could not write {what} {exc.filename}: {exc.strerror or exc}; it still holds "
            f"what it held before{hint}"
        )


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
