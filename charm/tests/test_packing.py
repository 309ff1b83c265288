"""The charm packs: charmcraft's own project model accepts ``charmcraft.yaml``, charmcraft's
charm builder lays the charm out as ``charmcraft pack`` does, and the ``dispatch`` it writes
runs the entry point through ops into the charm.

The build uses charmcraft's ``charm_builder`` (what the charm plugin runs inside the build
container) on a copy of the repository with the ``make -C charm vendor`` output; only the
Python dependencies come from this venv instead of a pip install from
``requirements.txt`` (no network here), at the versions that file pins. Juju's hook
tools are stand-ins on ``PATH`` that record their calls; nothing runs on this machine
beyond the charm's own Python.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from charmcraft import parts
from charmcraft.charm_builder import CharmBuilder
from charmcraft.models.metadata import CharmMetadata
from charmcraft.models.project import CharmcraftProject

pytestmark = pytest.mark.pack

CHARM_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = CHARM_ROOT.parent
UNIT = "pgbackups-postgresql/0"

# A stand-in for every Juju hook tool (and the few programs the install hook runs):
# it appends [name, args] to the log its config.json names and answers what ops parses.
# The config sits beside it: the charm runs programs with a clean environment.
HOOK_TOOL = """#!/usr/bin/python3
import json, os, sys
name = os.path.basename(sys.argv[0])
here = os.path.dirname(os.path.realpath(sys.argv[0]))
with open(os.path.join(here, "config.json")) as f:
    config = json.load(f)
with open(config["log"], "a") as log:
    log.write(json.dumps([name, sys.argv[1:]]) + "\\n")
sys.stdout.write(config["answers"].get(name, ""))
sys.exit(config["exits"].get(name, 0))
"""
HOOK_TOOLS = (
    "action-fail",
    "action-get",
    "action-log",
    "action-set",
    "application-version-set",
    "config-get",
    "goal-state",
    "is-leader",
    "juju-log",
    "network-get",
    "opened-ports",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-set",
    "secret-get",
    "status-get",
    "status-set",
    "unit-get",
    # what the install hook runs
    "apt-get",
    "apt-mark",
    "dpkg-query",
    "pg_dropcluster",
    "systemctl",
)
ANSWERS = {
    "config-get": "{}",
    "is-leader": "true",
    "relation-ids": "[]",
    "status-get": '{"status": "unknown", "message": ""}',
}


# --- charmcraft.yaml -------------------------------------------------------------------


def load_project(data: dict[str, Any]) -> Any:
    """charmcraft's own model of a project, as `charmcraft pack` loads it (plugins first:
    a part's ``plugin: charm`` is validated against the registered plugins)."""
    parts.setup_parts()
    return CharmcraftProject.unmarshal(data)


def charmcraft_yaml() -> dict[str, Any]:
    data = yaml.safe_load((CHARM_ROOT / "charmcraft.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_charmcraft_yaml_is_a_valid_charmcraft_project() -> None:
    project = load_project(charmcraft_yaml())
    assert project.name == "pgbackups-postgresql"
    assert set(project.actions) == {
        "create-backup",
        "list-backups",
        "restore",
        "rollback-restore",
        "expire",
        "verify",
    }


def test_the_validator_refuses_a_title_over_40_characters() -> None:
    data = charmcraft_yaml()
    data["title"] = "PostgreSQL with pgBackRest backups (pgbackups)"  # 46: what was shipped
    with pytest.raises(Exception, match="at most 40 characters"):
        load_project(data)


def test_the_entry_point_is_executable_with_a_python_shebang() -> None:
    # The dispatch script the charm plugin writes execs ./src/charm.py itself.
    entry = CHARM_ROOT / "src" / "charm.py"
    assert entry.read_text().splitlines()[0] == "#!/usr/bin/env python3"
    assert entry.stat().st_mode & stat.S_IXUSR
    index = subprocess.run(
        ["git", "ls-files", "-s", "charm/src/charm.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert index.startswith("100755 "), index  # what a clean clone gets


# --- pinned dependencies ---------------------------------------------------------------


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in (CHARM_ROOT / "requirements.txt").read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not pinned to one version: {line!r}"
            out[canonical(name)] = version
    return out


def canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def test_requirements_pin_the_versions_the_tests_run_with() -> None:
    installed = {name: importlib.metadata.version(name) for name in pins()}
    assert installed == pins()


def test_requirements_pin_every_runtime_dependency_of_what_they_pin() -> None:
    from packaging.requirements import Requirement

    pinned = pins()
    missing = set()
    for name in pinned:
        for spec in importlib.metadata.requires(name) or []:
            req = Requirement(spec)
            needed = req.marker is None or req.marker.evaluate({"extra": ""})
            if needed and canonical(req.name) not in pinned:
                missing.add(f"{req.name} (of {name})")
    assert not missing
    binary = charmcraft_yaml()["parts"]["charm"]["charm-binary-python-packages"]
    for spec in binary:
        name, _, version = spec.partition("==")
        assert pinned.get(canonical(name)) == version, spec


# --- the built charm -------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The charm directory as `charmcraft pack` would zip it (prime)."""
    tmp = tmp_path_factory.mktemp("pack")
    repo = tmp / "repo"
    skip = shutil.ignore_patterns("__pycache__", "lib", "*.charm", "build", ".*_cache")
    shutil.copytree(REPO_ROOT / "src" / "pgbackups", repo / "src" / "pgbackups", ignore=skip)
    shutil.copytree(CHARM_ROOT, repo / "charm", ignore=skip)
    subprocess.run(
        ["make", "-s", "-C", str(repo / "charm"), "vendor"],
        check=True,
        timeout=60,
        capture_output=True,
    )
    prime = tmp / "prime"
    builder = CharmBuilder(
        builddir=repo / "charm",
        installdir=prime,
        entrypoint=repo / "charm" / "src" / "charm.py",
    )
    prime.mkdir()
    builder.handle_dispatcher(builder.handle_generic_paths())
    # What `charmcraft pack` writes beside the built tree from charmcraft.yaml: Juju and
    # ops read the metadata and the actions from these two files.
    project = load_project(charmcraft_yaml())
    metadata = CharmMetadata.from_charm(project).marshal()
    (prime / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=True))
    actions = project.marshal()["actions"]
    (prime / "actions.yaml").write_text(yaml.safe_dump(actions, sort_keys=True))
    # handle_dependencies would pip-install requirements.txt into venv/ (site-packages);
    # the same pinned versions are this venv's (test_requirements_pin_...).
    (prime / "venv").symlink_to(sysconfig.get_paths()["purelib"])
    yield prime


def test_the_charm_ships_the_core_adapters_and_workload_only(built: Path) -> None:
    assert sorted(p.name for p in (built / "lib" / "pgbackups").iterdir()) == [
        "__init__.py",
        "adapters",
        "core",
        "py.typed",
        "workload",
    ]
    assert (built / "src" / "charm.py").stat().st_mode & stat.S_IXUSR
    assert (built / "dispatch").stat().st_mode & stat.S_IXUSR
    assert (built / "hooks" / "install").resolve() == (built / "dispatch").resolve()
    assert not (built / "tests").exists()
    assert not list(built.rglob("__pycache__"))
    assert (built / "charmcraft.yaml").is_file()


def test_pgbackups_is_imported_from_the_vendored_lib(built: Path) -> None:
    # dispatch sets PYTHONPATH=lib:venv; this venv's editable install is a .pth file,
    # which a PYTHONPATH entry does not read: pgbackups can only come from lib/.
    code = (
        "import pgbackups, importlib.util; print(pgbackups.__file__); "
        "print(importlib.util.find_spec('pgbackups.local'))"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        cwd=built,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "lib:venv"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out == [str(built / "lib" / "pgbackups" / "__init__.py"), "None"]


def dispatch(
    built: Path,
    tmp_path: Path,
    hook: str,
    *,
    exits: dict[str, int] | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, list[str]]]]:
    """Run the charm's dispatch as Juju runs a hook; returns the run and the tool calls."""
    tools = tmp_path / "tools"
    tools.mkdir()
    stub = tools / "hook-tool"
    stub.write_text(HOOK_TOOL)
    stub.chmod(0o755)
    for name in HOOK_TOOLS:
        (tools / name).symlink_to(stub)
    log = tmp_path / "tool-calls.jsonl"
    log.touch()
    config = {"log": str(log), "answers": ANSWERS, "exits": exits or {}}
    (tools / "config.json").write_text(json.dumps(config))
    env = {
        "PATH": f"{tools}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "JUJU_DISPATCH_PATH": f"hooks/{hook}",
        "JUJU_CHARM_DIR": str(built),
        "JUJU_UNIT_NAME": UNIT,
        "JUJU_MODEL_NAME": "pack-test",
        "JUJU_MODEL_UUID": "00000000-0000-4000-8000-000000000000",
        "JUJU_VERSION": "3.6.4",
        "JUJU_CONTEXT_ID": f"{UNIT}-{hook}-1",
    }
    # Juju runs dispatch from the charm directory (the script execs ./src/charm.py).
    run = subprocess.run(
        ["./dispatch"], cwd=built, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    calls = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    return run, [(str(c[0]), list(c[1])) for c in calls]


def tool_args(calls: Sequence[tuple[str, list[str]]], name: str) -> list[list[str]]:
    return [args for tool, args in calls if tool == name]


def test_dispatch_runs_the_entry_point_into_the_charm(built: Path, tmp_path: Path) -> None:
    run, calls = dispatch(built, tmp_path, "update-status")
    assert run.returncode == 0, run.stderr
    # ops logged the event it dispatched through juju-log, and the charm asked for its
    # peer relation (none yet: the hook is deferred, nothing else happens).
    logged = " ".join(" ".join(args) for args in tool_args(calls, "juju-log"))
    assert "update_status" in logged
    assert ["database-peers", "--format=json"] in tool_args(calls, "relation-ids")
    assert not tool_args(calls, "apt-get")


def test_dispatch_install_fails_the_hook_while_apt_fails(built: Path, tmp_path: Path) -> None:
    # apt-get fails (a dpkg lock held past its wait) before anything is written: the hook
    # exits non-zero, so Juju runs it again; the unit said what it was doing.
    run, calls = dispatch(built, tmp_path, "install", exits={"apt-get": 100})
    assert run.returncode != 0
    assert [
        "--application=False",
        "maintenance",
        "--",
        "installing PostgreSQL, Patroni, pgBackRest",
    ] in tool_args(calls, "status-set")
    assert tool_args(calls, "apt-get") == [["-o", "DPkg::Lock::Timeout=600", "update", "-q"]]
    assert not tool_args(calls, "systemctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
