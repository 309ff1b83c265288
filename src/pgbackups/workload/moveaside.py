"""Moving a data directory aside and back, and removing only what was moved aside.

A restore never deletes the data it replaces: the data directory is renamed to a
sibling ``<data>.before-restore-<UTC stamp>``, and removed only once the restored
cluster is healthy. The path of that sibling travels through the peer data, which this
unit does not alone control, so :func:`move_back` and :func:`remove_moved` accept only a
real directory (not a link) in the data directory's own parent whose name starts with
the data directory's name and the mark; anything else is refused, never deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

from pgbackups.core.host import WorkloadError

log = logging.getLogger(__name__)

MOVED_MARK = ".before-restore-"
# What a failed restore left in the data directory when the old data is moved back.
DISPLACED_MARK = ".failed-restore-"


def _sibling(data_dir: Path, mark: str) -> Path:
    """A name beside ``data_dir`` that does not exist yet (a second in the same UTC
    second gets a suffix: rename would replace an empty directory of the same name)."""
    base = f"{data_dir.name}{mark}{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    candidate = data_dir.with_name(base)
    n = 1
    while os.path.lexists(candidate):
        candidate = data_dir.with_name(f"{base}-{n}")
        n += 1
    return candidate


def move_aside(data_dir: Path) -> Path | None:
    """Rename ``data_dir`` to a moved-aside sibling; None when there is no data directory
    (after a failed bootstrap Patroni renamed it to ``<data>.failed`` itself)."""
    if not os.path.lexists(data_dir):
        log.info("no data directory at %s: nothing to move aside", data_dir)
        return None
    moved = _sibling(data_dir, MOVED_MARK)
    try:
        data_dir.rename(moved)
    except OSError as exc:
        raise WorkloadError(f"could not move {data_dir} aside: {exc}") from exc
    log.info("moved %s aside to %s", data_dir, moved)
    return moved


def is_moved_copy(data_dir: Path, path: Path) -> bool:
    """``path`` has the name and place of a directory :func:`move_aside` made."""
    prefix = data_dir.name + MOVED_MARK
    return (
        path.parent == data_dir.parent
        and path.name.startswith(prefix)
        and len(path.name) > len(prefix)
    )


def _checked(data_dir: Path, moved: Path) -> Path:
    if not is_moved_copy(data_dir, moved):
        raise WorkloadError(f"{moved} is not a data directory moved aside from {data_dir}")
    try:
        mode = os.lstat(moved).st_mode
    except OSError as exc:
        raise WorkloadError(f"{moved}: {exc.strerror}") from exc
    if not stat.S_ISDIR(mode):  # a link too: lstat does not follow it
        raise WorkloadError(f"{moved} is not a directory")
    return moved


def move_back(data_dir: Path, moved_path: str) -> None:
    """Rename a moved-aside directory back to ``data_dir``. What is in ``data_dir`` now (a
    failed restore's data) is renamed aside to ``<data>.failed-restore-<stamp>``."""
    moved = _checked(data_dir, Path(moved_path))
    try:
        if os.path.lexists(data_dir):
            displaced = _sibling(data_dir, DISPLACED_MARK)
            data_dir.rename(displaced)
            log.info("moved %s aside to %s", data_dir, displaced)
        moved.rename(data_dir)
    except OSError as exc:
        raise WorkloadError(f"could not move {moved} back to {data_dir}: {exc}") from exc
    log.info("moved %s back to %s", moved, data_dir)


def remove_moved(data_dir: Path, moved_path: str) -> None:
    """Delete a directory :func:`move_aside` made, and nothing else."""
    moved = _checked(data_dir, Path(moved_path))
    try:
        # rmtree opens each level without following links (it refuses a link at the top).
        shutil.rmtree(moved)
    except OSError as exc:
        raise WorkloadError(f"could not remove {moved}: {exc}") from exc
    log.info("removed the old data directory %s", moved)
