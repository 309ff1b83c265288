"""The local peer-data store: Juju's bag semantics, persisted, safe against two writers."""

from __future__ import annotations

import multiprocessing
import stat
import time
from pathlib import Path

import pytest

from pgbackups.local.runtime.peerdata import DeferredEvent, PeerDataStore


def test_bags_persist_and_empty_string_deletes(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    app = store.app_bag(writable=True)
    app["stanza"] = "local.main"
    store.unit_bag("main/0")["connectivity"] = "off"

    again = PeerDataStore(tmp_path / "peers.json")
    assert dict(again.app_bag(writable=False)) == {"stanza": "local.main"}
    assert again.other_unit_bags("main/1") == {"main/0": {"connectivity": "off"}}
    assert again.other_unit_bags("main/0") == {}

    app["stanza"] = ""
    assert "stanza" not in again.app_bag(writable=False)
    assert stat.S_IMODE((tmp_path / "peers.json").stat().st_mode) == 0o600


def test_non_leader_cannot_write_the_app_bag(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    with pytest.raises(PermissionError, match="only the leader"):
        store.app_bag(writable=False)["stanza"] = "x"
    with pytest.raises(TypeError):
        store.unit_bag("main/0")["n"] = 1  # type: ignore[assignment]


def test_deferred_events_are_kept_once_in_order_and_taken(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    first = DeferredEvent("s3-credentials-changed", {}, "cluster not initialised")
    second = DeferredEvent("peer-changed", {}, "primary TLS server not up")
    store.defer("main/1", first)
    store.defer("main/1", second)
    store.defer("main/1", DeferredEvent("s3-credentials-changed", {}, "still waiting"))
    assert [e.name for e in store.deferred("main/1")] == ["s3-credentials-changed", "peer-changed"]
    assert store.deferred("main/1")[0].reason == "still waiting"
    assert store.deferred("main/0") == []

    taken = store.take_deferred("main/1")
    assert [e.name for e in taken] == ["s3-credentials-changed", "peer-changed"]
    assert store.deferred("main/1") == []


def test_forget_unit_drops_its_bag_and_events(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    store.unit_bag("main/1")["tls"] = "enabled"
    store.defer("main/1", DeferredEvent("peer-changed", {}, "x"))
    store.forget_unit("main/1")
    assert store.other_unit_bags("main/0") == {}
    assert store.deferred("main/1") == []


def _writer(path: str, unit: str, count: int) -> None:
    bag = PeerDataStore(Path(path)).unit_bag(unit)
    for i in range(count):
        bag[f"k{i}"] = str(i)


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "peers.json")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(path, f"main/{n}", 40)) for n in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    bags = PeerDataStore(Path(path)).other_unit_bags("nobody")
    assert len(bags["main/0"]) == 40
    assert len(bags["main/1"]) == 40


def _turn(path: str, unit: str, log: str, rounds: int) -> None:
    store = PeerDataStore(Path(path))
    for _ in range(rounds):
        with store.unit_turn(unit):
            with open(log, "a") as out:
                out.write("in\n")
            time.sleep(0.01)
            with open(log, "a") as out:
                out.write("out\n")


def test_one_event_at_a_time_per_unit_across_processes(tmp_path: Path) -> None:
    """Two deliverers (a command and the agent) never run two events of one unit at
    once: every "in" is followed by its "out" before the next "in"."""
    path, log = str(tmp_path / "peers.json"), str(tmp_path / "turns")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_turn, args=(path, "main/0", log, 15)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    lines = Path(log).read_text().split()
    assert lines == ["in", "out"] * 30


def test_another_unit_does_not_wait(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    other = PeerDataStore(tmp_path / "peers.json")
    with store.unit_turn("main/0"), other.unit_turn("main/1"):
        pass  # would block forever if the turn were the cluster's


def test_a_unit_turn_refuses_a_name_that_is_a_path(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    for bad in ("", "../x", "main/0\n"):
        with pytest.raises(ValueError, match="not a unit name"), store.unit_turn(bad):
            pass
