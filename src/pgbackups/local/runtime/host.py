"""The local runtime as the core's host: one :class:`LocalHost` per unit and event.

Leadership is the runtime's (``pgbackups leader UNIT`` moves it; it need not be the
primary). Statuses live in the cluster state, peer bags and deferred events in
``peers.json`` (see :mod:`pgbackups.local.runtime.peerdata`), S3 settings in a 0600 file.
:class:`Runtime` delivers hooks and actions to units the way Juju would.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgbackups import __version__
from pgbackups.adapters.pgbackrest import PgBackRest, Timeouts
from pgbackups.core.host import Peer, StatusKind, TlsMaterial, UnitStatus
from pgbackups.core.outcomes import Outcome
from pgbackups.core.peer_keys import CLUSTER_INITIALISED
from pgbackups.core.settings import S3Settings
from pgbackups.local.machinery.paths import DEFAULT_NAME, write_file
from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.dispatch import Dispatcher
from pgbackups.local.runtime.peerdata import PeerDataStore
from pgbackups.local.runtime.unit import (
    IO_TIMEOUT_SECONDS,
    Unit,
    stanza_name,
    tls_server_address,
)
from pgbackups.local.runtime.workload import local_workload
from pgbackups.workload.workload import UnitWorkload

if TYPE_CHECKING:
    from pgbackups.adapters.s3 import S3Bucket

log = logging.getLogger(__name__)

# One S3 client per settings (and cluster) for the whole process: creating one costs about 60 ms
# (botocore loads the S3 service model), and `restore --wait` or a command that runs
# several hooks asks for the bucket once per event (docs/performance.md).
_BUCKETS: dict[tuple[S3Settings, Path], S3Bucket] = {}


def peer_store(cluster: Cluster) -> PeerDataStore:
    return PeerDataStore(cluster.paths.root / "peers.json")


def s3_settings_file(cluster: Cluster) -> Path:
    return cluster.paths.secrets_dir / "s3-settings.json"


def read_s3_parameters(cluster: Cluster) -> dict[str, str] | None:
    try:
        data = json.loads(s3_settings_file(cluster).read_text())
    except FileNotFoundError:
        return None
    return {str(k): str(v) for k, v in data.items()}


def write_s3_parameters(cluster: Cluster, parameters: Mapping[str, str] | None) -> None:
    """Store the raw S3 settings (they hold the secret key: mode 0600, never logged)."""
    path = s3_settings_file(cluster)
    if parameters is None:
        path.unlink(missing_ok=True)  # root's secrets folder; unlink never follows a link
        return
    write_file(path, json.dumps(dict(parameters), indent=2, sort_keys=True), mode=0o600)


def options_file(cluster: Cluster) -> Path:
    return cluster.paths.root / "backup-options.json"


def read_options(cluster: Cluster) -> dict[str, str]:
    """The backup options ``pgbackups retention|schedule set`` stored (no secret in them)."""
    try:
        data = json.loads(options_file(cluster).read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def write_options(cluster: Cluster, options: Mapping[str, str]) -> None:
    """Store the options (validated by the caller with ``core.policy.parse_policy``)."""
    text = json.dumps(dict(options), indent=2, sort_keys=True)
    write_file(options_file(cluster), text, mode=0o644)


class LocalHost:
    """``host.Host`` for one unit of a local cluster."""

    def __init__(
        self,
        cluster: Cluster,
        unit: Unit,
        store: PeerDataStore,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.cluster = cluster
        self.unit = unit
        self.store = store
        self._workload = local_workload(cluster, unit)
        # pgBackRest's limits; a reader that must answer quickly (status) passes its own.
        self._timeouts = timeouts or Timeouts(io=IO_TIMEOUT_SECONDS)

    @property
    def unit_name(self) -> str:
        return self.unit.name

    @property
    def stanza_name(self) -> str:
        return stanza_name(self.cluster)

    @property
    def cluster_id(self) -> str:
        return f"local/{self.cluster.state().uuid}"

    def is_leader(self) -> bool:
        return self.cluster.leader == self.unit.name

    def get_status(self) -> UnitStatus:
        status, message = self.cluster.get_status(self.unit.name)
        try:
            kind = StatusKind(status)
        except ValueError:
            kind = StatusKind.MAINTENANCE
        return UnitStatus(kind, message)

    def set_status(self, status: UnitStatus) -> None:
        self.cluster.set_status(self.unit.name, status.kind.value, status.message)

    @property
    def app_data(self) -> MutableMapping[str, str]:
        return self.store.app_bag(writable=self.is_leader())

    @property
    def unit_data(self) -> MutableMapping[str, str]:
        return self.store.unit_bag(self.unit.name)

    def peer_data(self) -> Mapping[str, Mapping[str, str]]:
        members = {u.name for u in self.cluster.units()}
        bags = self.store.other_unit_bags(self.unit.name)
        return {name: bag for name, bag in bags.items() if name in members}

    def planned_units(self) -> int:
        return len(self.cluster.state().units)

    def peers(self) -> Sequence[Peer]:
        return [
            Peer(u.name, tls_server_address(u))
            for u in self.cluster.units()
            if u.name != self.unit.name
        ]

    def s3_parameters(self) -> Mapping[str, str] | None:
        return read_s3_parameters(self.cluster)

    def tls(self) -> TlsMaterial | None:
        return self.unit.tls() if self.cluster.tls_enabled else None

    def config_options(self) -> Mapping[str, str]:
        return read_options(self.cluster)

    @property
    def workload(self) -> UnitWorkload:
        return self._workload

    @property
    def backup_tool(self) -> PgBackRest:
        return PgBackRest(
            self.unit.pgbackrest_config,
            self.stanza_name,
            user=self.cluster.db_user,
            timeouts=self._timeouts,
            # Root's folder of the cluster (the database user cannot write there).
            commit_cache=self.cluster.paths.root / "wal-commits.json",
        )

    def object_store(self, settings: S3Settings) -> S3Bucket:
        # Per cluster too: each one's S3 client verifies against a file in its own folder.
        key = (settings, self.cluster.paths.root)
        bucket = _BUCKETS.get(key)
        if bucket is None:
            # Imported here: botocore is about 100 ms that commands without S3 never pay.
            from pgbackups.adapters.s3 import S3Bucket

            bucket = _BUCKETS[key] = S3Bucket(settings, ca_folder=self.cluster.paths.root)
        return bucket

    def now(self) -> datetime:
        return datetime.now(UTC)

    def log_hint(self) -> str:
        """The command that shows this unit's logs (``--name`` unless the default)."""
        if self.cluster.name == DEFAULT_NAME:
            return f"pgbackups logs {self.unit.name}"
        return f"pgbackups logs --name {self.cluster.name} {self.unit.name}"

    def describe(self) -> Mapping[str, str]:
        return {
            "Runtime": "pgbackups local",
            "pgbackups version": __version__,
            "Cluster": self.cluster.name,
            "Unit Name": self.unit.name,
            "Host": socket.gethostname(),
            "Requested by": getpass.getuser(),
            "Process": str(os.getpid()),
        }


def bag_writers(before: Mapping[str, Any], after: Mapping[str, Any], leader: str) -> set[str]:
    """The units whose writes differ between two snapshots of ``peers.json``."""
    writers = set()
    if before.get("app") != after.get("app"):
        writers.add(leader)
    units_before, units_after = before.get("units", {}), after.get("units", {})
    for name in set(units_before) | set(units_after):
        if units_before.get(name) != units_after.get(name):
            writers.add(name)
    return writers


class Runtime:
    """Delivers events to the units of one local cluster, as Juju would."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = peer_store(cluster)
        self.dispatcher = Dispatcher(self.store, self.host_for, self.machine_of)
        # Once per Runtime: only Cluster.start sets ``bootstrapped`` (never back), and no
        # event delivered through a Runtime calls it.
        self._mark_initialised()

    def machine_of(self, unit_name: str) -> contextlib.AbstractContextManager[None]:
        return self.cluster.facts.inside(self.cluster.unit(unit_name).machine)

    def host_for(self, unit_name: str) -> LocalHost:
        return LocalHost(self.cluster, self.cluster.unit(unit_name), self.store)

    def _mark_initialised(self) -> None:
        """Juju's charm sets ``cluster_initialised`` once Patroni bootstrapped; so do we."""
        if self.cluster.state().bootstrapped and CLUSTER_INITIALISED not in self.store.app_bag(
            writable=False
        ):
            self.store.app_bag(writable=True)[CLUSTER_INITIALISED] = "True"

    def units_primary_first(self) -> list[str]:
        """Unit names, the primary first: a replica's TLS-server step waits for it."""
        names = [u.name for u in self.cluster.units()]
        primary = self.cluster.primary()
        if primary is not None:
            names.remove(primary.name)
            names.insert(0, primary.name)
        return names

    def fire(self, unit: str, event: str) -> Outcome:
        return self.dispatcher.fire(unit, event)

    def fire_all(self, event: str, units: Iterable[str] | None = None) -> dict[str, Outcome]:
        """Deliver ``event`` to every unit (the leader first, then the primary first)."""
        names = list(units) if units is not None else self.units_primary_first()
        leader = self.cluster.leader
        if leader in names:
            names.remove(leader)
            names.insert(0, leader)
        return {name: self.dispatcher.fire(name, event) for name in names}

    def peers_changed(self) -> dict[str, Outcome]:
        """What Juju fires when the peer bags or the set of units change."""
        return self._fire_primary_first("peer-changed")

    def certificates_changed(self) -> dict[str, Outcome]:
        """What the TLS certificates operator causes when certificates arrive or go."""
        return self._fire_primary_first("certificates-changed")

    def _fire_primary_first(self, event: str) -> dict[str, Outcome]:
        # A replica's TLS-server step waits for the primary's server: primary first.
        return {name: self.dispatcher.fire(name, event) for name in self.units_primary_first()}

    def rerun_all_deferred(self) -> None:
        for name in self.units_primary_first():
            self.dispatcher.rerun_deferred(name)

    def update_status(self) -> dict[str, Outcome]:
        return {name: self.dispatcher.fire(name, "update-status") for name in self._names()}

    def run_action(self, unit: str, action: str, params: Mapping[str, str]) -> Outcome:
        before = self.store.snapshot()
        outcome = self.dispatcher.run_action(unit, action, params)
        self.relay_changes(before)
        return outcome

    def relay_changes(self, before: Mapping[str, Any], rounds: int = 4) -> None:
        """What Juju does when a unit writes a peer bag: peer-changed on every other
        unit, and again for what they write in turn (a cluster restore moves on this way:
        the leader records a stage, the others stop and say so, the leader restores).
        A few rounds at most; update-status carries on from there."""
        for _ in range(rounds):
            after = self.store.snapshot()
            writers = bag_writers(before, after, self.cluster.leader)
            if not writers:
                return
            before = after
            for name in self.units_primary_first_leader_first():
                if writers - {name}:
                    self.dispatcher.fire(name, "peer-changed")

    def units_primary_first_leader_first(self) -> list[str]:
        names = self.units_primary_first()
        leader = self.cluster.leader
        if leader in names:
            names.remove(leader)
            names.insert(0, leader)
        return names

    def _names(self) -> list[str]:
        return [u.name for u in self.cluster.units()]

    def forget_unit(self, unit: str) -> None:
        self.store.forget_unit(unit)
