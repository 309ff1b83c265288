"""Writing configuration files: atomic, mode set before the text, and a link planted at
the target is replaced, never written through."""

from __future__ import annotations

import stat
from pathlib import Path

from pgbackups.adapters.files import read_text, write_if_changed


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
