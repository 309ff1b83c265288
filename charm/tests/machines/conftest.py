"""The charm on machines: the world (network, S3 server, machines) for one module, made
after a sweep of what a killed session left and removed afterwards (see charm/README.md,
"Tests")."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from machines.world import World, world
from pgbackups.local.machinery import netns


@pytest.fixture(scope="module")
def machines_world() -> Iterator[World]:
    why = netns.available()
    if why is not None:
        pytest.skip(f"the charm on machines needs network namespaces: {why}")
    home = Path(tempfile.mkdtemp(prefix="pgbackups-charm-machines-", dir="/tmp"))
    try:
        with world(home) as w:
            yield w
    finally:
        # Each machine's hook log (hooks.log), service logs and PostgreSQL/Patroni logs
        # are under the home: PGBACKUPS_KEEP_MACHINES=1 keeps them to read after a failure.
        if os.environ.get("PGBACKUPS_KEEP_MACHINES") != "1":
            shutil.rmtree(home, ignore_errors=True)
