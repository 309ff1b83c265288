"""The workload of one local unit, as the core sees it: the shared
:class:`~pgbackups.workload.workload.UnitWorkload` with this machine's parts.

PostgreSQL runs under a Patroni we start and stop by PID, the pgBackRest TLS server is a
daemon we start and stop by PID too (:mod:`.services`), the DCS is the cluster's etcd
(:mod:`.dcs`), and every unit has its own folder and ports (:meth:`Unit.layout`).
"""

from __future__ import annotations

from pgbackups.local.runtime.cluster import Cluster
from pgbackups.local.runtime.services import UnitServices
from pgbackups.local.runtime.unit import Unit
from pgbackups.workload.workload import UnitWorkload


def local_workload(cluster: Cluster, unit: Unit) -> UnitWorkload:
    return UnitWorkload(
        unit.facts,
        UnitServices(cluster, unit),
        unit.dcs(),
        db_user=cluster.db_user,
        # Recorded once the first primary accepted writes: a failed restore later (no
        # primary at all) must still let a new restore or a rollback run.
        cluster_initialised=lambda: cluster.state().bootstrapped,
    )
