"""Reading the end of a log file (``pgbackups logs`` and start-failure messages)."""

from __future__ import annotations

from pathlib import Path

TAIL_BYTES = 256 * 1024  # a log can be large: only its end is read


def tail(path: Path, lines: int) -> list[str] | None:
    """The last ``lines`` lines of ``path``; None when it cannot be read (e.g. missing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    return text.splitlines()[-lines:]
