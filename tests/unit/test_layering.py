"""The architecture, enforced: ``core`` imports nothing of adapters or hosts, adapters
import no host, the shared workload imports no host, and the charm imports only core,
adapters and workload (its bundle holds no more).

Read from the source with :mod:`ast`, so a lazy import inside a function counts as
much as one at the top of a module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pgbackups"
CHARM_SRC = ROOT / "charm" / "src"

# layer -> the pgbackups layers it must never import
FORBIDDEN = {
    "core": ("pgbackups.adapters", "pgbackups.local", "pgbackups.workload"),
    "adapters": ("pgbackups.local", "pgbackups.workload"),
    "workload": ("pgbackups.local",),
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from pgbackups import local` names a module too
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(folder: Path, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for lineno, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(folder.parent)}:{lineno} imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_inwards(layer: str) -> None:
    assert violations(PACKAGE / layer, FORBIDDEN[layer]) == []


def test_charm_uses_only_core_adapters_and_workload() -> None:
    assert violations(CHARM_SRC, ("pgbackups.local",)) == []


def test_the_checker_sees_a_lazy_import(tmp_path: Path) -> None:
    core = tmp_path / "core"
    core.mkdir()
    (core / "x.py").write_text("def f():\n    from pgbackups.local.runtime import host\n")
    (core / "y.py").write_text("from pgbackups.core import messages\n")
    assert violations(core, FORBIDDEN["core"]) == [
        "core/x.py:2 imports pgbackups.local.runtime",
        "core/x.py:2 imports pgbackups.local.runtime.host",
    ]
