"""Charm tests: ops.testing (Scenario) state in -> event -> state out.

``charm/src`` goes on sys.path here, as dispatch puts it at run time. Only the adapters
are fake (``fakes.World``): the charm, the host and the core handlers are the real ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

CHARM_ROOT = Path(__file__).resolve().parent.parent
for p in (CHARM_ROOT / "src", Path(__file__).resolve().parent):  # src, and these helpers
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from charm_fakes import World  # noqa: E402

from charm import PgBackupsCharm  # noqa: E402
from charm_host import Adapters  # noqa: E402
from pgbackups.core.handlers import s3_credentials  # noqa: E402


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World()
    monkeypatch.setattr(
        PgBackupsCharm,
        "adapters_factory",
        lambda charm: Adapters(workload=w.workload, backup_tool=w.tool, object_store=w.store_for),
    )
    monkeypatch.setattr(PgBackupsCharm, "installer_factory", lambda charm: w.workload)
    monkeypatch.setattr(PgBackupsCharm, "tls_files_factory", lambda charm: w.tls_files)
    monkeypatch.setattr(PgBackupsCharm, "backup_tls_factory", lambda charm: w.backup_tls)
    monkeypatch.setattr(PgBackupsCharm, "new_ca_factory", lambda charm: w.new_ca())
    monkeypatch.setattr(s3_credentials, "SLEEP", lambda seconds: None)
    return w
