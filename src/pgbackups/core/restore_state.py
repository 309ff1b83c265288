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
# The unit whose data is restored (the leader when it began restoring): leadership may
# move meanwhile, the restore does not (docs/behaviour/restore.md, "Leadership moves").
_RESTORE_UNIT = "restore-unit"

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

# After a restore: the backup set a unit that creates itself as a replica restores
# (``--set``), until a backup taken since exists (docs/behaviour/restore.md, "After a
# restore"). pgBackRest's standby restore otherwise takes the repository's newest set,
# which may lie on the old timeline past the point the restored one branched at: a
# standby restored from it can never follow the primary. ``replica-set-since`` is when
# the restore ended, in a backup label's form (``YYYYMMDD-HHMMSS``): a backup whose label
# is not older started on the restored timeline.
_REPLICA_SET = "replica-backup-set"
_REPLICA_SET_SINCE = "replica-set-since"
# Unit bag: the label of the last backup this unit took (create-backup, when pgBackRest
# lists it): the leader unpins the set above once one is newer than the restore.
_UNIT_BACKUP_TAKEN = "backup-taken"

# Unit bag: this unit's part in a cluster restore.
_UNIT_JOINED = "restore-joined"  # the epoch this unit stopped for
_UNIT_MOVED_DATA = "restore-unit-moved-data"  # where this unit's data from before it is
_UNIT_DONE = "restore-done"  # the epoch this unit was re-created for (it streams)
# The restoring unit, once leadership left it: ``<epoch>:<timeline>`` when it runs as the
# restored primary, ``<epoch>:failed`` when its bootstrap failed (the new leader reads it).
_UNIT_PRIMARY = "restore-primary"
# When this unit first saw its re-creation stalled (Patroni's "uninitialized"/"stopped"):
# that is also how a Patroni that just started looks before it begins creating the
# replica, so it is re-created again only if still stalled a while later.
_UNIT_STALLED_SINCE = "restore-stalled-since"

# A restore's own keys, in the order they are cleared; the moved data goes separately
# (it outlives a failed attempt and is removed from disk before it is forgotten).
_TARGET_KEYS = (
    _RESTORING_BACKUP,
    _RESTORE_STANZA,
    _RESTORE_TO_TIME,
    _RESTORE_TIMELINE,
    _RESTORE_TYPE,
)
_STAGE_KEYS = (_RESTORE_EPOCH, _RESTORE_STAGE, _RESTORE_NEW_TIMELINE, _RESTORE_UNIT)
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
    unit: str = ""  # restore-unit: whose data is restored ("" before it began, one unit)

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
            unit=app.get(_RESTORE_UNIT) or "",
        )

    def restores_elsewhere(self, unit: str) -> bool:
        """The restore runs on another unit than ``unit`` (leadership moved)."""
        return bool(self.unit) and self.unit != unit

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
            (_RESTORE_UNIT, self.unit),
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
    primary: str = ""  # the restoring unit's report once not the leader (see _UNIT_PRIMARY)

    @property
    def involved(self) -> bool:
        return bool(self.joined or self.moved_data or self.done or self.primary)

    @classmethod
    def read(cls, bag: Mapping[str, str]) -> UnitRestoreState:
        return cls(
            joined=bag.get(_UNIT_JOINED) or "",
            moved_data=bag.get(_UNIT_MOVED_DATA) or "",
            done=bag.get(_UNIT_DONE) or "",
            primary=bag.get(_UNIT_PRIMARY) or "",
        )

    def write(self, bag: MutableMapping[str, str]) -> None:
        bag[_UNIT_JOINED] = self.joined
        bag[_UNIT_MOVED_DATA] = self.moved_data
        bag[_UNIT_DONE] = self.done
        if self.primary or bag.get(_UNIT_PRIMARY):
            bag[_UNIT_PRIMARY] = self.primary

    @staticmethod
    def report_primary(bag: MutableMapping[str, str], epoch: str, outcome: str) -> None:
        """The restoring unit, not the leader: ``outcome`` a timeline or ``failed``."""
        value = f"{epoch}:{outcome}"
        if bag.get(_UNIT_PRIMARY) != value:
            bag[_UNIT_PRIMARY] = value

    @staticmethod
    def stalled_since(bag: MutableMapping[str, str], now: str | None) -> str:
        """The recorded first sighting of a stalled re-creation; ``now`` records it when
        none is (None forgets it: not stalled)."""
        seen = bag.get(_UNIT_STALLED_SINCE) or ""
        if now is None:
            if seen:
                bag[_UNIT_STALLED_SINCE] = ""
            return ""
        if not seen:
            bag[_UNIT_STALLED_SINCE] = now
            return now
        return seen

    def primary_report(self, epoch: str) -> str:
        """What the restoring unit reported for ``epoch`` ("" nothing yet)."""
        reported, _, outcome = self.primary.partition(":")
        return outcome if reported == epoch else ""

    @staticmethod
    def clear(bag: MutableMapping[str, str]) -> None:
        for key in (_UNIT_JOINED, _UNIT_MOVED_DATA, _UNIT_DONE, _UNIT_PRIMARY, _UNIT_STALLED_SINCE):
            if bag.get(key):
                bag[key] = ""


@dataclass(frozen=True)
class ReplicaSet:
    """The backup set new replicas restore after a restore (``replica-backup-set``), and
    since when (``replica-set-since``, a label's ``YYYYMMDD-HHMMSS``)."""

    label: str
    since: str

    @classmethod
    def read(cls, app: Mapping[str, str]) -> ReplicaSet | None:
        label = app.get(_REPLICA_SET) or ""
        return cls(label, app.get(_REPLICA_SET_SINCE) or "") if label else None

    def write(self, app: MutableMapping[str, str]) -> None:
        app[_REPLICA_SET] = self.label
        app[_REPLICA_SET_SINCE] = self.since

    @staticmethod
    def clear(app: MutableMapping[str, str]) -> None:
        for key in (_REPLICA_SET, _REPLICA_SET_SINCE):
            if app.get(key):
                app[key] = ""

    def superseded_by(self, bags: Mapping[str, Mapping[str, str]]) -> str | None:
        """The label of a backup a unit took since the restore ended (on the restored
        timeline, so pgBackRest's newest set is one a standby can follow), else None.
        A label's last part (a differential's or incremental's own, after its full's and
        ``_``) is when it started, ``YYYYMMDD-HHMMSS`` (UTC): their order is their time's."""
        for bag in bags.values():
            taken = bag.get(_UNIT_BACKUP_TAKEN) or ""
            started = taken.rsplit("_", 1)[-1][: len(self.since)]
            if self.since and started >= self.since:
                return taken
        return None


def record_backup_taken(unit: MutableMapping[str, str], label: str) -> None:
    """This unit took backup ``label`` (create-backup)."""
    unit[_UNIT_BACKUP_TAKEN] = label
