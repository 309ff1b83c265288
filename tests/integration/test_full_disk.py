"""A disk that fills up, for real: a small tmpfs. Every state, peer-data and configuration
write of the local runtime is atomic, so a write that fails leaves the previous file as
it was (and no temporary file behind), and the user gets one line naming the file and
the cause, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgbackups.adapters.files import write_atomically
from pgbackups.local.errors import WriteFailed
from pgbackups.local.machinery.state import ClusterState, StateStore, UnitRecord
from pgbackups.local.runtime.peerdata import PeerDataStore

pytestmark = pytest.mark.real

NO_SPACE = "No space left on device"


def _state(name: str = "full") -> ClusterState:
    return ClusterState(
        name=name,
        uuid="00000000-0000-0000-0000-000000000000",
        created="2026-12-01T00:00:00Z",
        base_port=30000,
        etcd_client_port=30000,
        etcd_peer_port=30001,
        s3_port=30002,
        bucket="pgbackups",
        tls=False,
        leader=f"{name}/0",
        units={f"{name}/{i}": UnitRecord(i, 30010 + i, 30020 + i, 30030 + i) for i in (0, 1)},
        next_index=2,
    )


def test_a_file_written_on_a_full_disk_keeps_its_old_text(tmpfs: object, tmp_path: Path) -> None:
    disk = tmpfs.mount(tmp_path / "disk", "256k")  # type: ignore[attr-defined]
    target = disk / "patroni.yml"
    write_atomically("old: 1\n", target, None, 0o600)
    tmpfs.fill(disk)  # type: ignore[attr-defined]
    with pytest.raises(OSError) as err:
        write_atomically("new: 2\n" * 4096, target, None, 0o600)
    assert (err.value.filename, err.value.strerror) == (str(target), NO_SPACE)
    assert target.read_text() == "old: 1\n"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "patroni.yml"], "no temporary"


def test_a_state_write_on_a_full_disk_is_one_clear_error(tmpfs: object, tmp_path: Path) -> None:
    disk = tmpfs.mount(tmp_path / "disk", "256k")  # type: ignore[attr-defined]
    store = StateStore(disk / "state.json", disk / ".state.lock")
    store.create(_state())
    filler = tmpfs.fill(disk)  # type: ignore[attr-defined]
    with pytest.raises(WriteFailed) as err, store.transaction() as state:
        state.leader = "full/1"
    assert str(err.value) == (
        f"could not write the cluster state {disk / 'state.json'}: {NO_SPACE}; it still "
        "holds what it held before (free some space, then run the command again)"
    )
    assert store.load().leader == "full/0", "the previous state is readable"
    assert sorted(p.name for p in disk.iterdir()) == [".state.lock", "filler", "state.json"]
    filler.unlink()
    with store.transaction() as state:
        state.leader = "full/1"
    assert store.load().leader == "full/1", "once there is room, writes work again"


def test_a_peer_data_write_on_a_full_disk_is_one_clear_error(tmpfs: object, tmp_path: Path) -> None:
    disk = tmpfs.mount(tmp_path / "disk", "256k")  # type: ignore[attr-defined]
    peers = PeerDataStore(disk / "peers.json")
    peers.unit_bag("full/0")["connectivity"] = "off"
    tmpfs.fill(disk)  # type: ignore[attr-defined]
    with pytest.raises(WriteFailed) as err:
        peers.unit_bag("full/0")["creating-backup"] = "2026-12-01T00:00:00Z" * 200
    assert str(err.value).startswith(
        f"could not write the peer data {disk / 'peers.json'}: {NO_SPACE}; it still holds"
    )
    assert dict(peers.unit_bag("full/0")) == {"connectivity": "off"}


def test_the_cli_on_a_full_disk_says_which_file_and_why(tmpfs: object, tmp_path: Path) -> None:
    """``$PGBACKUPS_HOME`` on the full disk: a command that changes the state exits 1 with
    one line, and the state still says what it said."""
    home = tmpfs.mount(tmp_path / "home", "512k")  # type: ignore[attr-defined]
    root = home / "clusters" / "full"
    root.mkdir(parents=True)
    store = StateStore(root / "state.json", root / ".state.lock")
    store.create(_state())
    (root / ".op.lock").touch()
    tmpfs.fill(home)  # type: ignore[attr-defined]
    env = dict(os.environ, PGBACKUPS_HOME=str(home))
    res = subprocess.run(
        [sys.executable, "-m", "pgbackups", "leader", "--name", "full", "full/1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: could not write the cluster state {root / 'state.json'}: {NO_SPACE}; it "
        "still holds what it held before (free some space, then run the command again)"
    )
    assert json.loads((root / "state.json").read_text())["leader"] == "full/0"
