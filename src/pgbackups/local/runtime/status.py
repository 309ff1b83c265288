"""``pgbackups status``: collect the facts of a cluster, then render them.

Collection (:func:`collect`) and rendering (:func:`render_table`, :func:`to_json`) are
separate so that other commands can add data (e.g. run update-status first) and reuse
the rendering.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgbackups.adapters.patroni import PatroniUnavailable
from pgbackups.adapters.pgbackrest import Timeouts
from pgbackups.core import messages as msg
from pgbackups.core.handlers._wal import own_archive
from pgbackups.core.handlers.health import health_status, human_size
from pgbackups.core.host import BackupToolError, StatusKind
from pgbackups.core.peer_keys import ARCHIVE_HELD, STANZA
from pgbackups.core.policy import policy_or_default
from pgbackups.core.restore_state import RestoreState
from pgbackups.core.settings import DEFAULT_DELETE_OLDER_THAN_DAYS, S3Settings, parse_s3_settings
from pgbackups.core.window import Window
from pgbackups.local.machinery import etcd
from pgbackups.local.machinery.netns import DCS
from pgbackups.local.runtime.cluster import ETCD, S3, Cluster
from pgbackups.local.runtime.host import LocalHost, peer_store, read_options, read_s3_parameters
from pgbackups.local.runtime.unit import Unit
from pgbackups.local.runtime.workload import local_workload
from pgbackups.workload import moveaside

# What status allows pgBackRest for the recoverable window: a 3 s I/O timeout and 8 s a
# command (a month of backups lists in about 2.2 s here: docs/performance.md).
STATUS_READ_LIMITS = Timeouts(info=8.0, io=3)


@dataclass(frozen=True)
class LeftoverView:
    """A directory moved aside beside a unit's data directory (``pgbackups leftovers``)."""

    name: str
    path: str
    kind: str  # before-restore | failed-restore | patroni-failed | partial-restore | removing
    size: int  # bytes
    age_seconds: int
    needed: bool  # the data from before a restore that has not succeeded: not removable


@dataclass(frozen=True)
class UnitView:
    name: str
    leader: bool
    role: str  # primary | replica | "" (unknown / stopped)
    state: str  # Patroni's state, or "stopped"
    status: str
    message: str
    host: str
    port: int
    data_dir: str
    pid: int | None = None
    leftovers: list[LeftoverView] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceView:
    endpoint: str
    running: bool
    pid: int | None


@dataclass(frozen=True)
class ClusterView:
    name: str
    uuid: str
    tls: bool
    network: str  # the machines' subnet, "" on loopback
    leader: str
    etcd: ServiceView
    s3: ServiceView
    bucket: str
    ca_file: str
    units: list[UnitView] = field(default_factory=list)
    # What `pgbackups s3 set` configured (no secret), and the stanza archiving pushes to.
    backups: dict[str, str] = field(default_factory=dict)
    # The recoverable window per timeline (core/window.py), read when asked (`status`).
    windows: list[Window] = field(default_factory=list)
    window_problem: str = ""  # why the window could not be read


def needed_copy(cluster: Cluster) -> str:
    """The directory a restore that has not succeeded keeps the cluster's data in."""
    restore = RestoreState.read(peer_store(cluster).app_bag(writable=False))
    return restore.moved_data if restore is not None else ""


def leftover_views(unit: Unit, needed: str, now: float | None = None) -> list[LeftoverView]:
    now = time.time() if now is None else now
    return [
        LeftoverView(
            name=item.name,
            path=str(item.path),
            kind=item.kind,
            size=item.size,
            age_seconds=max(0, int(now - item.changed)),
            needed=bool(needed) and Path(needed) == item.path,
        )
        for item in moveaside.leftovers(unit.data_dir)
    ]


def collect(cluster: Cluster, *, window: bool = False) -> ClusterView:
    """The cluster's facts; ``window``: also read the recoverable window from the
    repository (pgBackRest info, the archive listing, pg_waldump of its last segments)."""
    state = cluster.state()
    needed = needed_copy(cluster)
    units: list[UnitView] = []
    for unit in cluster.units():
        role, pstate, pid = "", "stopped", None
        proc = unit.process()
        if proc is not None and proc.is_ours():
            pid = proc.pid
            pstate = "starting"
            if cluster.network_up():  # else nothing answers (its network is gone)
                with contextlib.suppress(PatroniUnavailable), cluster.facts.control():
                    member = unit.client(timeout=2).member()
                    role, pstate = member.role, member.state
        entry = state.statuses.get(unit.name, {})
        status, message = entry.get("status", "active"), entry.get("message", "")
        if pid is None and status == StatusKind.ACTIVE.value:
            # update-status did not run (the whole cluster is down, or --no-update): never
            # show a unit whose Patroni is not running as active. The core's own rule.
            disk = local_workload(cluster, unit).data_disk()
            shown = health_status(running=False, member_state=None, disk=disk)
            if shown is not None:
                status, message = shown.kind.value, shown.message
        units.append(
            UnitView(
                name=unit.name,
                leader=unit.name == state.leader,
                role=role,
                state=pstate,
                status=status,
                message=message,
                host=unit.host,
                port=unit.pg_port,
                data_dir=str(unit.data_dir),
                pid=pid,
                leftovers=leftover_views(unit, needed),
            )
        )

    backups = _backup_settings(cluster)
    reach, problem = (
        _windows(cluster, state.leader) if window and backups.get("stanza") else ([], "")
    )

    def service(key: str, endpoint: str) -> ServiceView:
        proc = state.processes.get(key)
        running = proc is not None and proc.is_ours()
        return ServiceView(endpoint, running, proc.pid if proc and running else None)

    backups = _backup_settings(cluster)
    # "on" says only that pushes are switched on; the primary's update-status says whether
    # they work (core/handlers/archiving.py), and its message is shown beside it.
    problems = [u.message for u in units if msg.is_archive_health_message(u.message)]
    if backups.get("archiving") == "on" and problems:
        backups["archiving"] = "on, " + problems[0]
    return ClusterView(
        name=state.name,
        uuid=state.uuid,
        tls=state.tls,
        network=str(network.subnet) if (network := cluster.facts.network(state)) else "",
        leader=state.leader,
        etcd=service(
            ETCD, etcd.client_url(state.etcd_client_port, cluster.facts.address(DCS, state))
        ),
        s3=service(S3, f"https://{cluster.s3_host(state)}:{state.s3_port}"),
        bucket=state.bucket,
        ca_file=str(cluster.ca_file),
        units=units,
        backups=backups,
        windows=reach,
        window_problem=problem,
    )


def _windows(cluster: Cluster, leader: str) -> tuple[list[Window], str]:
    """The recoverable windows of this cluster's stanza, read through the leader's
    pgBackRest (any unit's would do: they share the repository); a problem instead when
    the repository cannot be read."""
    names = [u.name for u in cluster.units()]
    if not names:
        return [], ""
    unit = cluster.unit(leader if leader in names else names[0])
    # status answers in seconds: a repository that does not (S3 frozen or cut) leaves the
    # window unknown, with the reason, instead of holding the command for pgBackRest's
    # retries (40 s seen with the S3 server stopped).
    host = LocalHost(cluster, unit, peer_store(cluster), timeouts=STATUS_READ_LIMITS)
    try:
        # From the unit's own machine, as its hooks read the repository.
        with cluster.facts.inside(unit.machine):
            # One listing of the archive (segments and timelines), made while info runs.
            stanzas, listing = host.backup_tool.info_and_archive(host.stanza_name)
            if listing is None:
                return [], ""
            _, found = own_archive(host, stanzas, listing.timelines, listing.segments)
            return found, ""
    except BackupToolError as exc:
        return [], str(exc)


def _backup_settings(cluster: Cluster) -> dict[str, str]:
    raw = read_s3_parameters(cluster)
    if raw is None:
        return {}
    parsed = parse_s3_settings(raw)
    view = {"endpoint": raw.get("endpoint", ""), "bucket": raw.get("bucket", "")}
    if isinstance(parsed, S3Settings):
        view.update(endpoint=parsed.endpoint, bucket=parsed.bucket, path=parsed.path)
    app = peer_store(cluster).app_bag(writable=False)
    view["stanza"] = app.get(STANZA, "")
    # held: the repository is this cluster's but cannot be used now; PostgreSQL keeps
    # every WAL segment until it can (docs/reliability.md).
    held = app.get(ARCHIVE_HELD, "")
    view["archiving"] = "on" if view["stanza"] else ("held" if held else "off")
    # What pgBackRest keeps (`pgbackups retention`), else the S3 settings' days.
    retention = policy_or_default(read_options(cluster)).retention
    if retention is not None:
        view["retention"] = retention.describe()
    elif isinstance(parsed, S3Settings):
        days = parsed.delete_older_than_days
        view["retention"] = (
            "keep everything"
            if days == DEFAULT_DELETE_OLDER_THAN_DAYS
            else (f"full: {days} days (time, S3 settings)")
        )
    schedules = policy_or_default(read_options(cluster)).schedules
    if schedules:
        view["schedules"] = ", ".join(f"{t} '{s.text}'" for t, s in schedules.items())
    return view


def to_json(view: ClusterView) -> dict[str, Any]:
    return {
        "cluster": view.name,
        "uuid": view.uuid,
        "tls": view.tls,
        "machines": view.network or None,
        "etcd": asdict(view.etcd),
        "s3": {
            "endpoint": view.s3.endpoint,
            "bucket": view.bucket,
            "ca_file": view.ca_file,
            "running": view.s3.running,
            "pid": view.s3.pid,
            "backups": view.backups,
            "recoverable-window": [w.as_dict() for w in view.windows],
        },
        "units": [
            {k: v for k, v in asdict(u).items() if k != "pid"} | {"pid": u.pid} for u in view.units
        ],
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _backups_line(backups: dict[str, str]) -> str:
    if not backups:
        return "backups not configured (pgbackups s3 set)"
    return (
        f"backups {backups.get('endpoint', '')}  bucket: {backups.get('bucket', '')}  "
        f"path: {backups.get('path', '?')}  stanza: {backups.get('stanza') or '-'}  "
        f"WAL archiving: {backups.get('archiving', 'off')}"
        + (" (WAL kept on the units until S3 works)" if backups.get("archiving") == "held" else "")
        + (f"\n        retention: {backups['retention']}" if backups.get("retention") else "")
        + (f"\n        schedules (UTC): {backups['schedules']}" if backups.get("schedules") else "")
    )


def _window_lines(view: ClusterView) -> list[str]:
    if view.window_problem:
        return [f"recoverable window unknown: {view.window_problem}"]
    return [f"recoverable window  {w.describe()}" for w in view.windows]


def print_unit_statuses(cluster: Cluster) -> None:
    print(render_table(collect(cluster)))


def render_table(view: ClusterView) -> str:
    def up(s: ServiceView) -> str:
        return f"running (pid {s.pid})" if s.running else "stopped"

    head = [
        f"cluster {view.name}  tls: {'on' if view.tls else 'off'}"
        + (f"  machines: {view.network}" if view.network else "")
        + f"  uuid: {view.uuid}",
        f"etcd    {view.etcd.endpoint}  {up(view.etcd)}",
        f"s3      {view.s3.endpoint}  bucket: {view.bucket}  {up(view.s3)}  ca: {view.ca_file}",
        _backups_line(view.backups),
        *_window_lines(view),
        "",
    ]
    rows = [["UNIT", "LEADER", "ROLE", "STATE", "STATUS", "MESSAGE", "ADDRESS", "DATA"]]
    for u in view.units:
        rows.append(
            [
                u.name,
                "*" if u.leader else "",
                u.role or "-",
                u.state,
                u.status,
                u.message or "-",
                f"{u.host}:{u.port}",
                u.data_dir,
            ]
        )
    return "\n".join(head) + _table(rows) + render_leftovers(view)


def age_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def leftover_rows(view: ClusterView) -> list[list[str]]:
    rows = [["UNIT", "LEFTOVER", "KIND", "SIZE", "AGE", "REMOVABLE"]]
    for u in view.units:
        for item in u.leftovers:
            removable = "no: a failed restore's old data" if item.needed else "yes"
            rows.append(
                [
                    u.name,
                    item.name,
                    item.kind,
                    human_size(item.size),
                    age_text(item.age_seconds),
                    removable,
                ]
            )
    return rows


def render_leftovers(view: ClusterView) -> str:
    """The leftovers under the units' table (nothing when there are none)."""
    rows = leftover_rows(view)
    if len(rows) == 1:
        return ""
    hint = "pgbackups leftovers remove" + ("" if view.name == "main" else f" --name {view.name}")
    return (
        "\n\nleftovers: copies of data moved aside, kept until removed "
        f"({hint} UNIT LEFTOVER...)\n" + _table(rows)
    )
