"""The metrics through the ``cos_agent`` interface (charm/src/cos_agent.py,
metrics_service.py, metrics_server.py): the bag against the interface's schema, from what
the agent really sends; the endpoint answered over real HTTP with and without
credentials; what each unit serves after update-status."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import pytest
from charm_fakes import World, backup_record, stanza_info
from charm_states import MODEL, STANZA, ctx, peers, s3, state
from ops import testing

import cos_agent
import metrics_server
from charm import PgBackupsCharm
from metrics_service import UNIT, MetricsService
from pgbackups.core.archive_health import ArchiverStats
from pgbackups.core.host import CommandResult

# --- the interface's schema (charm-relation-interfaces, interfaces/cos_agent/v0) ---------
# Restated as the published pydantic models say it: the unit bag holds ``config``, a JSON
# document with these fields; the requirer validates the same shape and ignores extras.


class _Nested(pydantic.BaseModel):
    metrics_alert_rules: dict[str, Any]
    log_alert_rules: dict[str, Any]
    dashboards: list[str]
    metrics_scrape_jobs: list[dict[str, Any]]
    log_slots: list[str]


class _ProviderUnitData(pydantic.BaseModel):
    config: pydantic.Json[_Nested]


# What grafana-agent writes on its side: its tracing receivers, an empty list when the
# principal requested none (ours does not); before its first hook, nothing at all.
AGENT_BAGS: list[dict[str, str]] = [{}, {"receivers": "[]"}]


@dataclass
class Systemctl:
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, args: list[str], **kwargs: Any) -> CommandResult:
        self.calls.append(tuple(args))
        return CommandResult(tuple(args), 0, "", "")


class RecordedService(MetricsService):
    """The real service's files under a temporary folder; systemctl recorded."""

    def __init__(self, folder: Path) -> None:
        self.systemctl = Systemctl()
        (folder / "systemd").mkdir()
        super().__init__(str(folder), str(folder / "systemd"), self.systemctl)


@pytest.fixture
def service(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordedService:
    made = RecordedService(tmp_path)
    monkeypatch.setattr(PgBackupsCharm, "metrics_service_factory", lambda charm: made)
    return made


def cos_relation(remote: dict[str, str] | None = None) -> testing.Relation:
    # The principal's endpoint has no container scope of its own (Juju scopes the relation
    # by the subordinate's side): ops shows it as a relation with one remote unit.
    return testing.Relation(
        cos_agent.RELATION,
        remote_app_name="grafana-agent",
        remote_units_data={0: remote or {}},
    )


def own_bag(out: testing.State) -> dict[str, str]:
    relation = next(r for r in out.relations if r.endpoint == cos_agent.RELATION)
    assert isinstance(relation, testing.Relation)
    return dict(relation.local_unit_data)


@pytest.mark.parametrize("agent_bag", AGENT_BAGS, ids=["empty", "no-receivers"])
def test_joined_publishes_a_bag_the_schema_accepts(
    world: World, service: RecordedService, agent_bag: dict[str, str]
) -> None:
    c = ctx()
    relation = cos_relation(agent_bag)
    out = c.run(c.on.relation_joined(relation), state(peers({"stanza": STANZA}), relation))
    bag = own_bag(out)
    parsed = _ProviderUnitData.model_validate(bag).config
    (job,) = parsed.metrics_scrape_jobs
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9856"]}]
    assert job["metrics_path"] == "/metrics"
    assert job["basic_auth"]["username"] == "cos-agent"
    assert len(job["basic_auth"]["password"]) >= 32
    groups = parsed.metrics_alert_rules["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    for wanted in (
        "PgBackupsBackupError",
        "PgBackupsBackupTooOld",
        "PgBackupsStanzaError",
        "PgBackupsArchivingFailing",
    ):
        assert wanted in alerts
    scope = (
        f'juju_model="{MODEL.name}",juju_model_uuid="{MODEL.uuid}",'
        'juju_application="pgbackups-postgresql"'
    )
    assert alerts["PgBackupsMetricsAbsent"]["expr"] == (
        f"absent(pgbackups_stanza_status_code{{{scope}}})"
    )
    assert alerts["PgBackupsNoBackup"]["expr"] == (
        f'pgbackups_backups{{{scope},status="finished"}} == 0'
    )
    assert alerts["PgBackupsStanzaError"]["labels"]["juju_application"] == "pgbackups-postgresql"
    assert groups[0]["name"] == "prod_00000000_pgbackups_postgresql_pgbackups_alerts"
    # The endpoint runs with the SHA-256 of that password, never the password itself.
    config = json.loads(service.config.read_text())
    assert config["password_sha256"] == metrics_server.password_sha256(
        job["basic_auth"]["password"]
    )
    assert job["basic_auth"]["password"] not in service.config.read_text()
    assert ("systemctl", "enable", "--now", UNIT) in service.systemctl.calls


def test_the_password_is_kept_between_hooks(world: World, service: RecordedService) -> None:
    c = ctx()
    relation = cos_relation()
    out = c.run(c.on.relation_joined(relation), state(peers({"stanza": STANZA}), relation))
    first = own_bag(out)
    calls = len(service.systemctl.calls)
    out = c.run(c.on.relation_changed(out.get_relation(relation.id)), out)
    assert own_bag(out) == first
    # Nothing changed: the server is not restarted (the agent's scrapes go on).
    assert ("systemctl", "restart", UNIT) not in service.systemctl.calls[calls:]


def test_created_writes_nothing(world: World, service: RecordedService) -> None:
    """The interface's own test: no data on relation-created."""
    c = ctx()
    relation = cos_relation()
    out = c.run(c.on.relation_created(relation), state(peers({"stanza": STANZA}), relation))
    assert cos_agent.CONFIG_KEY not in own_bag(out)


def test_broken_stops_the_endpoint(world: World, service: RecordedService) -> None:
    c = ctx()
    relation = cos_relation()
    out = c.run(c.on.relation_joined(relation), state(peers({"stanza": STANZA}), relation))
    c.run(c.on.relation_broken(out.get_relation(relation.id)), out)
    assert service.systemctl.calls[-1] == ("systemctl", "disable", "--now", UNIT)


HEALTHY = ArchiverStats(
    archived_count=7,
    last_archived_wal="000000010000000000000007",
    last_archived_time=None,
    failed_count=1,
    last_failed_wal=None,
    last_failed_time=None,
    ready_count=0,
    oldest_ready_wal=None,
    oldest_ready_time=None,
)


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_update_status_on_the_leader_primary_serves_every_family(
    world: World, service: RecordedService
) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, "20261128-100000F"))]
    world.workload.archiver = HEALTHY
    c = ctx()
    c.run(c.on.update_status(), state(peers({"stanza": STANZA}), s3(), cos_relation()))
    served = service.served() or ""
    samples = _samples(served)
    assert f'pgbackups_stanza_status_code{{stanza="{STANZA}"}} 0.0' in samples
    assert f'pgbackups_backups{{stanza="{STANZA}",status="finished"}} 1.0' in samples
    assert f'pgbackups_archive_archived_total{{stanza="{STANZA}"}} 7.0' in samples
    assert f'pgbackups_archive_failed_total{{stanza="{STANZA}"}} 1.0' in samples
    # When: the stale-metrics alert compares it with the scrape's time.
    (collected,) = [x for x in samples if x.startswith("pgbackups_collected_timestamp_seconds")]
    assert abs(float(collected.split()[-1]) - time.time()) < 60


def test_update_status_elsewhere_serves_only_what_the_unit_knows(
    world: World, service: RecordedService
) -> None:
    world.tool.stanzas = [stanza_info(STANZA, backup_record(STANZA, "20261128-100000F"))]
    world.workload.archiver = HEALTHY
    c = ctx()
    # A primary that is not the leader: the archiver only (the leader has the rest).
    c.run(
        c.on.update_status(),
        state(peers({"stanza": STANZA}), s3(), cos_relation(), leader=False),
    )
    samples = _samples(service.served() or "")
    assert samples == [
        f'pgbackups_archive_failed_total{{stanza="{STANZA}"}} 1.0',
        f'pgbackups_archive_archived_total{{stanza="{STANZA}"}} 7.0',
    ]
    # A replica that is not the leader: nothing (the alerts must not count it twice).
    world.workload.primary = False
    c.run(
        c.on.update_status(),
        state(peers({"stanza": STANZA}), s3(), cos_relation(), leader=False),
    )
    assert _samples(service.served() or "") == []


def test_without_the_relation_update_status_collects_nothing(
    world: World, service: RecordedService
) -> None:
    c = ctx()
    c.run(c.on.update_status(), state(peers({"stanza": STANZA}), s3()))
    assert service.served() is None
    assert service.systemctl.calls == []


# --- the endpoint, over real HTTP ---------------------------------------------------------


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[str, str]]:
    exposition = tmp_path / "metrics.prom"
    exposition.write_text('pgbackups_stanza_status_code{stanza="s"} 0.0\n')
    password = cos_agent.new_password()
    config = metrics_server.Config(
        {
            "host": "127.0.0.1",
            "port": 0,  # any free port
            "user": "cos-agent",
            "password_sha256": metrics_server.password_sha256(password),
            "exposition": str(exposition),
        }
    )
    server = metrics_server.make_server(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", password
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(url: str, user: str | None = None, password: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310 - an http URL of the test's own
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - same
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_endpoint_answers_only_with_credentials(endpoint: tuple[str, str]) -> None:
    base, password = endpoint
    assert _get(f"{base}/metrics") == (401, "authentication required\n")
    assert _get(f"{base}/metrics", "cos-agent", "wrong")[0] == 401
    assert _get(f"{base}/metrics", "someone", password)[0] == 401
    assert _get(f"{base}/metrics", "cos-agent", password) == (
        200,
        'pgbackups_stanza_status_code{stanza="s"} 0.0\n',
    )
    # Nothing else is served, even with the credentials; nothing without them says so.
    assert _get(f"{base}/", "cos-agent", password)[0] == 404
    assert _get(f"{base}/", None)[0] == 401


def test_malformed_authorization_is_refused() -> None:
    config = metrics_server.Config(
        {
            "host": "127.0.0.1",
            "port": 1,
            "user": "cos-agent",
            "password_sha256": metrics_server.password_sha256("pw"),
            "exposition": "/nonexistent",
        }
    )
    good = base64.b64encode(b"cos-agent:pw").decode()
    assert metrics_server.authorised(f"Basic {good}", config)
    for header in (
        None,
        "",
        f"Bearer {good}",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),
        "Basic " + "A" * 2000,
    ):
        assert not metrics_server.authorised(header, config), header


@pytest.mark.skipif(os.geteuid() != 0, reason="file owners need root")
def test_the_files_are_roots_and_readable_by_the_server_only(tmp_path: Path) -> None:
    made = MetricsService(str(tmp_path), str(tmp_path), Systemctl())
    made.configure(host="127.0.0.1", port=9856, user="cos-agent", password="x" * 43)
    made.publish("text\n")
    for path in (made.script, made.config, made.exposition):
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o640), path
    unit = (tmp_path / UNIT).read_text()
    assert "User=nobody" in unit and "Group=nogroup" in unit
    assert f"ExecStart=/usr/bin/python3 -I {made.script} {made.config}" in unit
