"""One backup at a time per cluster: a claim object in the repository
(docs/behaviour/create-backup.md#step-9-one-backup-at-a-time).

Why the repository, and not the peer bags or pgBackRest's lock:

- Juju commits the bag writes of an action only when the action ends, so a peer never
  sees ``creating-backup`` while the backup runs; the bags cannot keep two units apart.
- pgBackRest 2.45's backup lock is a file under the unit's own ``lock-path``: two hosts
  backing up into one stanza do not exclude each other (``info``'s
  ``status.lock.backup.held`` is only this host's lock).
- Every unit that may back up already reaches the repository, and S3 (AWS since 2020,
  rclone, MinIO, Ceph) lists an object as soon as its PUT returned.

The claim, under ``<path>/backup/<stanza>/backup-claims/``:

1. look: a live ``running`` claim of another unit refuses at once; a live ``starting``
   one (another unit is at step 2 or 3 right now) means "back off and look again";
2. write this unit's claim as ``starting``;
3. look again: no other live claim -> this unit won; it writes its ``running`` claim,
   looks a last time (another ``running`` claim: step back, see :func:`_run`), then
   removes its ``starting`` one.
   Any other claim -> withdraw (delete this unit's claim) and back off a random moment.

Two units that both won would each have looked after their own write; the later writer's
look comes after the earlier writer's write, and a winner never withdraws, so the later
one saw the earlier's claim and did not win. Two units that start in the same instant
both see each other, both withdraw, and the random back-off lets one of them win on a
later round; the other then finds its ``running`` claim and is refused.

A claim is all in its object's key (unit, start, state): a look is one listing.

A claim is stale, and removed by whoever finds it, when its unit is this unit (a unit
runs one action at a time: Juju's uniter, the local runtime's cluster lock), when its
unit is no longer in the cluster, or when it is older than a backup can run
(:data:`RUNNING_STALE_AFTER`; :data:`STARTING_STALE_AFTER` for a unit that died between
steps 2 and 3).
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from pgbackups.core.host import ObjectStore, ObjectStoreError
from pgbackups.core.ids import format_id

log = logging.getLogger(__name__)

CLAIMS_FOLDER = "backup-claims"
STARTING = "starting"
RUNNING = "running"
# Longer than pgBackRest is let run a backup (adapters.pgbackrest.Timeouts.backup, 6 h):
# a claim this old belongs to a backup that has been stopped, or to a unit that died.
RUNNING_STALE_AFTER = timedelta(hours=7)
# Steps 2 and 3 take a few requests; a claim still "starting" after this long belongs to a
# unit that died in between (minutes, not seconds: units' clocks may differ a little).
STARTING_STALE_AFTER = timedelta(minutes=5)
# Rounds of step 1 to 3 before giving up, and the random back-off between two rounds:
# wide enough that two units rarely come back within one round trip of each other.
ATTEMPTS = 6
BACKOFF_SECONDS = (0.2, 2.0)
# Module-level so that a test can make the back-off instant or deterministic.
SLEEP: Callable[[float], None] = time.sleep
JITTER: Callable[[float, float], float] = random.SystemRandom().uniform


@dataclass(frozen=True)
class Claim:
    """A claim is all in its key, ``<prefix><unit, URL-quoted>.<started>.<state>``, so a
    look is one listing and never reads an object while another unit writes it (rclone
    serves a GET of an object being replaced with a truncated body)."""

    prefix: str
    unit: str
    started: datetime  # aware, UTC
    state: str  # STARTING | RUNNING
    # This unit's "starting" claim could not be removed once it won: release removes it.
    starting_left: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        unit = urllib.parse.quote(self.unit, safe="")
        return f"{self.prefix}{unit}.{self.started.astimezone(UTC):{_STAMP}}.{self.state}"

    def describe(self) -> str:
        if self.state == RUNNING:
            return f"{self.unit} started one at {format_id(self.started)}"
        return f"{self.unit} is starting one at the same time"

    def body(self) -> bytes:
        """For a person looking at the bucket; never read back."""
        doc = {"unit": self.unit, "started": self.started.isoformat(), "state": self.state}
        return (json.dumps(doc, sort_keys=True) + "\n").encode()

    def becomes(self, state: str) -> Claim:
        return Claim(self.prefix, self.unit, self.started, state)


@dataclass(frozen=True)
class Refused:
    """Another unit runs (or is starting) a backup: ``reason`` names it."""

    reason: str


_STAMP = "%Y%m%dT%H%M%S%fZ"


def claims_prefix(stanza_prefix: str) -> str:
    """``stanza_prefix`` is ``<path>/backup/<stanza>`` as an object key (no trailing /)."""
    return f"{stanza_prefix.rstrip('/')}/{CLAIMS_FOLDER}/"


def take(
    store: ObjectStore,
    prefix: str,
    unit: str,
    now: Callable[[], datetime],
    members: Collection[str],
) -> Claim | Refused:
    """This unit's claim (``running``), or why not. ``members`` are the units of the
    cluster other than this one. Raises ObjectStoreError."""
    others: list[Claim] = []
    for attempt in range(1, ATTEMPTS + 1):
        others = _live_claims(store, prefix, unit, now(), members)
        refusal = _running(others)
        if refusal is not None:
            return refusal
        if not others:
            mine = Claim(prefix, unit, now(), STARTING)
            store.put(mine.key, mine.body())
            others = _live_claims(store, prefix, unit, now(), members, skip=(mine,))
            if not others:
                return _run(store, prefix, unit, now, members, mine=mine, attempt=attempt)
            store.delete(mine.key)
            refusal = _running(others)
            if refusal is not None:
                return refusal
        log.info(
            "Another unit is starting a backup at the same time (%s); looking again",
            ", ".join(sorted({c.unit for c in others})),
        )
        SLEEP(JITTER(*BACKOFF_SECONDS))
    return Refused(others[0].describe() if others else "another unit is starting one")


def _run(
    store: ObjectStore,
    prefix: str,
    unit: str,
    now: Callable[[], datetime],
    members: Collection[str],
    *,
    mine: Claim,
    attempt: int,
) -> Claim | Refused:
    """Step 3 won: the ``running`` claim, written before the ``starting`` one goes (this
    unit's claim is listed at every moment from its first write on), then one last look.

    The last look only matters when a ``starting`` claim was removed as stale while its
    unit still worked (a unit frozen for minutes between its write and its look, or a
    clock minutes ahead): of two units that both wrote ``running``, the later one sees
    the other's here and steps back, since a ``running`` claim is never taken for stale
    within a backup's time."""
    running = mine.becomes(RUNNING)
    store.put(running.key, running.body())
    rivals = _live_claims(store, prefix, unit, now(), members, skip=(mine, running))
    rival = _running(rivals)
    if rival is not None:
        log.warning("Another unit claimed a backup at the same time: %s", rival.reason)
        for claim in (running, mine):
            store.delete(claim.key)
        return rival
    try:
        store.delete(mine.key)
    except ObjectStoreError as exc:
        # Harmless while the running claim is there; release tries again.
        log.warning("The starting claim %s stays for now: %s", mine.key, exc)
        running = replace(running, starting_left=True)
    log.info("Backup claim %s taken (round %d)", running.key, attempt)
    return running


def release(store: ObjectStore, claim: Claim) -> bool:
    """Remove this unit's claim. False, logged, when S3 refused: the caller keeps a note
    for update-status to try again (the claim is also stale for everyone once this unit
    backs up again, or after :data:`RUNNING_STALE_AFTER`)."""
    keys = [claim.key] + ([claim.becomes(STARTING).key] if claim.starting_left else [])
    try:
        for key in keys:
            store.delete(key)
    except ObjectStoreError as exc:
        log.warning("The backup claim %s could not be removed: %s", claim.key, exc)
        return False
    return True


def release_unit(store: ObjectStore, prefix: str, unit: str) -> None:
    """Remove every claim of ``unit``, whose backup is over (killed before it could remove
    its claim, or S3 refused the removal). Raises ObjectStoreError."""
    for claim in _claims(store, prefix):
        if claim.unit == unit:
            log.warning("Removing the backup claim %s of a backup that is over", claim.key)
            store.delete(claim.key)


def _running(claims: list[Claim]) -> Refused | None:
    running = [c for c in claims if c.state == RUNNING]
    return Refused(running[0].describe()) if running else None


def _claims(store: ObjectStore, prefix: str) -> list[Claim]:
    claims = []
    for key in store.list_keys(prefix):
        claim = parse_key(prefix, key)
        if claim is None:
            log.warning("Ignoring %s: not a backup claim", key)
            continue
        claims.append(claim)
    return claims


def _live_claims(
    store: ObjectStore,
    prefix: str,
    unit: str,
    now: datetime,
    members: Collection[str],
    *,
    skip: Collection[Claim] = (),
) -> list[Claim]:
    """The other units' claims that may still be backing up (this unit's own ``skip``
    left out); stale ones are removed."""
    live = []
    for claim in _claims(store, prefix):
        if claim in skip:
            continue
        why = _stale(claim, unit, now, members)
        if why is None:
            live.append(claim)
            continue
        log.warning("Removing the stale backup claim %s: %s", claim.key, why)
        store.delete(claim.key)
    return live


def _stale(claim: Claim, unit: str, now: datetime, members: Collection[str]) -> str | None:
    if claim.unit == unit:
        return "this unit runs one action at a time, so its backup is over"
    if claim.unit not in members:
        return f"{claim.unit} is no longer a unit of this cluster"
    limit = RUNNING_STALE_AFTER if claim.state == RUNNING else STARTING_STALE_AFTER
    if now - claim.started > limit:
        return f"{claim.state} since {format_id(claim.started)}, longer than {limit}"
    return None


def parse_key(prefix: str, key: str) -> Claim | None:
    """The claim a key names, or None for anything else under the prefix."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].rsplit(".", 2)  # a unit name may hold a dot
    if len(parts) != 3 or parts[2] not in (STARTING, RUNNING):
        return None
    try:
        started = datetime.strptime(parts[1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    unit = urllib.parse.unquote(parts[0])
    if not unit or urllib.parse.quote(unit, safe="") != parts[0]:
        return None
    return Claim(prefix, unit, started, parts[2])
