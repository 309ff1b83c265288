"""Moving a data directory aside and back, and removing only what was moved aside.

A restore never deletes the data it replaces: the data directory is renamed to a
sibling ``<data>.before-restore-<UTC stamp>``, and removed only once the restored
cluster is healthy. The path of that sibling travels through the peer data, which this
unit does not alone control, so :func:`move_back` and :func:`remove_moved` accept only a
real directory (not a link) in the data directory's own parent whose name starts with
the data directory's name and the mark; anything else is refused, never deleted.

Root does this in a folder the database user owns: everything happens relative to a
descriptor of that folder, reached without following a link (``files.open_dir_strict``).

What stays behind (a failed restore's old data, what a rollback moved aside, Patroni's
``<data>.failed``) is listed by :func:`leftovers` and removed only when a person names
it (:func:`remove_leftover`), never the copy a restore still needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgbackups.adapters import files
from pgbackups.core.host import WorkloadError

log = logging.getLogger(__name__)

MOVED_MARK = ".before-restore-"
# What a failed restore left in the data directory when the old data is moved back.
DISPLACED_MARK = ".failed-restore-"
# Where pgBackRest restores while the data directory is still in place (swap_in).
STAGING_SUFFIX = ".restoring"
# A moved-aside copy handed to a removal (rename_for_removal): what a removal stopped
# half-way leaves says so, and never passes for a copy a rollback could put back.
REMOVING_MARK = ".removing-"


@contextlib.contextmanager
def _parent(data_dir: Path) -> Iterator[int]:
    """The data directory's folder, reached without following a link (its parents may
    be the database user's, as ``/var/lib/postgresql`` is): every rename, check and
    delete below is relative to it, so no link can send root's rename or delete
    elsewhere. A rename itself never follows a link at either name."""
    try:
        fd = files.open_dir_strict(data_dir.parent)
    except OSError as exc:
        raise WorkloadError(f"cannot use {data_dir.parent}: {exc}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _exists(name: str, parent: int) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _sibling(data_dir: Path, mark: str, parent: int, stamp: str = "") -> str:
    """A name beside ``data_dir`` that does not exist yet, ``<data><mark><stamp>`` (now,
    in UTC, by default; a second in the same UTC second gets a suffix: rename would
    replace an empty directory of the same name; one made between this check and the
    rename makes the rename fail, never write through)."""
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{data_dir.name}{mark}{stamp}"
    candidate = base
    n = 1
    while _exists(candidate, parent):
        candidate = f"{base}-{n}"
        n += 1
    return candidate


def move_aside(data_dir: Path) -> Path | None:
    """Rename ``data_dir`` to a moved-aside sibling; None when there is no data directory
    (after a failed bootstrap Patroni renamed it to ``<data>.failed`` itself)."""
    with _parent(data_dir) as parent:
        if not _exists(data_dir.name, parent):
            log.info("no data directory at %s: nothing to move aside", data_dir)
            return None
        moved = _rename_aside(data_dir, parent)
    log.info("moved %s aside to %s", data_dir, data_dir.with_name(moved))
    return data_dir.with_name(moved)


def _rename_aside(data_dir: Path, parent: int) -> str:
    """Rename ``data_dir`` to a new moved-aside sibling's name, returned."""
    moved = _sibling(data_dir, MOVED_MARK, parent)
    try:
        os.rename(data_dir.name, moved, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as exc:
        raise WorkloadError(f"could not move {data_dir} aside: {exc}") from exc
    return moved


def _rename_in(staging: str, data_dir: Path, parent: int) -> None:
    try:
        os.rename(staging, data_dir.name, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as exc:
        raise WorkloadError(f"could not move the restored copy into {data_dir}: {exc}") from exc


def make_staging(data_dir: Path, uid: int, gid: int) -> Path:
    """An empty ``<data>.restoring`` beside ``data_dir`` for pgBackRest to restore into,
    the database user's (0700). What a killed restore left there is removed first: it is
    a partial copy of a backup, never the cluster's data (that is only ever renamed)."""
    name = data_dir.name + STAGING_SUFFIX
    with _parent(data_dir) as parent:
        try:
            if _exists(name, parent):
                _remove_staging(name, parent)
            os.mkdir(name, 0o700, dir_fd=parent)
            # A link put in its place meanwhile is chowned itself, never its target.
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            raise WorkloadError(f"could not make {data_dir.with_name(name)}: {exc}") from exc
    return data_dir.with_name(name)


def _remove_staging(name: str, parent: int) -> None:
    if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        raise WorkloadError(f"{name} is not a directory: not removed")
    files.remove_tree(name, dir_fd=parent)  # follows no link below it


def remove_staging(data_dir: Path) -> None:
    """Delete ``<data>.restoring`` (a real directory of that name only), if there is one."""
    name = data_dir.name + STAGING_SUFFIX
    with _parent(data_dir) as parent:
        try:
            if _exists(name, parent):
                _remove_staging(name, parent)
        except OSError as exc:
            raise WorkloadError(f"could not remove {data_dir.with_name(name)}: {exc}") from exc
    log.info("removed %s", data_dir.with_name(name))


def swap_in(data_dir: Path, *, missing_ok: bool = False) -> Path | None:
    """Rename ``data_dir`` aside (as :func:`move_aside`) and ``<data>.restoring`` into its
    place; returns where the old data went (None: there was no data directory, allowed
    with ``missing_ok``). If the second rename fails the first is undone: the data
    directory is never left missing by this."""
    staging = data_dir.name + STAGING_SUFFIX
    with _parent(data_dir) as parent:
        try:
            mode = os.stat(staging, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError as exc:
            raise WorkloadError(f"no restored copy at {data_dir.with_name(staging)}") from exc
        if not stat.S_ISDIR(mode):
            raise WorkloadError(f"{data_dir.with_name(staging)} is not a directory")
        if not _exists(data_dir.name, parent):
            if not missing_ok:
                raise WorkloadError(f"no data directory at {data_dir} to take the place of")
            _rename_in(staging, data_dir, parent)
            log.info("the restored copy is in %s (its data was aside already)", data_dir)
            return None
        moved = _rename_aside(data_dir, parent)
        try:
            _rename_in(staging, data_dir, parent)
        except WorkloadError:
            os.rename(moved, data_dir.name, src_dir_fd=parent, dst_dir_fd=parent)
            raise
    log.info("moved %s aside to %s; the restored copy is in its place", data_dir, moved)
    return data_dir.with_name(moved)


def is_moved_copy(data_dir: Path, path: Path) -> bool:
    """``path`` has the name and place of a directory :func:`move_aside` made."""
    prefix = data_dir.name + MOVED_MARK
    return (
        path.parent == data_dir.parent
        and path.name.startswith(prefix)
        and len(path.name) > len(prefix)
    )


def _checked(data_dir: Path, moved: Path, parent: int) -> str:
    if not is_moved_copy(data_dir, moved):
        raise WorkloadError(f"{moved} is not a data directory moved aside from {data_dir}")
    try:
        mode = os.stat(moved.name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError as exc:
        raise WorkloadError(f"{moved}: {exc.strerror}") from exc
    if not stat.S_ISDIR(mode):  # a link too: it is not followed
        raise WorkloadError(f"{moved} is not a directory")
    return moved.name


def rename_for_removal(data_dir: Path, moved_path: str) -> Path:
    """Rename a directory :func:`move_aside` made (a real directory, no link: WorkloadError
    otherwise) to ``<data>.removing-<its stamp>``, relative to the parent's descriptor, and
    return the new path, which is what the removal then deletes."""
    with _parent(data_dir) as parent:
        moved = _checked(data_dir, Path(moved_path), parent)
        stamp = moved[len(data_dir.name + MOVED_MARK) :]  # the copy keeps its time
        target = _sibling(data_dir, REMOVING_MARK, parent, stamp)
        try:
            os.rename(moved, target, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            raise WorkloadError(f"could not rename {moved_path} for its removal: {exc}") from exc
    return data_dir.with_name(target)


def move_back(data_dir: Path, moved_path: str) -> None:
    """Rename a moved-aside directory back to ``data_dir``. What is in ``data_dir`` now (a
    failed restore's data) is renamed aside to ``<data>.failed-restore-<stamp>``."""
    with _parent(data_dir) as parent:
        moved = _checked(data_dir, Path(moved_path), parent)
        try:
            if _exists(data_dir.name, parent):
                displaced = _sibling(data_dir, DISPLACED_MARK, parent)
                os.rename(data_dir.name, displaced, src_dir_fd=parent, dst_dir_fd=parent)
                log.info("moved %s aside to %s", data_dir, data_dir.with_name(displaced))
            os.rename(moved, data_dir.name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            raise WorkloadError(f"could not move {moved_path} back to {data_dir}: {exc}") from exc
    log.info("moved %s back to %s", moved_path, data_dir)


def remove_moved(data_dir: Path, moved_path: str) -> None:
    """Delete a directory :func:`move_aside` made, and nothing else."""
    with _parent(data_dir) as parent:
        moved = _checked(data_dir, Path(moved_path), parent)
        try:
            files.remove_tree(moved, dir_fd=parent)  # follows no link below it
        except OSError as exc:
            raise WorkloadError(f"could not remove {moved_path}: {exc}") from exc
    log.info("removed the old data directory %s", moved_path)


# ---------------------------------------------------------------------------
# Leftovers: what moving aside (ours and Patroni's) leaves beside the data directory

# Patroni renames the data directory of a bootstrap it gave up to ``<data>.failed``.
PATRONI_FAILED_SUFFIX = ".failed"


@dataclass(frozen=True)
class Leftover:
    """A directory beside the data directory that a restore, a rollback or Patroni left:
    nothing removes it by itself (a copy of the data is never deleted unasked)."""

    path: Path
    kind: str  # before-restore | failed-restore | patroni-failed | partial-restore | removing
    size: int  # bytes on disk (allocated blocks; links not followed)
    changed: float  # st_ctime: when it was moved here (a rename sets it)

    @property
    def name(self) -> str:
        return self.path.name


def leftover_kind(data_dir: Path, path: Path) -> str | None:
    """Which kind of leftover ``path``'s name and place make it, None if none."""
    if path.parent != data_dir.parent:
        return None
    name, base = path.name, data_dir.name
    if name == base + PATRONI_FAILED_SUFFIX:
        return "patroni-failed"
    if name == base + STAGING_SUFFIX:
        return "partial-restore"
    marks = (
        (MOVED_MARK, "before-restore"),
        (DISPLACED_MARK, "failed-restore"),
        (REMOVING_MARK, "removing"),
    )
    for mark, kind in marks:
        if name.startswith(base + mark) and len(name) > len(base + mark):
            return kind
    return None


def leftovers(data_dir: Path) -> list[Leftover]:
    """Every leftover directory beside ``data_dir`` (real directories only), oldest first."""
    try:
        entries = list(os.scandir(data_dir.parent))
    except OSError:
        return []
    found = []
    for entry in entries:
        path = Path(entry.path)
        kind = leftover_kind(data_dir, path)
        if kind is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            changed = entry.stat(follow_symlinks=False).st_ctime
        except OSError:
            continue
        found.append(Leftover(path, kind, disk_usage(path), changed))
    return sorted(found, key=lambda item: (item.changed, item.name))


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path``, without following links (``du -s``)."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except OSError:
            continue
        total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            try:
                stack.extend(Path(e.path) for e in os.scandir(current))
            except OSError:
                continue
    return total


def remove_leftover(data_dir: Path, name: str, *, needed: str = "") -> Path:
    """Delete the leftover ``name`` beside ``data_dir`` once :func:`check_leftover`
    allows it; returns its path."""
    path = check_leftover(data_dir, name, needed=needed)
    with _parent(data_dir) as parent:  # no link on the way sends the delete elsewhere
        try:
            files.remove_tree(path.name, dir_fd=parent)  # follows no link below it
        except OSError as exc:
            raise WorkloadError(f"could not remove {path}: {exc.strerror or exc}") from exc
    log.info("removed the leftover %s", path)
    return path


def check_leftover(data_dir: Path, name: str, *, needed: str = "") -> Path:
    """The path of the leftover ``name`` beside ``data_dir``, if it may be removed.

    Refused (WorkloadError): a name with a ``/`` or that is not a leftover's, anything
    but a real directory, and ``needed`` — the copy a restore that has not succeeded
    records as the cluster's data from before it (rollback-restore puts it back).
    """
    if not name or "/" in name or name in (".", ".."):
        raise WorkloadError(f"{name!r} is not a leftover's name (give a name that status lists)")
    path = data_dir.parent / name
    if leftover_kind(data_dir, path) is None:
        raise WorkloadError(
            f"{name} is not a leftover of {data_dir.name} (only {data_dir.name}{MOVED_MARK}*, "
            f"{data_dir.name}{DISPLACED_MARK}*, {data_dir.name}{REMOVING_MARK}* and "
            f"{data_dir.name}{PATRONI_FAILED_SUFFIX})"
        )
    if needed and Path(needed) == path:
        raise WorkloadError(
            f"{path} holds the data from before a restore that has not succeeded: "
            "not removed (rollback-restore puts it back; it can go once a restore "
            "succeeded or was rolled back)"
        )
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise WorkloadError(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(mode):  # a link too: lstat does not follow it
        raise WorkloadError(f"{path} is not a directory: not removed")
    return path
