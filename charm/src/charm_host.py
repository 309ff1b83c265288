"""``CharmHost``: the pgbackups core's :class:`pgbackups.core.host.Host`, over ``ops``.

Everything Juju-specific the core may ask for is answered here: leadership, the unit
status, the ``database-peers`` bags, the S3 relation's settings, the TLS files and the
adapters (workload, pgBackRest, S3). The core never sees an ``ops`` object.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import ops

from pgbackups.core.host import (
    BackupTool,
    ObjectStore,
    Peer,
    StatusKind,
    TlsMaterial,
    UnitStatus,
    Workload,
)
from pgbackups.core.policy import OPTIONS
from pgbackups.core.settings import S3Settings

PEER_RELATION = "database-peers"
S3_RELATION = "s3-parameters"
TLS_RELATION = "certificates"
CHARM_NAME = "pgbackups-postgresql"


# ---------------------------------------------------------------------------
# Status mapping


def to_ops_status(status: UnitStatus) -> ops.StatusBase:
    match status.kind:
        case StatusKind.ACTIVE:
            return ops.ActiveStatus(status.message)
        case StatusKind.MAINTENANCE:
            return ops.MaintenanceStatus(status.message)
        case StatusKind.WAITING:
            return ops.WaitingStatus(status.message)
        case StatusKind.BLOCKED:
            return ops.BlockedStatus(status.message)
    raise ValueError(f"unknown status kind {status.kind!r}")  # pragma: no cover


def from_ops_status(status: ops.StatusBase) -> UnitStatus:
    """Juju's ``unknown`` (a fresh unit) and ``error`` read as Maintenance with their text:
    neither is Blocked, and neither is an Active the core could wrongly restore."""
    if isinstance(status, ops.ActiveStatus):
        return UnitStatus.active(status.message)
    if isinstance(status, ops.BlockedStatus):
        return UnitStatus.blocked(status.message)
    if isinstance(status, ops.WaitingStatus):
        return UnitStatus.waiting(status.message)
    return UnitStatus.maintenance(status.message)


# ---------------------------------------------------------------------------
# Peer bags


class PeerBag(MutableMapping[str, str]):
    """One ``database-peers`` bag as the core wants it: "" deletes; a write the unit may
    not make (the app bag on a non-leader) raises PermissionError. Without the peer
    relation (before relation-created) the bag reads empty and refuses writes."""

    def __init__(
        self, content: ops.RelationDataContent | None, *, writable: bool, what: str
    ) -> None:
        self._content = content
        self._writable = writable
        self._what = what

    def _check_write(self) -> ops.RelationDataContent:
        if self._content is None:
            raise RuntimeError(f"the {PEER_RELATION} relation does not exist yet ({self._what})")
        if not self._writable:
            raise PermissionError(f"only the leader writes the {self._what}")
        return self._content

    def __getitem__(self, key: str) -> str:
        if self._content is None:
            raise KeyError(key)
        value = self._content[key]
        if value == "":
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: str) -> None:
        content = self._check_write()
        if value == "":
            content.pop(key, None)
        else:
            content[key] = value

    def __delitem__(self, key: str) -> None:
        content = self._check_write()
        if key not in content:
            raise KeyError(key)
        del content[key]

    def __iter__(self) -> Iterator[str]:
        if self._content is None:
            return iter(())
        return iter([k for k, v in self._content.items() if v != ""])

    def __len__(self) -> int:
        return sum(1 for _ in self)


# ---------------------------------------------------------------------------
# The host


@dataclass
class Adapters:
    """What runs real programs; the only part the charm's tests replace."""

    workload: Workload
    backup_tool: BackupTool
    object_store: Callable[[S3Settings], ObjectStore]


class CharmHost:
    """One unit of the charm, seen by the core. Built afresh for every event; the
    adapters are built on first use (a hook that waits for the peer relation needs none)."""

    def __init__(
        self,
        charm: ops.CharmBase,
        adapters: Callable[[], Adapters],
        *,
        s3_parameters: Callable[[], Mapping[str, str] | None],
        tls: Callable[[], TlsMaterial | None],
    ) -> None:
        self._charm = charm
        self._adapters = adapters
        self._s3_parameters = s3_parameters
        self._tls = tls

    def config_options(self) -> Mapping[str, str]:
        """The backup options among the charm's config (charmcraft.yaml), as strings;
        unset (Juju's "" or 0 for "no value") ones left out. Checked by the core."""
        options: dict[str, str] = {}
        for key in OPTIONS:
            value = self._charm.config.get(key)
            if value is None or isinstance(value, bool) or value in ("", 0):
                continue
            options[key] = str(value)
        return options

    # identity ---------------------------------------------------------------

    @property
    def _model(self) -> ops.Model:
        return self._charm.model

    @property
    def unit_name(self) -> str:
        return self._charm.unit.name

    @property
    def stanza_name(self) -> str:
        return f"{self._model.name}.{self._charm.app.name}"

    @property
    def cluster_id(self) -> str:
        return f"{self._model.uuid}/{self._charm.app.name}"

    def is_leader(self) -> bool:
        return self._charm.unit.is_leader()

    # status -----------------------------------------------------------------

    def get_status(self) -> UnitStatus:
        return from_ops_status(self._charm.unit.status)

    def set_status(self, status: UnitStatus) -> None:
        self._charm.unit.status = to_ops_status(status)

    # peers ------------------------------------------------------------------

    @property
    def peer_relation(self) -> ops.Relation | None:
        return self._model.get_relation(PEER_RELATION)

    @property
    def app_data(self) -> MutableMapping[str, str]:
        relation = self.peer_relation
        content = relation.data[self._charm.app] if relation else None
        return PeerBag(content, writable=self.is_leader(), what="application peer bag")

    @property
    def unit_data(self) -> MutableMapping[str, str]:
        relation = self.peer_relation
        content = relation.data[self._charm.unit] if relation else None
        return PeerBag(content, writable=True, what="unit peer bag")

    def peer_data(self) -> Mapping[str, Mapping[str, str]]:
        relation = self.peer_relation
        if relation is None:
            return {}
        return {
            unit.name: {k: v for k, v in relation.data[unit].items() if v != ""}
            for unit in sorted(relation.units, key=lambda u: u.name)
        }

    def planned_units(self) -> int:
        return self._charm.app.planned_units()

    def peers(self) -> Sequence[Peer]:
        """The other units that joined the peer relation, at the address Juju gives them
        there (``ingress-address``, falling back to ``private-address``)."""
        result = []
        for name, data in self.peer_data().items():
            address = data.get("ingress-address") or data.get("private-address")
            if address:
                result.append(Peer(name=name, address=address))
        return result

    def unit_address(self) -> str:
        """This unit's address on the peer relation's binding ("" if not known)."""
        binding = self._model.get_binding(PEER_RELATION)
        if binding is not None:
            address = binding.network.ingress_address or binding.network.bind_address
            if address is not None:
                return str(address)
        return ""

    # settings ---------------------------------------------------------------

    def s3_parameters(self) -> Mapping[str, str] | None:
        return self._s3_parameters()

    def tls(self) -> TlsMaterial | None:
        return self._tls()

    # adapters ---------------------------------------------------------------

    @property
    def workload(self) -> Workload:
        return self._adapters().workload

    @property
    def backup_tool(self) -> BackupTool:
        return self._adapters().backup_tool

    def object_store(self, settings: S3Settings) -> ObjectStore:
        return self._adapters().object_store(settings)

    # misc -------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def log_hint(self) -> str:
        return "juju debug-log"

    def describe(self) -> Mapping[str, str]:
        try:
            pgbackups_version = version("pgbackups")
        except PackageNotFoundError:
            pgbackups_version = "vendored"
        return {
            "runtime": "juju",
            "charm": CHARM_NAME,
            "unit": self.unit_name,
            "application": self._charm.app.name,
            "model": self._model.name,
            "model-uuid": self._model.uuid,
            "hostname": socket.gethostname(),
            "juju-version": os.environ.get("JUJU_VERSION", ""),
            "ops-version": ops.__version__,
            "pgbackups-version": pgbackups_version,
        }
