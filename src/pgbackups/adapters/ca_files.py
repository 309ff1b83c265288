"""The file botocore verifies an S3 endpoint against (``verify=<path>``).

botocore reads that file on every new connection, so it has to outlive the client's
construction. It used to be a temporary file per client in ``/tmp``, removed when the
client went; every process killed before it could remove its copy left one behind (the
test suite's SIGKILLed hooks left about 80 a day).

A host now names a folder of its own for it (the local runtime its cluster's root-owned
folder, which ``down --purge`` removes; the charm ``/var/lib/pgbackups``). The chain is
public data that seldom changes, so that folder holds one file per distinct chain, named
by its SHA-256: a second client of the same chain writes nothing, and the file is not
removed with a client (another process may be verifying against it).

The folder is used only when it is a real directory (not a link), owned by this user and
writable by no one else. Without one (a client built by a test or a tool), or when the
folder is not fit, the chain goes to a private temporary file that its client removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaFile:
    path: str
    private: bool  # a temporary file of one client's: it removes it (remove_quietly)


def write_ca_file(text: str, folder: Path | None) -> CaFile:
    """A file holding ``text``: this chain's file in ``folder``, or a private copy."""
    if folder is None or not _fit(folder):
        return CaFile(_private_copy(text), private=True)
    path = folder / f"s3-ca-{hashlib.sha256(text.encode()).hexdigest()[:32]}.pem"
    if not _holds(path, text):
        # Written whole under another name, then renamed over whatever is at the name (a
        # link included): a reader sees the old file or the new one, never half of one.
        fd, partial = tempfile.mkstemp(prefix=".s3-ca-", suffix=".partial", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(partial, path)
        except BaseException:
            remove_quietly(partial)
            raise
    return CaFile(str(path), private=False)


def _fit(folder: Path) -> bool:
    try:
        found = os.lstat(folder)
    except OSError as exc:
        log.debug("CA file not in %s: %s", folder, exc)
        return False
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.geteuid()
        or found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        log.warning(
            "%s is not a folder of this user's alone: the CA chain goes to a private "
            "temporary file",
            folder,
        )
        return False
    return True


def _holds(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        return handle.read() == text


def _private_copy(text: str) -> str:
    fd, name = tempfile.mkstemp(prefix="pgbackups-s3-ca-", suffix=".pem")
    # mkstemp: O_EXCL, a random name, mode 0600: a link planted in /tmp is never opened.
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return name


def remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
