"""The local dispatcher turns the workload's one way of failing into what the charm does:
a hook that hit a WorkloadError is deferred (tried again before the unit's next event),
an action fails with the reason — never a traceback out of `pgbackups`."""

from __future__ import annotations

from pathlib import Path

from fakes import STANZA, FakeHost, backup, stanza_info

from pgbackups.core.host import WorkloadError
from pgbackups.core.outcomes import ActionFailed, Deferred
from pgbackups.local.runtime.dispatch import Dispatcher
from pgbackups.local.runtime.peerdata import PeerDataStore


def test_a_workload_error_defers_the_hook_and_fails_the_action(tmp_path: Path) -> None:
    store = PeerDataStore(tmp_path / "peers.json")
    host = FakeHost()
    host.fake_workload.on_apply = [WorkloadError("patroni did not answer the reload")]
    dispatcher = Dispatcher(store, lambda unit: host)

    outcome = dispatcher.fire("main/0", "s3-credentials-changed")
    assert isinstance(outcome, Deferred)
    assert "patroni did not answer the reload" in outcome.reason
    [deferred] = store.take_deferred("main/0")
    assert deferred.name == "s3-credentials-changed"

    # A restore gets as far as applying the bootstrap configuration, which fails.
    host.app_data["stanza"] = STANZA
    host.fake_tool.stanzas = [stanza_info(backups=[backup("20261128-143926F")])]
    host.fake_workload.on_apply = [WorkloadError("no space left")]
    failed = dispatcher.run_action("main/0", "restore", {"backup-id": "2026-11-28T14:39:26Z"})
    assert failed == ActionFailed("restore failed: no space left")
