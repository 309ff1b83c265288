"""The event table both hosts dispatch by: it names every action the charm declares, the
local CLI offers the same actions, and the hook names the charm looks up exist."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

import yaml

from pgbackups.core import events
from pgbackups.local.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
CHARMCRAFT = ROOT / "charm" / "charmcraft.yaml"
CHARM = ROOT / "charm" / "src" / "charm.py"


def charm_actions() -> dict[str, dict[str, Any]]:
    actions: dict[str, dict[str, Any]] = yaml.safe_load(CHARMCRAFT.read_text())["actions"]
    return actions


def test_every_charm_action_has_a_handler_and_no_more() -> None:
    assert set(charm_actions()) == set(events.ACTIONS)


def test_every_action_takes_the_parameters_charmcraft_declares() -> None:
    declared = {name: set(spec.get("params") or {}) for name, spec in charm_actions().items()}
    assert declared == {name: set(params) for name, params in events.ACTION_PARAMS.items()}
    assert set(events.ACTION_PARAMS) == set(events.ACTIONS)


def _run_action_choices() -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    run = commands["run"]
    action = next(a for a in run._actions if a.dest == "action")
    assert action.choices is not None
    return set(action.choices)


def test_the_local_cli_runs_the_same_actions() -> None:
    assert _run_action_choices() == set(events.ACTIONS)


def test_the_hook_names_the_charm_looks_up_are_in_the_table() -> None:
    tree = ast.parse(CHARM.read_text())
    looked_up = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and ast.unparse(node.value) == "events.HOOKS"
        and isinstance(node.slice, ast.Constant)
    }
    assert looked_up, "the charm runs its hooks through events.HOOKS"
    assert looked_up <= set(events.HOOKS)


def test_every_hook_has_a_handler() -> None:
    assert set(events.HOOKS) == {
        "s3-credentials-changed",
        "s3-credentials-gone",
        "leader-elected",
        "update-status",
        "certificates-changed",
        "peer-changed",
        "config-changed",
    }
    assert all(callable(handler) for handler in events.HOOKS.values())
