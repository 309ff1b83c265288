"""The provider side of the ``cos_agent`` interface (grafana-agent, opentelemetry-collector:
the subordinate that scrapes this machine and forwards to COS).

Written from the interface's published schema (charm-relation-interfaces,
``interfaces/cos_agent/v0``): a subordinate relation, so everything is in this unit's
bag, under one key, ``config``, as JSON: ``metrics_alert_rules`` (Prometheus' rule-file
form, ``{"groups": [...]}``), ``log_alert_rules``, ``dashboards`` (LZMA-compressed,
base64-encoded JSON), ``metrics_scrape_jobs`` (Prometheus ``scrape_config`` entries: the
agent adds the Juju topology labels to each ``static_configs`` entry and scrapes them as
they are, credentials included) and ``log_slots``. The requirer writes at most its
tracing ``receivers`` back (none for us: we request no tracing).

Not the charm library (``charms.grafana_agent.v0.cos_agent``): it is not on PyPI, and
``cosl`` (1.11.3, which it builds on) would bring diskcache and tenacity for what is
here a few lines, and injects the topology into rule expressions only through a
``cos-tool`` binary it does not ship. Our rules select only our own metrics
(``pgbackups_*``), so the topology matchers are put into each of their selectors here
(:func:`scope_expression`), and ``tests/test_cos_agent.py`` checks the result with promtool.
"""

from __future__ import annotations

import base64
import copy
import json
import lzma
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RELATION = "cos-agent"
CONFIG_KEY = "config"
METRICS_PATH = "/metrics"
SCRAPE_USER = "cos-agent"
# Where the charm's metrics endpoint listens: loopback only, for the subordinate agent
# on the same machine (metrics_service.py).
METRICS_HOST = "127.0.0.1"
METRICS_PORT = 9856
RULES_DIR = Path(__file__).resolve().parent / "prometheus_alert_rules"

# A metric selector of ours: the name, and its braces when it has them. Our rule files
# use no label value holding a brace (checked by scope_expression).
_SELECTOR = re.compile(r"\b(pgbackups_[a-zA-Z0-9_]+)(\{[^{}]*\})?")
_GROUP_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Topology:
    """Where the metrics come from, as COS labels them (``juju_*``)."""

    model: str
    model_uuid: str
    application: str
    charm_name: str

    @property
    def identifier(self) -> str:
        # The form the COS charms name rule groups with: model, the uuid's first block, app.
        return f"{self.model}_{self.model_uuid.split('-')[0]}_{self.application}"

    def labels(self) -> dict[str, str]:
        return {
            "juju_model": self.model,
            "juju_model_uuid": self.model_uuid,
            "juju_application": self.application,
            "juju_charm": self.charm_name,
        }

    def matchers(self) -> str:
        """The selector matchers of this application's series (the agent labels every
        series it scrapes with model, uuid, application and unit; not the charm)."""
        wanted = ("juju_model", "juju_model_uuid", "juju_application")
        return ",".join(f'{k}="{_escape(self.labels()[k])}"' for k in wanted)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def scope_expression(expr: str, topology: Topology) -> str:
    """``expr`` with every selector of our metrics limited to this application: otherwise
    ``absent(...)`` or ``pgbackups_backups == 0`` would see every cluster in the
    Prometheus. Refuses an expression that selects nothing of ours (a rule that would
    watch other applications' series)."""
    if _SELECTOR.search(expr) is None:
        raise ValueError(f"the expression selects no pgbackups metric: {expr!r}")

    def scoped(match: re.Match[str]) -> str:
        name, braces = match.group(1), match.group(2)
        inner = braces[1:-1].strip().rstrip(",") if braces else ""
        return f"{name}{{{topology.matchers()}{',' + inner if inner else ''}}}"

    return _SELECTOR.sub(scoped, expr)


def alert_rules(topology: Topology, rules_dir: Path = RULES_DIR) -> dict[str, Any]:
    """The rule files of ``rules_dir`` as one rule-file dict, each group named after the
    application, each rule carrying the topology labels and scoped to its series."""
    groups: list[dict[str, Any]] = []
    for path in sorted(rules_dir.glob("*.y*ml")):
        loaded = yaml.safe_load(path.read_text())
        for original in loaded.get("groups", []) if isinstance(loaded, dict) else []:
            group = copy.deepcopy(original)
            name = f"{topology.identifier}_{group['name']}_alerts"
            group["name"] = _GROUP_NAME.sub("_", name)
            for rule in group.get("rules", []):
                rule["expr"] = scope_expression(str(rule["expr"]), topology)
                rule["labels"] = {**topology.labels(), **rule.get("labels", {})}
            groups.append(group)
    return {"groups": groups}


def scrape_job(unit_name: str, password: str) -> dict[str, Any]:
    """This unit's endpoint as a Prometheus ``scrape_config``: on loopback (the agent is
    a subordinate on the same machine), with the basic-auth credentials it checks."""
    return {
        "job_name": f"pgbackups_{_GROUP_NAME.sub('_', unit_name)}",
        "metrics_path": METRICS_PATH,
        "scheme": "http",
        "static_configs": [{"targets": [f"{METRICS_HOST}:{METRICS_PORT}"]}],
        "basic_auth": {"username": SCRAPE_USER, "password": password},
    }


def dashboard(raw_json: str) -> str:
    """A dashboard as the interface carries it."""
    return base64.b64encode(lzma.compress(raw_json.encode())).decode()


def unit_bag(
    rules: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]], dashboards: Sequence[str] = ()
) -> dict[str, str]:
    """This unit's bag on the relation."""
    config = {
        "metrics_alert_rules": dict(rules),
        "log_alert_rules": {},
        "dashboards": list(dashboards),
        "metrics_scrape_jobs": [dict(j) for j in jobs],
        "log_slots": [],
    }
    return {CONFIG_KEY: json.dumps(config, sort_keys=True)}


def password_in(bag: Mapping[str, str]) -> str | None:
    """The scrape password this unit published before (the bag keeps it between hooks:
    the agent has it already, and a new one would leave it failing until it reloads)."""
    try:
        config = json.loads(bag.get(CONFIG_KEY, "") or "{}")
        for job in config.get("metrics_scrape_jobs", []):
            password = job.get("basic_auth", {}).get("password")
            if isinstance(password, str) and len(password) >= 32:
                return password
    except (ValueError, AttributeError):
        return None
    return None


def new_password() -> str:
    return secrets.token_urlsafe(32)
