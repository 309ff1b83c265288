"""charmcraft.yaml (metadata and actions in one file) loads in ops.testing, and the
core stays free of ops."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ops import testing

from charm import PgBackupsCharm

CHARM_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = CHARM_ROOT.parent


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_context_autoloads_charmcraft_yaml_from_the_charm_root() -> None:
    ctx = testing.Context(PgBackupsCharm)
    meta, actions = ctx.charm_spec.meta, ctx.charm_spec.actions
    assert meta["name"] == "pgbackups-postgresql"
    assert meta["peers"] == {"database-peers": {"interface": "postgresql_peers"}}
    assert meta["requires"]["s3-parameters"] == {"interface": "s3", "limit": 1}
    assert meta["requires"]["certificates"] == {"interface": "tls-certificates", "limit": 1}
    assert actions is not None
    assert set(actions) == {
        "create-backup",
        "list-backups",
        "restore",
        "rollback-restore",
        "expire",
        "verify",
    }
    assert "retention-full" in (ctx.charm_spec.config or {}).get("options", {})
    assert actions["create-backup"]["params"]["type"]["default"] == "full"
    for kind in ("full", "differential", "incremental"):
        assert kind in actions["create-backup"]["params"]["type"]["description"]
    assert actions["list-backups"]["params"]["format"]["enum"] == ["table", "json"]
    assert set(actions["restore"]["params"]) == {"backup-id", "restore-to-time"}
    assert actions["rollback-restore"].get("params", {}) == {}


def test_context_from_the_file_dicts_runs_a_hook() -> None:
    raw = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    assert raw["type"] == "charm"
    assert raw["base"] == "ubuntu@24.04"
    assert raw["parts"]["charm"]["plugin"] == "charm"
    ctx = testing.Context(PgBackupsCharm, meta=raw)
    out = ctx.run(ctx.on.update_status(), testing.State())
    # No peer relation yet: the hook waits (deferred), never errors.
    assert [d.name for d in out.deferred] == ["update_status"]


def test_requirements_name_the_runtime_dependencies() -> None:
    text = (CHARM_ROOT / "requirements.txt").read_text()
    names = {
        line.split(">")[0].split("=")[0].split("[")[0].strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"ops", "boto3", "PyYAML", "psycopg"} <= names


def test_the_core_never_imports_ops() -> None:
    for path in (REPO_ROOT / "src" / "pgbackups").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import ops", "from ops")), path
            assert not stripped.startswith(("import scenario", "from scenario")), path


def test_every_action_refuses_unknown_parameters_and_the_values_are_constrained() -> None:
    actions = testing.Context(PgBackupsCharm).charm_spec.actions
    assert actions is not None
    for name, spec in actions.items():
        assert spec.get("additionalProperties") is False, name
    assert actions["create-backup"]["params"]["type"]["enum"] == [
        "full",
        "differential",
        "incremental",
    ]
    for param in ("backup-id", "restore-to-time"):
        assert actions["restore"]["params"][param]["pattern"].startswith("^")
