"""The programs the database user runs must be reachable by it wherever the checkout is:
under /root (0700, where root usually clones) the virtualenv's rclone is not, so the
servers run a copy made where the database user can enter (as the runtime does)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from realservers import S3Server

from pgbackups.adapters import processes
from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery import programs

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """A directory like /root: only its owner (root) may enter it."""
    path = Path(tempfile.mkdtemp(prefix="pgbackups-it-private-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_program_under_a_0700_checkout_runs_as_the_db_user_once_installed(
    private_checkout: Path, workdir: Path, db_user: OsUser
) -> None:
    if db_user.is_current:
        pytest.skip("the database user is the current user: every path it runs is its own")
    program = private_checkout / "venv" / "bin" / "rclone"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\necho reached\n")
    program.chmod(0o755)
    # What the integration servers ran before: the test proves something only if this fails.
    with pytest.raises(PermissionError):
        processes.run([str(program)], user=db_user, timeout=10)
    home = workdir / "private-install"
    home.mkdir(mode=0o755)  # a home exists before anything is installed in it
    installed = programs.install_rclone(home, source=program)
    copied = processes.run([str(installed)], user=db_user, timeout=10)
    assert copied.ok, copied.stderr
    assert copied.stdout.strip() == "reached"


def test_the_s3_server_runs_rclone_from_outside_the_checkout(
    s3: S3Server, workdir: Path, db_user: OsUser
) -> None:
    executable = Path(os.readlink(f"/proc/{s3.pid}/exe"))
    assert not executable.is_relative_to(CHECKOUT), executable
    assert executable.is_relative_to(workdir), executable
    version = processes.run([str(executable), "version"], user=db_user, timeout=30)
    assert version.ok, version.stderr
