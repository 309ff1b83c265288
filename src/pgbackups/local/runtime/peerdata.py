"""Peer data and deferred events of a local cluster, persisted and safe against two commands.

Juju keeps an application bag (leader writes, all read) and one bag per unit, and
re-runs deferred events before the unit's next event. The local runtime keeps the same
in one JSON file per cluster, changed only under an exclusive ``flock`` and replaced
atomically, so two ``pgbackups`` commands never lose each other's writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgbackups.adapters import files
from pgbackups.local.errors import WriteFailed

APP = "app"
UNITS = "units"
DEFERRED = "deferred"


@dataclass(frozen=True)
class DeferredEvent:
    name: str  # e.g. "s3-credentials-changed"
    params: Mapping[str, str]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeferredEvent:
        return cls(str(data["name"]), dict(data.get("params", {})), str(data.get("reason", "")))


class PeerDataStore:
    """The peer bags and deferred events of one cluster, in ``path`` (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    @contextlib.contextmanager
    def unit_turn(self, unit: str) -> Iterator[None]:
        """One event at a time on ``unit``, whoever delivers it (a command, the agent's
        update-status pass, a test calling the runtime directly): Juju never runs two
        hooks or actions of one unit at once, and the core relies on it. Two at once
        stopped and moved a unit's data twice (the second found nothing to move and
        recorded no copy: the rollback had none to put back), or started two Patronis on
        one data directory. Blocks until the unit's current event ends."""
        if not unit or not all(c.isalnum() or c in "-_./" for c in unit) or ".." in unit:
            raise ValueError(f"not a unit name: {unit!r}")
        name = f"{self.path.name}.{unit.replace('/', '-')}.turn"
        # Beside the bags, in the cluster's folder (root's when we are root).
        fd = os.open(self.path.with_name(name), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock; the document is written back after."""
        # In the cluster's folder, root's when we are root; O_NOFOLLOW is a second line.
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            document = self._read()
            before = json.dumps(document, sort_keys=True)
            yield document
            if json.dumps(document, sort_keys=True) != before:
                self._write(document)
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault(APP, {})
        data.setdefault(UNITS, {})
        data.setdefault(DEFERRED, {})
        return data

    def _write(self, document: Mapping[str, Any]) -> None:
        """Atomically (a new temporary file, fsync, rename): on a full disk the bags keep
        what they held and the caller gets one clear error."""
        try:
            text = json.dumps(document, indent=2, sort_keys=True)
            files.write_atomically(text, self.path, None, 0o600)
        except OSError as exc:
            raise WriteFailed("the peer data", exc) from exc

    # -- bags -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._locked() as doc:
            return json.loads(json.dumps(doc))  # type: ignore[no-any-return]

    def app_bag(self, *, writable: bool) -> Bag:
        return Bag(self, (APP,), writable=writable)

    def unit_bag(self, unit: str) -> Bag:
        return Bag(self, (UNITS, unit), writable=True)

    def other_unit_bags(self, unit: str) -> dict[str, dict[str, str]]:
        units: dict[str, dict[str, str]] = self.snapshot()[UNITS]
        return {name: dict(bag) for name, bag in units.items() if name != unit}

    def forget_unit(self, unit: str) -> None:
        """A removed unit's bag and deferred events go with it."""
        with self._locked() as doc:
            doc[UNITS].pop(unit, None)
            doc[DEFERRED].pop(unit, None)

    # -- deferred events --------------------------------------------------------

    def defer(self, unit: str, event: DeferredEvent) -> None:
        """Keep ``event`` for ``unit``; the same event with the same params is kept once."""
        with self._locked() as doc:
            queue: list[dict[str, Any]] = doc[DEFERRED].setdefault(unit, [])
            entry = event.to_json()
            same = [e for e in queue if e["name"] == event.name and e["params"] == entry["params"]]
            if not same:
                queue.append(entry)
            else:
                same[0]["reason"] = event.reason

    def take_deferred(self, unit: str) -> list[DeferredEvent]:
        """Remove and return the unit's deferred events, oldest first."""
        with self._locked() as doc:
            queue = doc[DEFERRED].pop(unit, [])
        return [DeferredEvent.from_json(e) for e in queue]

    def deferred(self, unit: str) -> list[DeferredEvent]:
        return [DeferredEvent.from_json(e) for e in self.snapshot()[DEFERRED].get(unit, [])]


class Bag(MutableMapping[str, str]):
    """A live view of one bag: every read sees the file, every write is persisted at once.

    As in Juju, setting a key to "" deletes it.
    """

    def __init__(self, store: PeerDataStore, where: tuple[str, ...], *, writable: bool) -> None:
        self._store = store
        self._where = where
        self._writable = writable

    def _bag(self, doc: dict[str, Any]) -> dict[str, str]:
        node: dict[str, Any] = doc
        for part in self._where:
            node = node.setdefault(part, {})
        return node

    def __getitem__(self, key: str) -> str:
        with self._store._locked() as doc:
            return self._bag(doc)[key]

    def __setitem__(self, key: str, value: str) -> None:
        self._check_writable()
        if not isinstance(value, str):
            raise TypeError(f"peer data values are strings, not {type(value).__name__}")
        with self._store._locked() as doc:
            if value == "":
                self._bag(doc).pop(key, None)
            else:
                self._bag(doc)[key] = value

    def __delitem__(self, key: str) -> None:
        self._check_writable()
        with self._store._locked() as doc:
            del self._bag(doc)[key]

    def __iter__(self) -> Iterator[str]:
        with self._store._locked() as doc:
            return iter(list(self._bag(doc)))

    def __len__(self) -> int:
        with self._store._locked() as doc:
            return len(self._bag(doc))

    def _check_writable(self) -> None:
        if not self._writable:
            raise PermissionError("only the leader writes the application peer data")
