"""Action parameters: one allow-list per action, checked before anything runs.

Both hosts call :func:`check_action_params` before they hand the parameters to a handler
(``pgbackups run`` and the local dispatcher; the charm's action events), so that a bad
parameter is a clear refusal and nothing is written. The checks are of form only: what
needs the repository (does the backup exist?) or the clock (is the time in the future?)
stays with the handler.

An empty value is refused rather than read as "not given": ``restore-to-time=`` beside a
``backup-id`` once meant "the end of the backup" and ran a real restore the user did
not ask for (docs/security.md, "Input validation").
"""

from __future__ import annotations

from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core import targets
from pgbackups.core.ids import normalise_id
from pgbackups.core.listing import FORMATS

# Parameters each action accepts (charm/charmcraft.yaml declares the same).
ACTION_PARAMS: dict[str, tuple[str, ...]] = {
    "create-backup": ("type",),
    "list-backups": ("format",),
    "restore": ("backup-id", "restore-to-time"),
    "rollback-restore": (),
    "expire": (),
    "verify": ("backup-id",),
}
BACKUP_TYPES = ("full", "differential", "incremental")
# Every accepted value is far shorter: a label is 34 characters, a time 32.
MAX_VALUE_LENGTH = 64
_SHOWN_MAX = 40


def _shown(text: str) -> str:
    """A name or value as messages show it: escaped by ``repr`` and cut short."""
    return repr(text[:_SHOWN_MAX]) + ("..." if len(text) > _SHOWN_MAX else "")


def _printable(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def check_action_params(action: str, params: Mapping[str, str]) -> str | None:
    """None when ``params`` are acceptable for ``action``; otherwise why not (one line)."""
    if action not in ACTION_PARAMS:
        return f"unknown action {_shown(action)}; available: {', '.join(ACTION_PARAMS)}"
    accepted = ACTION_PARAMS[action]
    values: dict[str, str] = {}
    for key, raw in params.items():
        if key not in accepted:
            names = ", ".join(accepted) if accepted else "none"
            return f"{action} has no parameter {_shown(key)}; it accepts: {names}"
        if not isinstance(raw, str) or not _printable(raw) or len(raw) > MAX_VALUE_LENGTH:
            return f"{key} must be printable ASCII of at most {MAX_VALUE_LENGTH} characters"
        value = raw.strip()
        if not value:
            return f"{key} is empty: give a value or leave the parameter out"
        values[key] = value
    if action == "create-backup" and "type" in values and values["type"] not in BACKUP_TYPES:
        return (
            f"{msg.INVALID_BACKUP_TYPE}: {values['type']}. "
            f"Possible values: {', '.join(BACKUP_TYPES)}."
        )
    if action == "list-backups" and "format" in values and values["format"] not in FORMATS:
        return f"Invalid format: {values['format']}. Possible values: {', '.join(FORMATS)}."
    if action == "restore":
        return _check_restore(values)
    if action == "verify" and "backup-id" in values:
        try:
            normalise_id(values["backup-id"])
        except ValueError:
            return f"{msg.INVALID_BACKUP_ID}: {values['backup-id']}"
    return None


def _check_restore(values: Mapping[str, str]) -> str | None:
    backup_id = values.get("backup-id")
    to_time = values.get("restore-to-time")
    if backup_id is None and to_time is None:
        return msg.MISSING_RESTORE_TARGET
    if backup_id is not None:
        try:
            normalise_id(backup_id)
        except ValueError:
            return f"{msg.INVALID_BACKUP_ID}: {backup_id}"
    if to_time is not None and to_time.lower() != targets.LATEST:
        try:
            targets.parse_time(to_time)
        except ValueError as exc:
            return str(exc)
    return None
