"""The pgBackRest TLS server (docs/behaviour/tls-server.md): the steps that end
s3-credentials-changed, and reconcile_tls_server (certificates-changed, peer-changed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fakes import PRIMARY_ADDRESS, TLS, FakeHost

from pgbackups.core.handlers import s3_credentials
from pgbackups.core.handlers.s3_credentials import on_s3_credentials_changed
from pgbackups.core.handlers.tls_server import reconcile_tls_server
from pgbackups.core.host import TlsMaterial
from pgbackups.core.outcomes import Deferred, Done

# The last effect of a successful s3-credentials-changed before its TLS steps.
S3_CHART_SUCCEEDED = "set_status(active)"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_credentials, "SLEEP", lambda _seconds: None)


# ---------------------------------------------------------------------------
# The TLS-server steps at the end of the chart, and reconcile_tls_server
# (docs/behaviour/tls-server.md)


@dataclass(frozen=True)
class TlsCase:
    tls: TlsMaterial | None
    planned: int
    primary: bool
    tail: list[str]
    reconciled: type = Done
    ping: bool = True
    start_ok: bool = True


PING = f"backup_tool.server_ping({PRIMARY_ADDRESS})"
TLS_CASES = {
    "tls-off": TlsCase(None, 3, False, ["workload.stop_tls_server"]),
    "single-unit": TlsCase(TLS, 1, True, ["workload.stop_tls_server"]),
    "primary": TlsCase(TLS, 3, True, ["workload.start_tls_server"]),
    "replica-primary-answers": TlsCase(TLS, 3, False, [PING, "workload.start_tls_server"]),
    "replica-primary-silent": TlsCase(TLS, 3, False, [PING], Deferred, ping=False),
    "start-fails": TlsCase(TLS, 3, True, ["workload.start_tls_server"], Deferred, start_ok=False),
}


def _tls_host(case: TlsCase) -> FakeHost:
    host = FakeHost(tls=case.tls, planned_units=case.planned)
    host.fake_workload.primary = case.primary
    host.fake_tool.ping_ok = case.ping
    host.fake_workload.start_tls_ok = case.start_ok
    return host


@pytest.mark.parametrize("case", TLS_CASES.values(), ids=TLS_CASES.keys())
def test_tls_server_steps_end_the_s3_chart(case: TlsCase) -> None:
    host = _tls_host(case)
    assert on_s3_credentials_changed(host) == Done()  # the chart just returns
    assert host.effects[host.effects.index(S3_CHART_SUCCEEDED) + 1 :] == case.tail


@pytest.mark.parametrize("case", TLS_CASES.values(), ids=TLS_CASES.keys())
def test_reconcile_tls_server(case: TlsCase) -> None:
    host = _tls_host(case)
    assert isinstance(reconcile_tls_server(host), case.reconciled)
    tls_flag = ", tls-server" if case.tls is not None and case.planned > 1 else ""
    assert host.effects == [f"workload.apply_config(stanza=-{tls_flag})", *case.tail]


def test_reconcile_defers_when_patroni_cannot_tell_the_role() -> None:
    host = FakeHost(tls=TLS, planned_units=2)
    host.fake_workload.unavailable = True
    assert isinstance(reconcile_tls_server(host), Deferred)
    assert "workload.start_tls_server" not in host.calls


def test_replica_without_known_primary_waits() -> None:
    host = FakeHost(tls=TLS, planned_units=2)
    host.fake_workload.primary = False
    host.fake_workload.primary_addr = None
    assert isinstance(reconcile_tls_server(host), Deferred)
    assert host.effects == ["workload.apply_config(stanza=-, tls-server)"]
