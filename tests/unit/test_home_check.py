"""``$PGBACKUPS_HOME`` is checked before root uses it: absolute, root's, written by no one
else, all the way up (a sticky folder like /tmp is fine); a bad one is exit 2 and nothing
is created or changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgbackups.local.cli.main import main
from pgbackups.local.errors import UsageError
from pgbackups.local.machinery.paths import check_home
from pgbackups.local.runtime.cluster import Cluster

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the ownership checks are root's")


def test_a_relative_home_is_refused() -> None:
    with pytest.raises(UsageError, match="absolute"):
        check_home(Path("relative/home"))


def test_a_relative_home_from_the_environment_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PGBACKUPS_HOME", "relative/home")
    assert main(["status"]) == 2
    assert "PGBACKUPS_HOME must be an absolute path" in capsys.readouterr().err
    assert not Path("relative").exists()


@as_root
def test_a_root_home_in_root_folders_is_fine_and_not_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert check_home(home) == home
    Cluster("main", home)
    assert not home.exists()


@as_root
def test_under_a_sticky_world_writable_folder_is_fine(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: others cannot rename root's entries in it
    home = shared / "home"
    home.mkdir(mode=0o755)
    assert check_home(home) == home


@as_root
@pytest.mark.parametrize(
    "case",
    [
        ("home", 0o775, 0, "writable by its group"),
        ("home", 0o757, 0, "writable by others"),
        ("home", 0o1777, 0, "writable by its group and others"),  # sticky: not for the home
        ("home", 0o755, 65534, "owned by uid 65534"),
        ("parent", 0o775, 0, "writable by its group"),
        ("parent", 0o755, 65534, "owned by uid 65534"),
    ],
)
def test_an_unsafe_home_or_parent_is_exit_2_and_left_as_it_was(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, int, int, str],
) -> None:
    where, mode, owner, says = case
    parent = tmp_path / "parent"
    parent.mkdir(mode=0o755)
    home = parent / "home"
    home.mkdir(mode=0o755)
    bad = home if where == "home" else parent
    bad.chmod(mode)
    os.chown(bad, owner, owner)
    monkeypatch.setenv("PGBACKUPS_HOME", str(home))
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert f"PGBACKUPS_HOME {home} is not safe for root" in err and says in err
    assert list(home.iterdir()) == []  # nothing created
    st = bad.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (mode, owner)  # nothing changed


@as_root
def test_a_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        check_home(home)


@as_root
def test_a_link_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, 65534, 65534)
    (tmp_path / "link").symlink_to(other)
    with pytest.raises(UsageError, match="owned by uid 65534"):
        check_home(tmp_path / "link")
