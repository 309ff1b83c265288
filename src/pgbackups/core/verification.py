"""When each backup was last verified, and what was found (docs/behaviour/verify.md).

pgBackRest 2.45's ``verify`` prints its findings and stores nothing, so the verify action
keeps them in an object of ours beside the repository's own (``pgbackups-verify.json``
next to the cluster marker, written through the S3 API like the marker): it lives and
dies with the backups it describes, every unit and a new cluster restoring from the
repository read the same record, and no leader is needed to write it. It holds backup
labels, times and counts: no secret and no data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pgbackups.core.ids import format_id
from pgbackups.core.marker import object_key
from pgbackups.core.repository import VerifiedBackup

VERIFY_OBJECT = "pgbackups-verify.json"


def verify_key(repository_path: str) -> str:
    return object_key(repository_path, VERIFY_OBJECT)


@dataclass(frozen=True)
class Verified:
    """The last verification of one backup."""

    at: str  # when, backup-id form (UTC, seconds)
    result: str  # "valid", or "invalid: <what is wrong>"

    @property
    def valid(self) -> bool:
        return self.result == "valid"


def outcome(found: VerifiedBackup) -> str:
    return "valid" if found.valid else f"invalid: {found.problems()}"


def decode(body: bytes | None) -> dict[str, dict[str, Verified]]:
    """stanza → label → last verification; {} for no object or one we cannot read (a
    record of ours, never a reason to fail: the backups are still listed)."""
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, dict[str, Verified]] = {}
    for stanza, labels in data.items():
        if not isinstance(stanza, str) or not isinstance(labels, dict):
            continue
        for label, entry in labels.items():
            if isinstance(entry, dict) and isinstance(entry.get("at"), str):
                result = entry.get("result")
                if isinstance(result, str):
                    found.setdefault(stanza, {})[label] = Verified(entry["at"], result)
    return found


def updated(
    records: Mapping[str, Mapping[str, Verified]],
    stanza: str,
    results: Iterable[VerifiedBackup],
    at: datetime,
    keep: Iterable[str],
) -> dict[str, dict[str, Verified]]:
    """``records`` with this verification's ``results`` for ``stanza``; labels of the
    stanza no longer in ``keep`` (expired backups) are dropped."""
    kept = set(keep)
    merged = {s: dict(labels) for s, labels in records.items()}
    mine = {label: v for label, v in merged.get(stanza, {}).items() if label in kept}
    for found in results:
        mine[found.label] = Verified(format_id(at), outcome(found))
    merged[stanza] = mine
    return merged


def encode(records: Mapping[str, Mapping[str, Verified]]) -> bytes:
    data = {
        stanza: {label: {"at": v.at, "result": v.result} for label, v in sorted(labels.items())}
        for stanza, labels in sorted(records.items())
    }
    return json.dumps(data, indent=2).encode()
