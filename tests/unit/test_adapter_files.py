"""Writing configuration files: atomic, mode set before the text, and a link planted at
the target is replaced, never written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgbackups.adapters import processes
from pgbackups.adapters.files import (
    UnsafePath,
    config_owner,
    ensure_dir,
    open_beneath,
    open_dir_strict,
    read_text,
    write_atomically,
    write_if_changed,
)


def test_written_once_then_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "patroni.yml"
    assert write_if_changed("a: 1\n", path, None, 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_if_changed("a: 1\n", path, None, 0o600)
    assert write_if_changed("a: 2\n", path, None, 0o600)
    assert path.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["patroni.yml"]  # no temporary left


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "patroni.yml"
    path.symlink_to(victim)
    assert read_text(path) is None
    assert write_if_changed("a: 1\n", path, None, 0o600)
    assert not path.is_symlink() and path.read_text() == "a: 1\n"
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_link_at_the_folder_is_refused(tmp_path: Path) -> None:
    """The folder's own name may be the database user's to change: never followed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "conf").symlink_to(elsewhere)
    with pytest.raises(UnsafePath):
        write_atomically("x\n", tmp_path / "conf" / "patroni.yml", None, 0o600)
    assert list(elsewhere.iterdir()) == []


def test_ensure_dir_makes_then_sets_mode_through_the_descriptor(tmp_path: Path) -> None:
    made = ensure_dir(tmp_path / "d", 0o750)
    assert stat.S_IMODE(made.stat().st_mode) == 0o750
    ensure_dir(made, 0o700)  # an existing one of ours: its mode is set again
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_ensure_dir_refuses_a_link_and_leaves_its_target_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (tmp_path / "log").symlink_to(victim)
    with pytest.raises(UnsafePath):
        ensure_dir(tmp_path / "log", 0o700)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a folder of another user")
def test_ensure_dir_refuses_a_folder_of_another_owner(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, 65534, 65534)  # nobody's: not ours, not the owner we asked for
    with pytest.raises(UnsafePath, match="belongs to uid 65534"):
        ensure_dir(other, 0o700)
    assert stat.S_IMODE(other.stat().st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="root writing for the database user")
def test_config_owner_is_root_with_the_database_users_group(tmp_path: Path) -> None:
    db = processes.db_user()
    path = tmp_path / "pgbackrest.conf"
    write_atomically("secret\n", path, config_owner(db), 0o640)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, db.gid, 0o640)


def test_open_beneath_follows_no_link_below_the_base(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "a.log").write_text("mine\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "b.log").write_text("root's\n")
    (tmp_path / "linked").symlink_to(secret)
    (tmp_path / "log" / "c.log").symlink_to(secret / "b.log")
    fd = open_beneath(tmp_path, ["log", "a.log"], os.O_RDONLY)
    os.close(fd)
    for names in (["linked", "b.log"], ["log", "c.log"], ["..", "secret", "b.log"]):
        with pytest.raises(OSError):
            open_beneath(tmp_path, names, os.O_RDONLY)


def test_open_dir_strict_refuses_a_link_anywhere_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "real" / "pg").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.close(open_dir_strict(tmp_path / "real" / "pg"))
    with pytest.raises(UnsafePath):
        open_dir_strict(tmp_path / "link" / "pg")


def test_read_text_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "postmaster.pid"
    os.mkfifo(fifo)
    assert read_text(fifo) is None
