"""Reading the database user's log files (``pgbackups logs`` and start-failure messages).

The logs are written by the database user into its own folders, so a log's name may be a
link that user planted (to ``/etc/shadow``, say), a FIFO, or a hard link to a root file.
Root reads a log only as what it is: opened below the unit's (root's) folder with no link
followed at any name, without blocking, and only if it is a regular file of the database
user's (a file of root's there was not written by a daemon of ours).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pgbackups.adapters import files

TAIL_BYTES = 256 * 1024  # a log can be large: only its end is read


def open_log(path: Path, base: Path, owner_uid: int | None = None) -> int | None:
    """A read descriptor of the regular file ``path`` below ``base`` (a folder of ours),
    None when it is missing, a link, not a regular file, or not ``owner_uid``'s."""
    try:
        names = path.relative_to(base).parts
    except ValueError:
        return None
    try:
        fd = files.open_beneath(base, names, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (owner_uid is not None and st.st_uid != owner_uid):
        os.close(fd)
        return None
    return fd


def read_from(
    path: Path, base: Path, offset: int, owner_uid: int | None = None
) -> tuple[bytes, int] | None:
    """What ``path`` holds from ``offset`` on (at most :data:`TAIL_BYTES` from its end),
    and its size; None when it cannot be read as :func:`open_log` says."""
    fd = open_log(path, base, owner_uid)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        handle.seek(max(offset, size - TAIL_BYTES, 0) if offset <= size else 0)
        return handle.read(), size


def tail(path: Path, lines: int, base: Path, owner_uid: int | None = None) -> list[str] | None:
    """The last ``lines`` lines of ``path``; None when it cannot be read (e.g. missing)."""
    got = read_from(path, base, 0, owner_uid)
    if got is None:
        return None
    return got[0].decode(errors="replace").splitlines()[-lines:]


def list_logs(directory: Path, base: Path) -> list[Path]:
    """The ``*.log`` names in ``directory`` (below ``base``), listed through a descriptor
    opened with no link followed; empty when it cannot be."""
    try:
        names = directory.relative_to(base).parts
        fd = files.open_beneath(base, names, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, ValueError):
        return []
    try:
        return sorted(directory / n for n in os.listdir(fd) if n.endswith(".log"))
    finally:
        os.close(fd)
