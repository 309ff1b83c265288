"""RestoreState: the restore-* keys of the app bag, in the exact format both hosts persist."""

from __future__ import annotations

import pytest

from pgbackups.core.restore_state import RestoreState, restore_in_progress

FULL = RestoreState(
    label="20261128-143926F",
    stanza="local.main",
    type="time",
    to_time="2026-11-28 15:00:00.000000+00",
    timeline=2,
    moved_data="/var/lib/pgbackups/main/data.pre-restore",
)
FULL_BAG = {
    "restoring-backup": "20261128-143926F",
    "restore-stanza": "local.main",
    "restore-type": "time",
    "restore-to-time": "2026-11-28 15:00:00.000000+00",
    "restore-timeline": "2",
    "restore-moved-data": "/var/lib/pgbackups/main/data.pre-restore",
}


def test_write_puts_exactly_these_keys() -> None:
    bag: dict[str, str] = {"stanza": "local.main"}
    FULL.write(bag)
    assert bag == {"stanza": "local.main", **FULL_BAG}


def test_round_trip() -> None:
    bag: dict[str, str] = {}
    FULL.write(bag)
    assert RestoreState.read(bag) == FULL
    assert RestoreState.read(FULL_BAG) == FULL


def test_unset_fields_are_written_as_empty_strings() -> None:
    bag = dict(FULL_BAG)
    RestoreState(label="20261128-143926F", stanza="local.main", type="immediate").write(bag)
    assert bag == {
        "restoring-backup": "20261128-143926F",
        "restore-stanza": "local.main",
        "restore-type": "immediate",
        "restore-to-time": "",
        "restore-timeline": "",
        "restore-moved-data": "",
    }


@pytest.mark.parametrize("bag", [{}, {"stanza": "local.main"}, dict.fromkeys(FULL_BAG, "")])
def test_no_restore_reads_as_none(bag: dict[str, str]) -> None:
    assert RestoreState.read(bag) is None
    assert not restore_in_progress(bag)


@pytest.mark.parametrize(
    ("bag", "state", "in_progress"),
    [
        (
            {"restoring-backup": "20261128-143926F"},
            RestoreState(label="20261128-143926F"),
            True,
        ),
        ({"restore-to-time": "latest"}, RestoreState(to_time="latest"), True),
        ({"restore-moved-data": "/old"}, RestoreState(moved_data="/old"), False),
        (
            {"restore-stanza": "old.main", "restore-timeline": "11", "restore-type": ""},
            RestoreState(stanza="old.main", timeline=11),
            False,
        ),
    ],
)
def test_a_partial_bag(bag: dict[str, str], state: RestoreState, in_progress: bool) -> None:
    assert RestoreState.read(bag) == state
    assert state.in_progress is in_progress
    assert restore_in_progress(bag) is in_progress


def test_clear_empties_every_key_others_untouched() -> None:
    bag = {"stanza": "local.main", **FULL_BAG}
    RestoreState.clear(bag)
    assert bag == {"stanza": "local.main", **dict.fromkeys(FULL_BAG, "")}
    assert RestoreState.read(bag) is None


def test_clear_can_keep_the_moved_data_until_it_is_removed() -> None:
    bag = dict(FULL_BAG)
    RestoreState.clear(bag, keep_moved_data=True)
    assert RestoreState.read(bag) == RestoreState(moved_data=FULL.moved_data)
    RestoreState.forget_moved_data(bag)
    assert RestoreState.read(bag) is None
