"""A restore in progress, as the app peer bag holds it: one record, the only code that
knows the bag's key names (docs/ARCHITECTURE.md, "Peer-bag keys").

The on-bag format is what both hosts persist, so it does not change: every field is one
string key, "" (or no key) meaning unset, and the timeline is written as its decimal
number. ``restore-moved-data`` outlives the other keys: it names the cluster's real data
from before the first restore attempt, kept until a restore succeeds (update-status
removes it) or is rolled back; a failed attempt leaves every key in place.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

_RESTORING_BACKUP = "restoring-backup"
_RESTORE_STANZA = "restore-stanza"
_RESTORE_TYPE = "restore-type"
_RESTORE_TO_TIME = "restore-to-time"
_RESTORE_TIMELINE = "restore-timeline"
_RESTORE_MOVED_DATA = "restore-moved-data"
# The last archived WAL segment a restore to the end of the archive must replay: checked
# against where recovery really ended (core/archive.py). Written only by such restores.
_RESTORE_WAL_END = "restore-wal-end"

# A restore's own keys, in the order they are cleared; the moved data goes separately
# (it outlives a failed attempt and is removed from disk before it is forgotten).
_TARGET_KEYS = (
    _RESTORING_BACKUP,
    _RESTORE_STANZA,
    _RESTORE_TO_TIME,
    _RESTORE_TIMELINE,
    _RESTORE_TYPE,
)
_KEYS = (*_TARGET_KEYS, _RESTORE_MOVED_DATA)


@dataclass(frozen=True)
class RestoreState:
    """What a restore asked for (targets.Chosen, as recorded) and where the old data is.

    A field the bag does not hold reads as "" (``timeline``: None); who reads a field
    decides its default (e.g. the bootstrap falls back to the unit's own stanza).
    """

    label: str = ""  # restoring-backup: the pgBackRest label (--set), "" for none
    stanza: str = ""  # restore-stanza: the stanza restored from
    type: str = ""  # restore-type: pgBackRest's --type (immediate | time | default)
    to_time: str = ""  # restore-to-time: the --target of a time restore
    timeline: int | None = None  # restore-timeline: --target-timeline
    moved_data: str = ""  # restore-moved-data: where the data from before it was moved
    wal_end: str = ""  # restore-wal-end: the segment recovery must reach ("" no check)

    @property
    def in_progress(self) -> bool:
        """A restore was started and has not been seen to succeed or rolled back."""
        return bool(self.label or self.to_time)

    @classmethod
    def read(cls, app: Mapping[str, str]) -> RestoreState | None:
        """The record, or None when the bag holds none of its keys (or only "")."""
        if not any(app.get(key) for key in _KEYS):
            return None
        timeline = app.get(_RESTORE_TIMELINE) or ""
        return cls(
            label=app.get(_RESTORING_BACKUP) or "",
            stanza=app.get(_RESTORE_STANZA) or "",
            type=app.get(_RESTORE_TYPE) or "",
            to_time=app.get(_RESTORE_TO_TIME) or "",
            timeline=int(timeline) if timeline else None,
            moved_data=app.get(_RESTORE_MOVED_DATA) or "",
            wal_end=app.get(_RESTORE_WAL_END) or "",
        )

    def write(self, app: MutableMapping[str, str]) -> None:
        """Every key, unset fields as "" (so a previous restore's values go)."""
        app[_RESTORING_BACKUP] = self.label
        app[_RESTORE_STANZA] = self.stanza
        app[_RESTORE_TYPE] = self.type
        app[_RESTORE_TO_TIME] = self.to_time
        app[_RESTORE_TIMELINE] = str(self.timeline) if self.timeline is not None else ""
        app[_RESTORE_MOVED_DATA] = self.moved_data
        if self.wal_end or app.get(_RESTORE_WAL_END):
            app[_RESTORE_WAL_END] = self.wal_end

    @staticmethod
    def clear(app: MutableMapping[str, str], *, keep_moved_data: bool = False) -> None:
        """The restore is over. ``keep_moved_data``: the old data is still on disk (the
        caller removes it, then :meth:`forget_moved_data`)."""
        for key in _TARGET_KEYS:
            app[key] = ""
        if app.get(_RESTORE_WAL_END):
            app[_RESTORE_WAL_END] = ""
        if not keep_moved_data:
            RestoreState.forget_moved_data(app)

    @staticmethod
    def forget_moved_data(app: MutableMapping[str, str]) -> None:
        app[_RESTORE_MOVED_DATA] = ""


def restore_in_progress(app: Mapping[str, str]) -> bool:
    state = RestoreState.read(app)
    return state is not None and state.in_progress
