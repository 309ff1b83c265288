"""adapters/ca_files.py on real files, in the test's own temporary directory."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from pgbackups.adapters import ca_files
from pgbackups.adapters.ca_files import write_ca_file

CHAIN = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
OTHER = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


@pytest.fixture
def tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The temporary directory private copies go to; the host's folder is ``tmp/host``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "host").mkdir(mode=0o755)
    return tmp_path


def test_one_file_per_chain_in_the_hosts_folder_and_it_stays(tmp: Path) -> None:
    host = tmp / "host"
    first = write_ca_file(CHAIN, host)
    again = write_ca_file(CHAIN, host)
    other = write_ca_file(OTHER, host)
    assert not first.private and first == again
    assert Path(first.path).parent == host and other.path != first.path
    assert Path(first.path).read_text() == CHAIN and Path(other.path).read_text() == OTHER
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    # Two files, nothing half-written beside them, nothing in the temporary directory.
    assert sorted(p.name for p in host.iterdir()) == sorted(
        [Path(first.path).name, Path(other.path).name]
    )
    assert sorted(p.name for p in tmp.iterdir()) == ["host"]


def test_a_file_that_does_not_hold_the_chain_is_written_again(tmp: Path) -> None:
    path = Path(write_ca_file(CHAIN, tmp / "host").path)
    path.write_text("truncated")
    assert write_ca_file(CHAIN, tmp / "host").path == str(path)
    assert path.read_text() == CHAIN


def test_a_link_at_the_files_name_is_replaced_not_followed(tmp: Path) -> None:
    path = Path(write_ca_file(CHAIN, tmp / "host").path)
    target = tmp / "elsewhere"
    target.write_text(CHAIN)  # what the link points at looks right: it is still not used
    path.unlink()
    path.symlink_to(target)
    assert write_ca_file(CHAIN, tmp / "host").path == str(path)
    assert not path.is_symlink() and path.read_text() == CHAIN
    assert target.read_text() == CHAIN


@pytest.mark.parametrize("given", ["none", "missing", "link", "group-writable", "file"])
def test_without_a_fit_folder_a_private_copy_its_client_removes(tmp: Path, given: str) -> None:
    """No folder named, none there, or one that is a link, writable by others or a file:
    the chain goes to a private temporary file, and what was there is left as it was."""
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    folder = tmp / "given"
    if given == "link":
        folder.symlink_to(elsewhere)
    elif given == "group-writable":
        folder.mkdir()
        folder.chmod(0o775)
    elif given == "file":
        folder.write_text("")
    ca = write_ca_file(CHAIN, None if given == "none" else folder)
    assert ca.private
    assert Path(ca.path).parent == tmp and Path(ca.path).read_text() == CHAIN
    assert stat.S_IMODE(os.stat(ca.path).st_mode) == 0o600
    assert list(elsewhere.iterdir()) == []
    if given == "group-writable":
        assert list((tmp / "given").iterdir()) == []
    ca_files.remove_quietly(ca.path)
    assert not os.path.exists(ca.path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_another_users_folder_is_not_used(tmp: Path) -> None:
    theirs = tmp / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    assert write_ca_file(CHAIN, theirs).private
    assert list(theirs.iterdir()) == []
