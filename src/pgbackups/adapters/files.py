"""Files and directories root makes for the database user, without following its links.

The rule (docs/security.md, "Files and privileges"): root never writes, chmods or chowns
through a path the database user controls. Configuration, secrets and certificates live
in root-owned directories the database user may only read (through its group); where
root must still make something inside a directory that user owns, the last name is
opened with ``O_NOFOLLOW`` (a link is refused, never followed), a new file is created
``O_EXCL`` under a random name and renamed over the target (a rename replaces a link,
never writes through it), and mode and owner are set through the descriptor, never by
path. Nothing deeper than one level inside a database user's directory is touched by
root: the database user makes that itself.

A write that fails (a full disk: ENOSPC, EDQUOT; a read-only one: EROFS) leaves the
previous file as it was and no temporary behind, and raises an :class:`OSError` whose
``filename`` is the target: a write error from the kernel names no file, and "No space
left on device" alone does not tell the user which disk to look at.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import WorkloadError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(WorkloadError):
    """A path root was about to use is a link, or belongs to someone it should not."""


def config_owner(db_user: OsUser) -> OsUser:
    """Who owns a file the database user must read but never change: root, with the
    database user's group, when we are root; the database user (ourselves) otherwise."""
    if os.geteuid() != 0 or db_user.uid == 0:
        return db_user
    return OsUser("root", 0, db_user.gid, "/root")


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    """A descriptor of the directory ``path``; its last name must not be a link."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{path} is not a directory (a link?): refusing to use it") from exc
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_dir(
    path: str | os.PathLike[str],
    mode: int,
    owner: OsUser | None = None,
    *,
    taken_from: OsUser | None = None,
) -> Path:
    """Make the directory ``path`` (one level: its parent must exist) if it is missing,
    then set ``mode`` and ``owner`` through a descriptor opened without following a link.

    An existing ``path`` that is a link, not a directory, or owned by anyone but us,
    ``owner`` or ``taken_from`` (its owner in an older layout, for a folder whose own
    name is in one of root's folders) is refused (:class:`UnsafePath`).
    """
    target = Path(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(target, 0o700)  # opened up below, once it is known to be ours
    with _open_dir(target) as fd:
        st = os.fstat(fd)
        allowed = {os.geteuid()} | {u.uid for u in (owner, taken_from) if u is not None}
        if st.st_uid not in allowed:
            raise UnsafePath(
                f"{target} belongs to uid {st.st_uid}, not to uid "
                f"{' or '.join(str(u) for u in sorted(allowed))}: refusing to use it"
            )
        if os.geteuid() == 0:
            uid, gid = (owner.uid, owner.gid) if owner is not None else (0, os.getegid())
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    return target


def write_atomically(
    text: str, path: str | os.PathLike[str], owner: OsUser | None, mode: int
) -> None:
    """Replace ``path`` with ``text`` (``mode``, owned by ``owner`` when we are root).

    The folder must exist. It is opened once without following a link at its own name;
    the temporary file is created in it (``O_EXCL``, a random name), gets its mode and
    owner through its descriptor before a byte is written, and is renamed over the
    target relative to that same folder descriptor.
    """
    target = Path(path)
    try:
        with _open_dir(target.parent) as dir_fd:
            _write_in(dir_fd, target, text, owner, mode)
    except OSError as exc:
        raise _naming(exc, target) from exc


def _write_in(dir_fd: int, target: Path, text: str, owner: OsUser | None, mode: int) -> None:
    """The write itself, relative to the folder's descriptor; then the folder is synced
    so that after a power loss it names the new file, not the old one (or none)."""
    for _ in range(100):
        tmp_name = f".{target.name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(
                tmp_name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner.uid, owner.gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise
    with contextlib.suppress(OSError):  # best effort: the file is already in place
        os.fsync(dir_fd)


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error, naming the file that could not be written."""
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def read_text(path: str | os.PathLike[str]) -> str | None:
    """The file's text, None when it is missing, a link or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle, contextlib.suppress(UnicodeDecodeError):
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would block a reader
            return None
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


def open_beneath(base: str | os.PathLike[str], names: Sequence[str], flags: int) -> int:
    """Open ``base/names[0]/.../names[-1]`` with ``flags``, following no link below
    ``base`` (a directory root controls): every name is opened ``O_NOFOLLOW`` relative to
    the one before. Raises OSError (``ELOOP`` for a link) like ``os.open``."""
    if not names:
        raise OSError(errno.EINVAL, "no name below the folder", str(base))
    fd = os.open(base, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        for name in names[:-1]:
            if name in ("", ".", "..") or "/" in name:
                raise OSError(errno.EINVAL, "not a plain name", name)
            parent, fd = fd, os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(parent)
        last = names[-1]
        if last in ("", ".", "..") or "/" in last:
            raise OSError(errno.EINVAL, "not a plain name", last)
        return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def make_dirs_as(user: OsUser, paths: Sequence[str | os.PathLike[str]], mode: int) -> None:
    """Create ``paths`` (each with ``mode``, parents as needed) as ``user``: for folders
    inside a folder of that user, where root would have to walk names it controls."""
    if not paths:
        return
    result = processes.run(
        ["mkdir", "-p", "-m", f"{mode:o}", "--", *(str(p) for p in paths)], user=user, timeout=30
    )
    if not result.ok:
        reason = (result.stderr or result.stdout).strip()[-300:]
        raise UnsafePath(f"could not create {', '.join(str(p) for p in paths)}: {reason}")


def open_dir_strict(path: str | os.PathLike[str]) -> int:
    """A descriptor of the directory ``path`` (absolute), reached from ``/`` without
    following a link at any name on the way: for a folder whose parents the database
    user owns (its home, ``/var/lib/postgresql``), where a link could send root's next
    rename or delete elsewhere. Raises :class:`UnsafePath` for a link, OSError else."""
    target = Path(path)
    if not target.is_absolute():
        raise UnsafePath(f"{target} is not an absolute path")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for name in target.parts[1:]:
            try:
                parent, fd = fd, os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(
                        f"{target}: {name} is a link or not a directory; refusing to use it"
                    ) from exc
                raise
            os.close(parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_tree(
    path: str | os.PathLike[str], *, missing_ok: bool = False, dir_fd: int | None = None
) -> None:
    """Delete the directory ``path`` (relative to ``dir_fd`` if given) and all below it,
    following no link: shutil's fd-based rmtree opens each level ``O_NOFOLLOW`` relative
    to its parent and unlinks a link instead of entering it; a link at ``path`` itself is
    refused. Raises OSError."""
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux always has it
        raise UnsafePath(f"this platform's rmtree may follow links: not removing {path}")
    try:
        shutil.rmtree(path, dir_fd=dir_fd)
    except FileNotFoundError:
        if not missing_ok:
            raise
