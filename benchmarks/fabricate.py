"""Many backups, cheaply: copies of real small backups under new labels.

Creating 3,000 real backups takes longer than the whole run, so the list-backups
measurement uses a repository whose backup set is made from two real backups of a tiny
database (a full and an incremental): each copy is the real backup's objects (bundles
copied server-side) with a rewritten manifest, and ``backup.info`` lists every copy.
:func:`plan_month` lays them out as the user of the reference operator had them: a full
every night and an incremental every 15 minutes in between, each incremental's prior the
backup before it and its files referencing that night's full (what the real incremental's
files reference: its full), so every copy is a backup pgBackRest ``info`` accepts and
can load the manifest of: the runner checks that ``info`` counts them all.

The month's WAL (:func:`plan_wal`): one object per minute (``archive_timeout`` 60 s on
an idle cluster), server-side copies of one real archived segment under the next
segment names of the same timeline, so the archive lists as a month of contiguous WAL.
They stand in for listing only (names and sizes: what list-backups reads); their
content is the template's, so they are removed before anything could read them.

pgBackRest's info files (``backup.info``, ``backup.manifest``) are INI files whose values
are JSON, with a SHA-1 checksum over a JSON rendering of all sections but the checksum
itself: :func:`info_checksum` computes it (checked against real files in the unit tests
and by ``pgbackrest info`` accepting the result).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

Sections = dict[str, dict[str, str]]

CHECKSUM_SECTION = "backrest"
CHECKSUM_KEY = "backrest-checksum"
TIMESTAMP_KEYS = ("backup-timestamp-start", "backup-timestamp-stop", "backup-timestamp-copy-start")


def parse_info(text: str) -> Sections:
    """INI text → {section: {key: raw JSON value}} (order kept as read)."""
    sections: Sections = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None:
            raise ValueError(f"value outside a section: {line[:60]!r}")
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not key=value: {line[:60]!r}")
        current[key] = value
    return sections


def _checked_items(sections: Sections, name: str) -> list[tuple[str, str]]:
    items = sorted(sections[name].items())
    if name == CHECKSUM_SECTION:
        items = [(k, v) for k, v in items if k != CHECKSUM_KEY]
    return items


def info_checksum(sections: Sections) -> str:
    """pgBackRest's checksum: SHA-1 of ``{"section":{"key":value,...},...}``, sorted."""
    parts = ["{"]
    first = True
    for name in sorted(sections):
        items = _checked_items(sections, name)
        if not items:
            continue
        if not first:
            parts.append("},")
        first = False
        parts.append(f'"{name}":{{')
        parts.append(",".join(f'"{k}":{v}' for k, v in items))
    parts.append("}}")
    return hashlib.sha1("".join(parts).encode(), usedforsecurity=False).hexdigest()


def render_info(sections: Sections) -> str:
    """Sections → the text pgBackRest writes: sorted, checksum last in its own section."""
    body = {name: dict(values) for name, values in sections.items()}
    body.setdefault(CHECKSUM_SECTION, {}).pop(CHECKSUM_KEY, None)
    checksum = info_checksum(body)
    blocks = []
    for name in sorted(body):
        items = sorted(body[name].items())
        if items:
            blocks.append("\n".join([f"[{name}]", *(f"{k}={v}" for k, v in items)]))
    blocks.append(f'[{CHECKSUM_SECTION}]\n{CHECKSUM_KEY}="{checksum}"')
    return "\n\n".join(blocks) + "\n"


def checksum_ok(text: str) -> bool:
    sections = parse_info(text)
    stored = sections.get(CHECKSUM_SECTION, {}).get(CHECKSUM_KEY, "").strip('"')
    return bool(stored) and stored == info_checksum(sections)


# ---------------------------------------------------------------------------
# Labels


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")


def full_label(when: datetime) -> str:
    return f"{_stamp(when)}F"


@dataclass(frozen=True)
class Copy:
    """One fabricated backup: its label, type, the real backup it copies, and its prior."""

    label: str
    type: str  # full | diff | incr
    template: str  # the real backup's label
    prior: str | None
    start: datetime
    # The full whose files this backup's unchanged files reference (the real template's
    # references to its full are pointed here); None: ``prior`` (a differential's full).
    base: str | None = None

    @property
    def references(self) -> str | None:
        return self.base if self.base is not None else self.prior


def incr_label(full: str, when: datetime) -> str:
    return f"{full}_{_stamp(when)}I"


BACKUPS_PER_DAY = 96  # a full at midnight, then an incremental every 15 minutes
WAL_PER_DAY = 1440  # one segment a minute: archive_timeout 60 s on an idle cluster


def plan_month(
    count: int,
    *,
    before: datetime,
    full_template: str,
    incr_template: str,
    per_day: int = BACKUPS_PER_DAY,
) -> list[Copy]:
    """``count`` backdated copies ending a day before ``before``: per day a full at
    midnight, then ``per_day - 1`` incrementals at equal steps (15 minutes for 96), each
    with the backup before it as its prior and that day's full as what its files
    reference. Sorted by label (labels sort by time within a full's chain)."""
    if count < 0 or per_day < 1:
        raise ValueError("count must be >= 0 and per_day >= 1")
    step = timedelta(days=1) / per_day
    days = -(-count // per_day)
    first = (before - timedelta(days=days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    copies: list[Copy] = []
    current_full = ""
    previous = ""
    for index in range(count):
        start = first + step * index
        if index % per_day == 0:
            current_full = previous = full_label(start)
            copies.append(Copy(current_full, "full", full_template, None, start))
        else:
            label = incr_label(current_full, start)
            copies.append(Copy(label, "incr", incr_template, previous, start, base=current_full))
            previous = label
    return copies


def plan_wal(after_segno: int, count: int) -> list[int]:
    """The segment numbers of ``count`` fabricated segments right after ``after_segno``."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return list(range(after_segno + 1, after_segno + 1 + count))


def _replace_label(value: str, old: str, new: str) -> str:
    """Replace a whole label in a JSON value: quoted, or an item of ``backup-reference``
    (``"F,F_D"``); a full's label inside a differential's label is left alone."""
    return re.sub(rf'(?<=[",]){re.escape(old)}(?=[",])', new, value)


def _shift(value: str, delta: int) -> str:
    return str(int(value) + delta)


def rewrite_manifest(text: str, template: str, copy: Copy) -> str:
    """The template's ``backup.manifest`` text for ``copy``: labels, prior, references and
    timestamps replaced, checksum recomputed."""
    sections = parse_info(text)
    backup = sections["backup"]
    old_start = int(backup["backup-timestamp-start"])
    delta = int(copy.start.timestamp()) - old_start
    old_prior = json.loads(backup["backup-prior"]) if "backup-prior" in backup else None
    replacements = {template: copy.label}
    if old_prior and copy.references:
        replacements[old_prior] = copy.references
    for values in sections.values():
        for key, value in list(values.items()):
            new = value
            for old, repl in replacements.items():
                new = _replace_label(new, old, repl)
            values[key] = new
    for key in TIMESTAMP_KEYS:
        if key in backup:
            backup[key] = _shift(backup[key], delta)
    backup["backup-type"] = json.dumps(copy.type)
    if copy.prior is not None:
        backup["backup-prior"] = json.dumps(copy.prior)
    return render_info(sections)


def info_entry(template_entry: str, template: str, copy: Copy, template_prior: str | None) -> str:
    """The template's ``backup:current`` JSON value in ``backup.info``, for ``copy``."""
    data = json.loads(template_entry)
    delta = int(copy.start.timestamp()) - int(data["backup-timestamp-start"])
    data["backup-timestamp-start"] += delta
    data["backup-timestamp-stop"] += delta
    data["backup-type"] = copy.type
    if copy.prior is not None:
        data["backup-prior"] = copy.prior
        refs = data.get("backup-reference") or []
        data["backup-reference"] = [copy.references if r == template_prior else r for r in refs]
    else:
        data.pop("backup-prior", None)
        data.pop("backup-reference", None)
    del template  # the label is the key, not a field
    return json.dumps(data, separators=(",", ":"))


def add_to_backup_info(
    text: str, copies: list[Copy], templates: dict[str, str | None]
) -> tuple[str, int]:
    """``backup.info`` text with ``copies`` added to ``backup:current``; and the new count.

    ``templates`` maps each template label to its prior label (None for a full).
    """
    sections = parse_info(text)
    current = sections.setdefault("backup:current", {})
    for copy in copies:
        if copy.label in current:
            raise ValueError(f"label {copy.label} is already in backup.info")
        current[copy.label] = info_entry(
            current[copy.template], copy.template, copy, templates[copy.template]
        )
    return render_info(sections), len(current)
