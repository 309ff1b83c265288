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
# A restore of the whole cluster (docs/behaviour/restore.md, "A cluster of several units"):
# which attempt (the other units join it once), where it stands (the stages below), and the
# timeline the restored primary runs on (a re-created unit streams it when it is done).
_RESTORE_EPOCH = "restore-epoch"
_RESTORE_STAGE = "restore-stage"
_RESTORE_NEW_TIMELINE = "restore-new-timeline"

# The stages, in order. A restore: the other units stop and move their data aside; the
# leader restores; the others re-create themselves from the restored primary.
STOPPING = "stopping"
RESTORING = "restoring"
RECREATING = "re-creating"
# A rollback: the leader put its data back and starts; then the others put theirs back.
ROLLING_BACK = "rolling-back"
ROLLED_BACK = "rolled-back"
RESTORE_STAGES = (STOPPING, RESTORING, RECREATING)
ROLLBACK_STAGES = (ROLLING_BACK, ROLLED_BACK)

# Unit bag: this unit's part in a cluster restore.
_UNIT_JOINED = "restore-joined"  # the epoch this unit stopped for
_UNIT_MOVED_DATA = "restore-unit-moved-data"  # where this unit's data from before it is
_UNIT_DONE = "restore-done"  # the epoch this unit was re-created for (it streams)

# A restore's own keys, in the order they are cleared; the moved data goes separately
# (it outlives a failed attempt and is removed from disk before it is forgotten).
_TARGET_KEYS = (
    _RESTORING_BACKUP,
    _RESTORE_STANZA,
    _RESTORE_TO_TIME,
    _RESTORE_TIMELINE,
    _RESTORE_TYPE,
)
_STAGE_KEYS = (_RESTORE_EPOCH, _RESTORE_STAGE, _RESTORE_NEW_TIMELINE)
_KEYS = (*_TARGET_KEYS, _RESTORE_MOVED_DATA, *_STAGE_KEYS)


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
    epoch: str = ""  # restore-epoch: this attempt ("" a restore from before the stages)
    stage: str = ""  # restore-stage: one of RESTORE_STAGES or ROLLBACK_STAGES
    new_timeline: int | None = None  # restore-new-timeline: the restored primary's

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
        new_timeline = app.get(_RESTORE_NEW_TIMELINE) or ""
        return cls(
            label=app.get(_RESTORING_BACKUP) or "",
            stanza=app.get(_RESTORE_STANZA) or "",
            type=app.get(_RESTORE_TYPE) or "",
            to_time=app.get(_RESTORE_TO_TIME) or "",
            timeline=int(timeline) if timeline else None,
            moved_data=app.get(_RESTORE_MOVED_DATA) or "",
            wal_end=app.get(_RESTORE_WAL_END) or "",
            epoch=app.get(_RESTORE_EPOCH) or "",
            stage=app.get(_RESTORE_STAGE) or "",
            new_timeline=int(new_timeline) if new_timeline else None,
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
        # Only when set or to unset: a one-unit restore's bag looks as it always did.
        for key, value in (
            (_RESTORE_EPOCH, self.epoch),
            (_RESTORE_STAGE, self.stage),
            (_RESTORE_NEW_TIMELINE, str(self.new_timeline) if self.new_timeline else ""),
        ):
            if value or app.get(key):
                app[key] = value

    @staticmethod
    def set_stage(
        app: MutableMapping[str, str], stage: str, new_timeline: int | None = None
    ) -> None:
        app[_RESTORE_STAGE] = stage
        if new_timeline is not None:
            app[_RESTORE_NEW_TIMELINE] = str(new_timeline)

    @staticmethod
    def end_stages(app: MutableMapping[str, str]) -> None:
        """The cluster restore (or its rollback) is over on every unit."""
        for key in _STAGE_KEYS:
            if app.get(key):
                app[key] = ""

    @staticmethod
    def clear(
        app: MutableMapping[str, str], *, keep_moved_data: bool = False, keep_stages: bool = False
    ) -> None:
        """The restore is over. ``keep_moved_data``: the old data is still on disk (the
        caller removes it, then :meth:`forget_moved_data`). ``keep_stages``: the other
        units still have their part to do (a rollback)."""
        for key in _TARGET_KEYS:
            app[key] = ""
        if not keep_stages:
            RestoreState.end_stages(app)
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


@dataclass(frozen=True)
class UnitRestoreState:
    """This unit's part in a cluster restore, as its own bag holds it."""

    joined: str = ""  # the epoch of the restore this unit stopped and moved its data for
    moved_data: str = ""  # where this unit's data from before the restore is
    done: str = ""  # the epoch this unit was re-created for

    @property
    def involved(self) -> bool:
        return bool(self.joined or self.moved_data or self.done)

    @classmethod
    def read(cls, bag: Mapping[str, str]) -> UnitRestoreState:
        return cls(
            joined=bag.get(_UNIT_JOINED) or "",
            moved_data=bag.get(_UNIT_MOVED_DATA) or "",
            done=bag.get(_UNIT_DONE) or "",
        )

    def write(self, bag: MutableMapping[str, str]) -> None:
        bag[_UNIT_JOINED] = self.joined
        bag[_UNIT_MOVED_DATA] = self.moved_data
        bag[_UNIT_DONE] = self.done

    @staticmethod
    def clear(bag: MutableMapping[str, str]) -> None:
        for key in (_UNIT_JOINED, _UNIT_MOVED_DATA, _UNIT_DONE):
            if bag.get(key):
                bag[key] = ""
