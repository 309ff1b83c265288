"""Pure helpers: sizes, medians, ratios, throughput and a plain-text table.

Nothing here touches a process or a file, so the unit tests can pin it down.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence

MB = 1_000_000  # the benchmark speaks decimal megabytes, like pgBackRest's info sizes

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": MB,  # a bare number is megabytes
    "b": 1,
    "kb": 1_000,
    "mb": MB,
    "gb": 1_000 * MB,
    "tb": 1_000_000 * MB,
    "k": 1_000,
    "m": MB,
    "g": 1_000 * MB,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """``"500"``, ``"500MB"``, ``"1.5GB"``, ``"64MiB"`` → bytes (a bare number is MB)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 500, 500MB, 1GB)")
    unit = (match.group(2) or "").lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit in {text!r}")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def parse_sizes(text: str) -> list[int]:
    """``"30,60MB"`` → sorted, distinct byte counts."""
    sizes = sorted({parse_size(part) for part in text.split(",") if part.strip()})
    if not sizes:
        raise ValueError("no size given")
    return sizes


def median(values: Iterable[float]) -> float:
    """The median; raises ValueError on no values (a benchmark that measured nothing)."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("median of no measurements")
    return float(statistics.median(data))


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``; None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def throughput(size_bytes: float, seconds: float) -> float | None:
    """MB/s, None for a non-positive duration."""
    if seconds <= 0:
        return None
    return size_bytes / MB / seconds


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no measurements")
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be within [0, 1]")
    data = sorted(values)
    index = max(0, min(len(data) - 1, round(fraction * len(data) + 0.5) - 1))
    return float(data[index])


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned, ``|``-separated table (markdown-compatible)."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(headers)}")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
