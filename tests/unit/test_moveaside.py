"""Moving the data directory aside and back, on real directories: only a directory
move_aside made (a real one, beside the data directory, named after it) is ever moved
back or removed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgbackups.core.host import WorkloadError
from pgbackups.workload import moveaside


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "units" / "0" / "data"
    d.mkdir(parents=True)
    (d / "PG_VERSION").write_text("15")
    return d


def test_move_aside_and_back(data: Path) -> None:
    moved = moveaside.move_aside(data)
    assert moved is not None and moved.parent == data.parent
    assert moved.name.startswith("data.before-restore-")
    assert not data.exists() and (moved / "PG_VERSION").read_text() == "15"
    data.mkdir()  # what a failed restore left
    (data / "half").write_text("restored")
    moveaside.move_back(data, str(moved))
    assert (data / "PG_VERSION").read_text() == "15"
    displaced = [p for p in data.parent.iterdir() if ".failed-restore-" in p.name]
    assert len(displaced) == 1 and (displaced[0] / "half").read_text() == "restored"


def test_nothing_to_move_is_none(tmp_path: Path) -> None:
    assert moveaside.move_aside(tmp_path / "data") is None


def test_two_moves_in_one_second_do_not_collide(data: Path) -> None:
    first = moveaside.move_aside(data)
    data.mkdir()
    second = moveaside.move_aside(data)
    assert first is not None and second is not None and first != second
    assert first.is_dir() and second.is_dir()


def test_a_legitimate_moved_copy_is_removed(data: Path) -> None:
    moved = moveaside.move_aside(data)
    assert moved is not None
    moveaside.remove_moved(data, str(moved))
    assert not moved.exists()


def test_another_apps_directory_with_the_mark_is_refused(tmp_path: Path, data: Path) -> None:
    srv = tmp_path / "srv"
    other = srv / "other-app.before-restore-x"
    other.mkdir(parents=True)
    (other / "keep").write_text("theirs")
    # In the right parent a name that is not the data directory's, and the right name in
    # another parent.
    beside = data.parent / "other-app.before-restore-x"
    beside.mkdir()
    elsewhere = srv / "data.before-restore-20260101T000000Z"
    elsewhere.mkdir()
    for path in (other, beside, elsewhere):
        with pytest.raises(WorkloadError, match="not a data directory moved aside"):
            moveaside.remove_moved(data, str(path))
        with pytest.raises(WorkloadError):
            moveaside.move_back(data, str(path))
        assert path.is_dir()
    assert (other / "keep").read_text() == "theirs"
    assert (data / "PG_VERSION").exists()


@pytest.mark.parametrize(
    "name",
    [
        "data.before-restore-",  # the mark alone, no stamp
        "data",  # the data directory itself
        "data.failed-restore-20260101T000000Z",
        "data.before-restore-x/../../../srv",  # climbs out of the parent
    ],
)
def test_names_that_are_not_moved_copies_are_refused(data: Path, name: str) -> None:
    with pytest.raises(WorkloadError):
        moveaside.remove_moved(data, str(data.parent / name))
    assert (data / "PG_VERSION").exists()


def test_a_relative_path_is_refused(data: Path) -> None:
    moved = moveaside.move_aside(data)
    assert moved is not None
    with pytest.raises(WorkloadError):
        moveaside.remove_moved(data, moved.name)
    assert moved.is_dir()


def test_a_link_with_the_right_name_is_refused(tmp_path: Path, data: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    link = data.parent / "data.before-restore-20260101T000000Z"
    link.symlink_to(victim)
    with pytest.raises(WorkloadError, match="not a directory"):
        moveaside.remove_moved(data, str(link))
    with pytest.raises(WorkloadError, match="not a directory"):
        moveaside.move_back(data, str(link))
    assert (victim / "precious").read_text() == "x"
    assert link.is_symlink() and (data / "PG_VERSION").exists()


def test_a_link_inside_a_moved_copy_is_not_followed(tmp_path: Path, data: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    (data / "escape").symlink_to(victim)
    moved = moveaside.move_aside(data)
    assert moved is not None
    moveaside.remove_moved(data, str(moved))
    assert not moved.exists()
    assert (victim / "precious").read_text() == "x"


def test_a_missing_moved_copy_is_an_error(data: Path) -> None:
    with pytest.raises(WorkloadError):
        moveaside.move_back(data, str(data.parent / "data.before-restore-gone"))
    assert (data / "PG_VERSION").exists()


def test_a_link_on_the_way_to_the_data_directory_is_refused(tmp_path: Path) -> None:
    """The data directory's parents may be the database user's (/var/lib/postgresql):
    a link there must not send root's rename or delete to another folder."""
    elsewhere = tmp_path / "etc"
    (elsewhere / "data").mkdir(parents=True)
    (tmp_path / "pg").symlink_to(elsewhere)
    with pytest.raises(WorkloadError, match="link"):
        moveaside.move_aside(tmp_path / "pg" / "data")
    assert [p.name for p in elsewhere.iterdir()] == ["data"]
    planted = elsewhere / "data.before-restore-20260101T000000Z"
    planted.mkdir()
    with pytest.raises(WorkloadError, match="link"):
        moveaside.remove_moved(tmp_path / "pg" / "data", str(tmp_path / "pg" / planted.name))
    assert planted.is_dir()


# --- leftovers ------------------------------------------------------------------------


def _leftovers(data: Path) -> dict[str, Path]:
    made = {
        "before": data.with_name("data.before-restore-20261128T150000Z"),
        "displaced": data.with_name("data.failed-restore-20261128T160000Z"),
        "patroni": data.with_name("data.failed"),
    }
    for path in made.values():
        path.mkdir()
        (path / "PG_VERSION").write_text("15")
    return made


def test_leftovers_are_listed_with_kind_and_size(data: Path) -> None:
    made = _leftovers(data)
    data.with_name("data.failedx").mkdir()  # not a name Patroni or a restore gives
    data.with_name("other").mkdir()
    data.with_name("data.before-restore-link").symlink_to(made["before"])
    listed = {item.name: item for item in moveaside.leftovers(data)}
    assert set(listed) == {p.name for p in made.values()}
    assert {item.kind for item in listed.values()} == {
        "before-restore",
        "failed-restore",
        "patroni-failed",
    }
    assert all(item.size > 0 for item in listed.values())


def test_a_copy_handed_to_a_removal_is_renamed_and_listed_as_such(
    data: Path, tmp_path: Path
) -> None:
    """rename_for_removal: a removal stopped half-way leaves ``data.removing-*``, a kind
    of its own that a person may delete, never one that passes for a copy to restore."""
    made = _leftovers(data)
    doomed = moveaside.rename_for_removal(data, str(made["before"]))
    assert doomed == data.with_name("data.removing-20261128T150000Z")
    assert doomed.is_dir() and not made["before"].exists()
    kinds = {item.name: item.kind for item in moveaside.leftovers(data)}
    assert kinds[doomed.name] == "removing"
    assert moveaside.remove_leftover(data, doomed.name) == doomed
    # Only a moved-aside directory: the data directory, another leftover and a link
    # with a moved-aside name are refused, and nothing is renamed.
    outside = tmp_path / "outside"
    outside.mkdir()
    data.with_name("data.before-restore-link").symlink_to(outside)
    before = sorted(p.name for p in data.parent.iterdir())
    for wrong in (data, made["displaced"], data.with_name("data.before-restore-link")):
        with pytest.raises(WorkloadError):
            moveaside.rename_for_removal(data, str(wrong))
    assert sorted(p.name for p in data.parent.iterdir()) == before


def test_a_named_leftover_is_removed(data: Path) -> None:
    made = _leftovers(data)
    assert moveaside.remove_leftover(data, "data.failed") == made["patroni"]
    assert not made["patroni"].exists()
    assert made["before"].exists() and made["displaced"].exists() and data.exists()


REFUSED = [
    ("data", "is not a leftover of data"),
    ("data.failedx", "is not a leftover of data"),
    ("../0/data.failed", "is not a leftover's name"),
    ("/etc", "is not a leftover's name"),
    ("", "is not a leftover's name"),
    ("data.failed-restore-none", "No such file or directory"),
]


@pytest.mark.parametrize(("name", "why"), REFUSED, ids=[r[0] or "empty" for r in REFUSED])
def test_anything_but_a_leftover_is_refused(data: Path, name: str, why: str) -> None:
    _leftovers(data)
    before = sorted(p.name for p in data.parent.iterdir())
    with pytest.raises(WorkloadError, match=why):
        moveaside.remove_leftover(data, name)
    assert sorted(p.name for p in data.parent.iterdir()) == before
    assert (data / "PG_VERSION").read_text() == "15"


def test_the_copy_a_failed_restore_needs_is_refused(data: Path) -> None:
    made = _leftovers(data)
    with pytest.raises(WorkloadError, match="holds the data from before a restore"):
        moveaside.remove_leftover(data, made["before"].name, needed=str(made["before"]))
    assert (made["before"] / "PG_VERSION").read_text() == "15"


def test_a_link_with_a_leftover_name_is_not_followed(data: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    data.with_name("data.failed").symlink_to(victim)
    with pytest.raises(WorkloadError, match="is not a directory"):
        moveaside.remove_leftover(data, "data.failed")
    assert (victim / "precious").read_text() == "x"


# --- the restored copy beside the data directory (a restore, restore.restore_here) ---------


def test_staging_is_made_empty_and_private(data: Path) -> None:
    staging = moveaside.make_staging(data, os.getuid(), os.getgid())
    assert staging == data.with_name(data.name + moveaside.STAGING_SUFFIX)
    assert list(staging.iterdir()) == []
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700


def test_what_a_killed_restore_left_is_replaced(data: Path) -> None:
    staging = moveaside.make_staging(data, os.getuid(), os.getgid())
    (staging / "half-restored").write_text("x")
    again = moveaside.make_staging(data, os.getuid(), os.getgid())
    assert list(again.iterdir()) == []
    assert (data / "PG_VERSION").exists(), "the data directory is never touched"


def test_a_link_named_like_the_staging_directory_is_never_followed(
    tmp_path: Path, data: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("x")
    data.with_name(data.name + moveaside.STAGING_SUFFIX).symlink_to(elsewhere)
    with pytest.raises(WorkloadError, match="not a directory"):
        moveaside.make_staging(data, os.getuid(), os.getgid())
    with pytest.raises(WorkloadError, match="not a directory"):
        moveaside.remove_staging(data)
    assert (elsewhere / "precious").exists()


def test_swap_in_puts_the_restored_copy_in_place_and_keeps_the_old(data: Path) -> None:
    staging = moveaside.make_staging(data, os.getuid(), os.getgid())
    (staging / "PG_VERSION").write_text("restored")
    moved = moveaside.swap_in(data)
    assert moved is not None and moveaside.is_moved_copy(data, moved)
    assert (moved / "PG_VERSION").read_text() == "15"
    assert (data / "PG_VERSION").read_text() == "restored"
    assert not staging.exists()


def test_swap_in_without_a_data_directory_only_when_its_data_is_aside(data: Path) -> None:
    aside = moveaside.move_aside(data)
    assert aside is not None
    staging = moveaside.make_staging(data, os.getuid(), os.getgid())
    with pytest.raises(WorkloadError, match="no data directory"):
        moveaside.swap_in(data)
    assert staging.exists(), "nothing changed"
    assert moveaside.swap_in(data, missing_ok=True) is None
    assert data.is_dir() and aside.is_dir()


def test_swap_in_without_a_restored_copy_changes_nothing(data: Path) -> None:
    with pytest.raises(WorkloadError, match="no restored copy"):
        moveaside.swap_in(data)
    assert (data / "PG_VERSION").exists()
    assert moveaside.leftovers(data) == []


def test_a_partial_restore_is_a_leftover(data: Path) -> None:
    moveaside.make_staging(data, os.getuid(), os.getgid())
    assert [item.kind for item in moveaside.leftovers(data)] == ["partial-restore"]
