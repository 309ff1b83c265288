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
3. look again: no other live claim -> this unit won; its claim becomes ``running``.
   Any other claim -> withdraw (delete this unit's claim) and back off a random moment.

Two units that both won would each have looked after their own write; the later writer's
look comes after the earlier writer's write, and a winner never withdraws, so the later
one saw the earlier's claim and did not win. Two units that start in the same instant
both see each other, both withdraw, and the random back-off lets one of them win on a
later round; the other then finds its ``running`` claim and is refused.

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
from collections.abc import Callable, Collection
from dataclasses import dataclass
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
    key: str
    unit: str
    started: datetime  # aware, UTC
    state: str  # STARTING | RUNNING

    def describe(self) -> str:
        if self.state == RUNNING:
            return f"{self.unit} started one at {format_id(self.started)}"
        return f"{self.unit} is starting one at the same time"

    def body(self) -> bytes:
        doc = {"unit": self.unit, "started": self.started.isoformat(), "state": self.state}
        return (json.dumps(doc, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Refused:
    """Another unit runs (or is starting) a backup: ``reason`` names it."""

    reason: str


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
            started = now()
            mine = Claim(_key(prefix, unit, started), unit, started, STARTING)
            store.put(mine.key, mine.body())
            others = _live_claims(store, prefix, unit, now(), members, mine=mine.key)
            if not others:
                running = Claim(mine.key, unit, started, RUNNING)
                store.put(running.key, running.body())
                log.info("Backup claim %s taken (round %d)", running.key, attempt)
                return running
            store.delete(mine.key)
            refusal = _running(others)
            if refusal is not None:
                return refusal
        log.info(
            "Another unit is starting a backup at the same time (%s); looking again",
            ", ".join(c.unit for c in others),
        )
        SLEEP(JITTER(*BACKOFF_SECONDS))
    return Refused(others[0].describe() if others else "another unit is starting one")


def release(store: ObjectStore, claim: Claim) -> None:
    """Remove this unit's claim; a failure is logged (the claim is stale for everyone once
    this unit backs up again, or after :data:`RUNNING_STALE_AFTER`)."""
    try:
        store.delete(claim.key)
    except ObjectStoreError as exc:
        log.warning("The backup claim %s could not be removed: %s", claim.key, exc)


def release_unit(store: ObjectStore, prefix: str, unit: str) -> None:
    """Remove every claim of ``unit`` (its backup was killed before it could release it).
    Raises ObjectStoreError."""
    for claim in _claims(store, prefix):
        if claim.unit == unit:
            log.warning("Removing the backup claim %s of a backup that was killed", claim.key)
            store.delete(claim.key)


def _key(prefix: str, unit: str, started: datetime) -> str:
    # One unit runs one action at a time, so its name and the microsecond are unique.
    return f"{prefix}{unit.replace('/', '-')}.{started.astimezone(UTC):%Y%m%dT%H%M%S%fZ}"


def _running(claims: list[Claim]) -> Refused | None:
    running = [c for c in claims if c.state == RUNNING]
    return Refused(running[0].describe()) if running else None


def _claims(store: ObjectStore, prefix: str, *, mine: str | None = None) -> list[Claim]:
    """Every claim under ``prefix`` but this unit's own ``mine`` (not read again)."""
    claims = []
    for key in store.list_keys(prefix):
        if key == mine:
            continue
        body = store.get(key)
        if body is None:  # withdrawn or released between the listing and the read
            continue
        claim = _parse(key, body)
        if claim is None:
            log.warning("Ignoring and removing %s: not a backup claim", key)
            store.delete(key)
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
    mine: str | None = None,
) -> list[Claim]:
    """The other units' claims that may still be backing up; stale ones are removed."""
    live = []
    for claim in _claims(store, prefix, mine=mine):
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


def _parse(key: str, body: bytes) -> Claim | None:
    try:
        doc = json.loads(body)
        unit, state = str(doc["unit"]), str(doc["state"])
        started = datetime.fromisoformat(str(doc["started"]))
    except (ValueError, KeyError, TypeError):
        return None
    if state not in (STARTING, RUNNING) or started.tzinfo is None:
        return None
    return Claim(key, unit, started.astimezone(UTC), state)
