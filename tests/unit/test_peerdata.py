"""The local peer-data store: Juju's bag semantics, persisted, safe against two writers."""

from __future__ import annotations

import multiprocessing
import stat
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
