"""Configuration files written for the database user, safely when we are root.

The directories these files live in may belong to the database user (a unit's own
folder locally, ``/etc/pgbackups`` in the charm), so root must never follow a link that
user could have placed there: the temporary file is created new (``O_EXCL``, a random
name), gets its mode and owner through its descriptor before a byte is written, and is
renamed over the target (a rename replaces a link, never writes through it). Reading the
old text for a comparison does not follow a link either.

A write that fails (a full disk: ENOSPC, EDQUOT; a read-only one: EROFS) leaves the
previous file as it was and no temporary behind, and raises an :class:`OSError` whose
``filename`` is the target: a write error from the kernel names no file, and "No space
left on device" alone does not tell the user which disk to look at.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pgbackups.adapters.processes import OsUser


def write_atomically(
    text: str, path: str | os.PathLike[str], owner: OsUser | None, mode: int
) -> None:
    """Replace ``path`` with ``text`` (``mode``, owned by ``owner`` when we are root)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target) from exc
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner.uid, owner.gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, target) from exc
        raise
    _sync_directory(target.parent)


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error, naming the file that could not be written."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable: after a power loss the directory names the new
    file, not the old one (or none). Best effort: the file is already in place."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str]) -> str | None:
    """The file's text, None when it is missing, a link or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle, contextlib.suppress(UnicodeDecodeError):
        return handle.read()
    return None


def write_if_changed(
    text: str, path: str | os.PathLike[str], owner: OsUser | None, mode: int
) -> bool:
    """:func:`write_atomically` unless the file already holds ``text``; True if written."""
    if read_text(path) == text:
        return False
    write_atomically(text, path, owner, mode)
    return True
