"""The one-backup-per-cluster claim in the repository (core/backup_claim.py): every branch
with the recording store, and two units interleaved request by request in every order
the scheduler below can produce."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from fakes import NOW, FakeObjectStore

from pgbackups.core import backup_claim
from pgbackups.core.backup_claim import RUNNING, STARTING, Claim, Refused
from pgbackups.core.host import ObjectStoreError

PREFIX = "pg/backup/local.main/backup-claims/"
MINE = f"{PREFIX}main%2F0.20261128T150000000000Z"
MEMBERS = {"main.x/0", "main/1", "main/2"}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The back-off is a module constant meant to be overridden: recorded, not slept."""
    waits: list[float] = []
    monkeypatch.setattr(backup_claim, "SLEEP", waits.append)
    monkeypatch.setattr(backup_claim, "JITTER", lambda low, high: low)
    yield waits


def claim_of(unit: str, state: str, started: datetime = NOW) -> tuple[str, bytes]:
    claim = Claim(PREFIX, unit, started, state)
    return claim.key, claim.body()


def take(store: FakeObjectStore, unit: str = "main/0") -> Claim | Refused:
    return backup_claim.take(store, PREFIX, unit, lambda: NOW, MEMBERS)


def test_alone_the_unit_wins_and_its_claim_says_running() -> None:
    calls: list[str] = []
    store = FakeObjectStore(calls)
    claim = take(store)
    assert claim == Claim(PREFIX, "main/0", NOW, RUNNING)
    assert claim.key == f"{MINE}.running"
    assert calls == [
        f"object_store.list_keys({PREFIX})",
        f"object_store.put({MINE}.starting)",
        f"object_store.list_keys({PREFIX})",
        f"object_store.put({MINE}.running)",  # before the starting one goes
        f"object_store.list_keys({PREFIX})",  # the last look
        f"object_store.delete({MINE}.starting)",
    ]
    assert set(store.objects) == {f"{MINE}.running"}
    assert b'"state": "running"' in store.objects[f"{MINE}.running"]
    backup_claim.release(store, claim)
    assert store.objects == {}


def test_a_running_claim_of_another_unit_refuses_before_anything_is_written() -> None:
    calls: list[str] = []
    key, body = claim_of("main/1", RUNNING, NOW - timedelta(hours=1))
    store = FakeObjectStore(calls, objects={key: body})
    assert take(store) == Refused("main/1 started one at 2026-11-28T14:00:00Z")
    assert calls == [f"object_store.list_keys({PREFIX})"]
    assert store.objects == {key: body}


def test_a_starting_claim_means_back_off_and_look_again(no_waiting: list[float]) -> None:
    calls: list[str] = []
    key, body = claim_of("main/1", STARTING)
    store = FakeObjectStore(calls, objects={key: body})

    def other_unit_wins(s: FakeObjectStore) -> None:
        if len(no_waiting) == 1:  # after our first back-off, main/1's claim is running
            running = Claim(PREFIX, "main/1", NOW, RUNNING)
            s.objects[running.key] = running.body()
            s.objects.pop(key)

    store.after_list.append(other_unit_wins)
    assert take(store) == Refused("main/1 started one at 2026-11-28T15:00:00Z")
    assert no_waiting == [backup_claim.BACKOFF_SECONDS[0]] * 2
    assert f"object_store.put({MINE}.starting)" not in calls, "no claim while one starts"


def test_two_units_that_see_each_other_withdraw_and_the_first_back_wins(
    no_waiting: list[float],
) -> None:
    calls: list[str] = []
    store = FakeObjectStore(calls)
    other_key, other_body = claim_of("main/1", STARTING)
    rounds = {"n": 0}

    def the_other_unit(s: FakeObjectStore) -> None:
        rounds["n"] += 1
        if rounds["n"] == 1:  # between our first look and our write: main/1 writes too
            s.objects[other_key] = other_body
        if rounds["n"] == 2:  # main/1 saw ours as well and withdrew
            s.objects.pop(other_key, None)

    store.after_list.append(the_other_unit)
    claim = take(store)
    assert isinstance(claim, Claim) and claim.state == RUNNING
    assert calls.count(f"object_store.delete({MINE}.starting)") == 2, "withdrawn, then replaced"
    assert no_waiting == [backup_claim.BACKOFF_SECONDS[0]]


def test_gives_up_after_every_round_collides(no_waiting: list[float]) -> None:
    calls: list[str] = []
    key, body = claim_of("main/1", STARTING)
    store = FakeObjectStore(calls, objects={key: body})
    assert take(store) == Refused("main/1 is starting one at the same time")
    assert len(no_waiting) == backup_claim.ATTEMPTS


@pytest.mark.parametrize(
    ("unit", "state", "age", "why"),
    [
        ("main/0", RUNNING, timedelta(minutes=1), "this unit runs one action at a time"),
        ("main/9", RUNNING, timedelta(minutes=1), "main/9 is no longer a unit"),
        ("main/1", RUNNING, timedelta(hours=7, seconds=1), "running since"),
        ("main/1", STARTING, timedelta(minutes=5, seconds=1), "starting since"),
    ],
)
def test_stale_claims_are_removed_and_do_not_refuse(
    unit: str, state: str, age: timedelta, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    key, body = claim_of(unit, state, NOW - age)
    store = FakeObjectStore([], objects={key: body})
    claim = take(store)
    assert isinstance(claim, Claim)
    assert set(store.objects) == {f"{MINE}.running"}
    assert why in caplog.text


@pytest.mark.parametrize(
    ("state", "age"),
    [(RUNNING, timedelta(hours=6, minutes=59)), (STARTING, timedelta(minutes=4, seconds=59))],
)
def test_claims_younger_than_their_limit_are_live(state: str, age: timedelta) -> None:
    key, body = claim_of("main/1", state, NOW - age)
    store = FakeObjectStore([], objects={key: body})
    assert isinstance(take(store), Refused)
    assert store.objects == {key: body}


@pytest.mark.parametrize(
    "name",
    ["junk", "main%2F1.20261128T150000000000Z", "main%2F1.yesterday.running", "main/1.x.y.z"],
)
def test_an_object_that_is_no_claim_is_ignored_and_kept(name: str) -> None:
    store = FakeObjectStore([], objects={f"{PREFIX}{name}": b""})
    assert isinstance(take(store), Claim)
    assert set(store.objects) == {f"{PREFIX}{name}", f"{MINE}.running"}


def test_a_unit_name_with_a_dot_or_a_slash_survives_the_key() -> None:
    claim = Claim(PREFIX, "main.x/0", NOW, STARTING)
    assert backup_claim.parse_key(PREFIX, claim.key) == claim


def test_a_starting_claim_that_cannot_be_removed_once_won_goes_with_the_release() -> None:
    calls: list[str] = []
    store = FakeObjectStore(calls)
    store.after_list.append(
        lambda s: setattr(s, "delete_error", "slow down") if len(calls) > 4 else None
    )
    claim = take(store)
    assert isinstance(claim, Claim) and claim.starting_left
    assert set(store.objects) == {f"{MINE}.starting", f"{MINE}.running"}
    store.after_list.clear()
    store.delete_error = None
    assert backup_claim.release(store, claim)
    assert store.objects == {}


def test_the_last_look_steps_back_from_a_rival_that_also_wrote_running() -> None:
    """Only when a starting claim was taken for stale while its unit still worked (frozen
    for minutes, or a clock minutes off): main/1 removed ours, wrote and won; we won too."""
    calls: list[str] = []
    store = FakeObjectStore(calls)
    rival_key, rival_body = claim_of("main/1", RUNNING)

    def main_1_wins_meanwhile(s: FakeObjectStore) -> None:
        if calls.count(f"object_store.list_keys({PREFIX})") == 2:
            s.objects[rival_key] = rival_body

    store.after_list.append(main_1_wins_meanwhile)
    assert take(store) == Refused("main/1 started one at 2026-11-28T15:00:00Z")
    assert set(store.objects) == {rival_key}, "both of ours removed, main/1's kept"
    assert calls[-2:] == [
        f"object_store.delete({MINE}.running)",
        f"object_store.delete({MINE}.starting)",
    ]


def test_s3_errors_propagate() -> None:
    store = FakeObjectStore([], list_error="connection refused")
    with pytest.raises(ObjectStoreError, match="refused"):
        take(store)


def test_a_release_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeObjectStore([], delete_error="AccessDenied")
    backup_claim.release(store, Claim(PREFIX, "main/0", NOW, RUNNING))
    assert "could not be removed: AccessDenied" in caplog.text


def test_release_unit_removes_only_that_units_claims() -> None:
    mine, mine_body = claim_of("main/0", RUNNING)
    other, other_body = claim_of("main/1", RUNNING)
    store = FakeObjectStore([], objects={mine: mine_body, other: other_body})
    backup_claim.release_unit(store, PREFIX, "main/0")
    assert set(store.objects) == {other}


def test_the_stale_limit_outlasts_the_longest_backup_pgbackrest_is_let_run() -> None:
    from pgbackups.adapters.pgbackrest import Timeouts

    assert timedelta(seconds=Timeouts().backup) < backup_claim.RUNNING_STALE_AFTER


# ---------------------------------------------------------------------------
# Two or three units at once, interleaved request by request


class SteppedStore(FakeObjectStore):
    """Each request waits for the scheduler's go: the test decides the interleaving."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__([])
        self.scheduler = scheduler
        self.lock = threading.Lock()

    def _step(self) -> None:
        self.scheduler.wait_turn()

    def put(self, key: str, body: bytes) -> None:
        self._step()
        with self.lock:
            super().put(key, body)

    def get(self, key: str) -> bytes | None:
        self._step()
        with self.lock:
            return super().get(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        self._step()
        with self.lock:
            return super().list_keys(prefix)

    def delete(self, key: str) -> None:
        self._step()
        with self.lock:
            super().delete(key)


class Scheduler:
    """Lets exactly one waiting thread make its next request, picked at random."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.cond = threading.Condition()
        self.waiting: set[str] = set()
        self.turn: str | None = None

    def wait_turn(self) -> None:
        me = threading.current_thread().name
        with self.cond:
            self.waiting.add(me)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == me)
            self.turn = None
            self.waiting.discard(me)
            self.cond.notify_all()

    def run(self, contenders: dict[str, Callable[[], None]]) -> None:
        threads = [threading.Thread(target=f, name=n, daemon=True) for n, f in contenders.items()]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            with self.cond:
                alive = {t.name for t in threads if t.is_alive()}
                # every live thread is either waiting for a turn or about to (or finishing)
                self.cond.wait_for(lambda: self.turn is None, timeout=1.0)
                self.cond.wait_for(
                    lambda: (
                        self.waiting >= {t.name for t in threads if t.is_alive()}
                        or not any(t.is_alive() for t in threads)
                    ),
                    timeout=0.05,
                )
                if self.waiting:
                    self.turn = self.random.choice(sorted(self.waiting & alive or self.waiting))
                    self.cond.notify_all()
        for t in threads:
            t.join(timeout=5)


@pytest.mark.parametrize("seed", range(60))
def test_never_two_winners_whatever_the_interleaving(seed: int) -> None:
    scheduler = Scheduler(seed)
    store = SteppedStore(scheduler)
    outcomes: dict[str, Claim | Refused] = {}
    units = ["main/1", "main/2", "main.x/0"] if seed % 3 == 0 else ["main/1", "main/2"]

    def contender(unit: str) -> Callable[[], None]:
        def run() -> None:
            members = (MEMBERS | {"main/0"}) - {unit}
            outcomes[unit] = backup_claim.take(store, PREFIX, unit, lambda: NOW, members)

        return run

    scheduler.run({u: contender(u) for u in units})
    assert set(outcomes) == set(units)
    winners = [u for u, o in outcomes.items() if isinstance(o, Claim)]
    assert len(winners) <= 1, outcomes
    if winners:
        [winner] = winners
        claim = outcomes[winner]
        assert isinstance(claim, Claim)
        assert set(store.objects) == {claim.key}
        for unit, outcome in outcomes.items():
            if unit != winner:
                assert isinstance(outcome, Refused)
    else:
        assert not store.objects, "every loser withdrew its claim"
