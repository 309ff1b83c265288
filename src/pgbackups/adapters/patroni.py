"""Patroni adapter: render a member's YAML from a WorkloadConfig, talk to its REST API,
and remove a cluster's keys from the DCS.

Written against Debian's Patroni 3.0.2 (``/usr/bin/patroni``) and tolerant of 4.x: the
REST shapes differ (3.0.2 reports a streaming replica as ``running`` with ``lag``; 4.x
as ``streaming`` with receive/replay lags) and 3.0.2 ignores extra keys under a custom
bootstrap method, so every pgBackRest option goes into ``command``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import shlex
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgbackups.adapters import processes
from pgbackups.adapters.pgbackrest import restore_options
from pgbackups.core.host import (
    CommandResult,
    ReplicaRestore,
    RestoreTarget,
    TlsMaterial,
    WorkloadConfig,
    WorkloadUnavailable,
)

log = logging.getLogger(__name__)

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
PATRONICTL = "patronictl"
# archive_mode stays on so that turning archiving on and off is a reload, not a restart.
ARCHIVE_OFF_COMMAND = "/bin/true"
# Fails on purpose, saying why in PostgreSQL's log: the archiver keeps the segment and
# tries again (every minute after three quick failures), so held WAL is never lost.
ARCHIVE_HOLD_COMMAND = (
    "echo 'pgbackups: WAL archiving held until the S3 repository works' >&2; exit 1"
)
REPLICATION_USER = "replicator"
# Patroni's DCS namespace (its default): a cluster's keys are <namespace><scope>/...
NAMESPACE = "/service/"
REWIND_USER = "rewind_user"
# The user every write request to Patroni's REST API authenticates as (HTTP basic auth).
REST_API_USER = "pgbackups"
# pg_ident's map for the unix socket: the OS users that may be the database superuser.
PEER_MAP = "pgbackups"
# Besides the database OS user, root: it runs the hooks and the local CLI, and it can
# read every password anyway (Patroni's YAML, the passwords file), so mapping it gives
# nobody anything new, and spares a password on disk for root's own connections.
ROOT_OS_USER = "root"
# The loss window when WAL comes slowly: a partly filled segment is archived after at most
# this. Measured (docs/performance.md): under pgbench at 5 tps the newest archived WAL was
# at most 59.9 s old (median 25.8 s); at full speed (1966 tps) at most 10.7 s, segments
# filling first. Each forced switch is one more WAL object in S3: at most 1440 a day.
ARCHIVE_TIMEOUT_SECONDS = 60
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True)
class PatroniPasswords:
    """The cluster's generated passwords (the host keeps them in one place: the local
    cluster's passwords file, the charm's application bag)."""

    superuser: str = field(repr=False)
    replication: str = field(repr=False)
    rewind: str = field(repr=False)
    rest_api: str = field(repr=False)  # Patroni's REST API, for every write endpoint
    raft: str = field(default="", repr=False)  # Patroni's Raft (the charm's DCS) only


@dataclass(frozen=True)
class RestAuth:
    """HTTP basic credentials for Patroni's REST API."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def of(cls, passwords: PatroniPasswords) -> RestAuth:
        return cls(REST_API_USER, passwords.rest_api)

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass(frozen=True)
class PatroniMember:
    """The static facts of one Patroni member; the WorkloadConfig supplies the rest."""

    scope: str
    name: str
    data_dir: str
    host: str
    pg_port: int
    rest_port: int
    socket_dir: str
    etcd_hosts: tuple[str, ...]
    passwords: PatroniPasswords = field(repr=False)
    pgpass: str
    pgbackrest_config: str
    namespace: str = NAMESPACE
    bin_dir: str = DEFAULT_BIN_DIR
    log_dir: str | None = None  # None: Patroni logs to stderr (the spawn log file)
    ssl: TlsMaterial | None = None  # PostgreSQL serves TLS with these files
    superuser: str = "postgres"
    # The other units' addresses: replication and pg_rewind come from them (and this one).
    peer_addresses: tuple[str, ...] = ()
    # The OS user PostgreSQL, Patroni and pgBackRest run as: the socket's peer user.
    db_os_user: str = "postgres"


def archive_command(member: PatroniMember, stanza: str | None, *, hold: bool = False) -> str:
    """pgBackRest's archive-push while a stanza is set; while WAL is held, a command that
    fails (PostgreSQL then keeps the segment and retries, so nothing is marked archived);
    a no-op only when the cluster has no repository of its own (docs/reliability.md)."""
    if not stanza:
        return ARCHIVE_HOLD_COMMAND if hold else ARCHIVE_OFF_COMMAND
    return (
        f"pgbackrest --config={shlex.quote(member.pgbackrest_config)} "
        f'--stanza={shlex.quote(stanza)} archive-push "%p"'
    )


def archive_get_command(member: PatroniMember, stanza: str) -> str:
    """A standby's ``restore_command``: pgBackRest's archive-get from ``stanza``."""
    return (
        f"pgbackrest --config={shlex.quote(member.pgbackrest_config)} "
        f'--stanza={shlex.quote(stanza)} archive-get %f "%p"'
    )


def restore_command(member: PatroniMember, restore: RestoreTarget) -> str:
    """The custom-bootstrap command: every option inline (Patroni 3.0.2 ignores extra keys;
    the target's options: :func:`pgbackrest.restore_options`). The command is
    ``shlex``-quoted: Patroni splits it, so a time target with a space stays one argument.
    A restore no longer goes through it (the workload restores beside the data directory
    and Patroni takes the recovered database over: docs/performance.md); it stays Patroni's
    bootstrap while a restore is recorded, for a data directory that is empty then."""
    argv = [
        "pgbackrest",
        f"--config={member.pgbackrest_config}",
        f"--stanza={restore.stanza}",
        f"--pg1-path={member.data_dir}",
        *restore_options(restore),
        "restore",
    ]
    return shlex.join(argv)


def replica_restore_command(member: PatroniMember, replica: ReplicaRestore) -> str:
    """Patroni's pgBackRest replica method while a cluster restore re-creates the units:
    the backup set the primary was restored from (``--set``: the repository's newest
    backup may be past the point the new timeline branched at, which a standby cannot
    follow), as a standby; ``--delta`` reuses what a killed attempt left (Patroni keeps it:
    ``keep_data``). Recovery then follows the newest timeline in the archive, the restored
    primary's, and streams."""
    argv = [
        "pgbackrest",
        f"--config={member.pgbackrest_config}",
        f"--stanza={replica.stanza}",
        f"--pg1-path={member.data_dir}",
    ]
    if replica.label:
        argv.append(f"--set={replica.label}")
    argv += ["--delta", "--type=standby", "restore"]
    return shlex.join(argv)


def _host_cidr(address: str) -> str:
    """``address`` as a one-host network for pg_hba (a unit's address is an IP address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError("a unit address for pg_hba is not an IP address") from None
    return f"{ip}/{ip.max_prefixlen}"


def pg_ident(member: PatroniMember) -> list[str]:
    """The OS users the unix socket lets in as the superuser, without a password."""
    users = dict.fromkeys((member.db_os_user, ROOT_OS_USER))
    return [f"{PEER_MAP} {user} {member.superuser}" for user in users]


def pg_hba(member: PatroniMember, *, connectivity: bool) -> list[str]:
    """Rules in order (PostgreSQL takes the first that matches, and a failed
    authentication does not fall through to the next):

    - the unix socket: the superuser by ``peer`` for the database OS user (and root, see
      :data:`ROOT_OS_USER`) only; anyone else, any role, by password;
    - replication and pg_rewind's connection from the units' own addresses only, always;
    - with connectivity off, every other TCP client is rejected;
    - then TCP clients on this machine, by password.
    """
    loopback = ("127.0.0.1/32", "::1/128")
    units = list(dict.fromkeys(_host_cidr(a) for a in (member.host, *member.peer_addresses)))
    rules = [
        f"local all {member.superuser} peer map={PEER_MAP}",
        "local all all scram-sha-256",
    ]
    for cidr in units:
        rules += [
            f"host replication {REPLICATION_USER} {cidr} scram-sha-256",
            f"host postgres {REWIND_USER} {cidr} scram-sha-256",
        ]
    if not connectivity:
        rules += [
            "host all all 0.0.0.0/0 reject",
            "host all all 127.0.0.1/32 reject",
            "host all all ::/0 reject",
        ]
    own = _host_cidr(member.host)
    rules += [f"host all all {cidr} scram-sha-256" for cidr in dict.fromkeys((*loopback, own))]
    return rules


def render_config(member: PatroniMember, config: WorkloadConfig) -> dict[str, Any]:
    """The Patroni YAML of ``member`` (a YAML-serialisable dict) for ``config``."""
    archive = archive_command(member, config.stanza, hold=config.hold_wal)
    local_params: dict[str, Any] = {
        "unix_socket_directories": member.socket_dir,
        "archive_mode": "on",
        "archive_command": archive,
        # Also here, not only in bootstrap.dcs (applied once, at cluster creation): in force
        # on existing clusters at the next reload. The number: ARCHIVE_TIMEOUT_SECONDS.
        "archive_timeout": ARCHIVE_TIMEOUT_SECONDS,
    }
    if member.ssl is not None:
        local_params.update(
            {
                "ssl": "on",
                "ssl_cert_file": member.ssl.cert_file,
                "ssl_key_file": member.ssl.key_file,
                "ssl_ca_file": member.ssl.ca_file,
            }
        )
    hba = pg_hba(member, connectivity=config.connectivity)

    bootstrap: dict[str, Any] = {
        "dcs": {
            "ttl": 20,
            "loop_wait": 3,
            "retry_timeout": 5,
            "maximum_lag_on_failover": 1048576,
            "postgresql": {
                "use_pg_rewind": True,
                "use_slots": True,
                "parameters": {
                    "wal_level": "replica",
                    "hot_standby": "on",
                    "wal_log_hints": "on",
                    "max_wal_senders": 10,
                    "max_replication_slots": 10,
                    "archive_mode": "on",
                    "archive_command": archive,
                    "archive_timeout": ARCHIVE_TIMEOUT_SECONDS,
                },
            },
        },
        "pg_hba": list(hba),
    }
    if config.restore is not None:
        bootstrap["method"] = "pgbackrest"
        bootstrap["pgbackrest"] = {
            "command": restore_command(member, config.restore),
            "no_params": True,
            "keep_existing_recovery_conf": True,
        }
    else:
        bootstrap["initdb"] = [{"encoding": "UTF8"}, "data-checksums"]

    postgresql: dict[str, Any] = {
        "listen": f"{member.host}:{member.pg_port}",
        "connect_address": f"{member.host}:{member.pg_port}",
        "data_dir": member.data_dir,
        "bin_dir": member.bin_dir,
        "pgpass": member.pgpass,
        # Patroni's own connection goes through the socket (peer), not TCP: it then never
        # needs a TCP rule, nor meets the reject rules while a replica is hidden.
        "use_unix_socket": True,
        "authentication": {
            "superuser": {"username": member.superuser, "password": member.passwords.superuser},
            "replication": {
                "username": REPLICATION_USER,
                "password": member.passwords.replication,
            },
            "rewind": {"username": REWIND_USER, "password": member.passwords.rewind},
        },
        "parameters": local_params,
        "pg_hba": hba,
        "pg_ident": pg_ident(member),
        "basebackup": {"checkpoint": "fast"},
    }
    replica = config.replica_restore
    if replica is not None and replica.stanza is not None:
        postgresql["create_replica_methods"] = ["pgbackrest", "basebackup"]
        postgresql["pgbackrest"] = {
            "command": replica_restore_command(member, replica),
            "keep_data": True,
            "no_params": True,
        }
        # Patroni replaces the restore_command pgBackRest wrote with its own recovery
        # settings (recovery_conf). Without one, a standby restored from a backup on
        # timeline 1 asks the primary for the history file of every timeline up to the
        # primary's, and a primary restored twice has none of the branches it does not
        # descend from (PostgreSQL's walreceiver: "could not receive timeline history
        # file"): the unit never streams. From the archive it finds them, and "latest"
        # is the restored primary's timeline: its history is archived before the units
        # re-create themselves. Only while they do: afterwards a timeline left in the
        # archive by a restore that was rolled back could be newer than the primary's.
        postgresql["recovery_conf"] = {
            "restore_command": archive_get_command(member, replica.stanza)
        }
    elif replica is not None:
        # The archive cannot lead a standby to the restored primary's timeline: copy it.
        postgresql["create_replica_methods"] = ["basebackup"]
    elif config.stanza:
        postgresql["create_replica_methods"] = ["pgbackrest", "basebackup"]
        postgresql["pgbackrest"] = {
            "command": (
                f"pgbackrest --config={shlex.quote(member.pgbackrest_config)} "
                f"--stanza={shlex.quote(config.stanza)} --delta restore --type=standby"
            ),
            "keep_data": True,
            "no_params": True,
        }
    else:
        postgresql["create_replica_methods"] = ["basebackup"]

    rendered: dict[str, Any] = {
        "scope": member.scope,
        "namespace": member.namespace,
        "name": member.name,
        "restapi": {
            "listen": f"{member.host}:{member.rest_port}",
            "connect_address": f"{member.host}:{member.rest_port}",
            # Patroni 3.0.2 asks for it on every write endpoint (POST /reload, /restart,
            # /switchover, PATCH /config...); reads (/patroni, /cluster, health) stay open.
            "authentication": {"username": REST_API_USER, "password": member.passwords.rest_api},
        },
        "etcd3": {"hosts": list(member.etcd_hosts)},
        "bootstrap": bootstrap,
        "postgresql": postgresql,
        "tags": {
            "nofailover": config.creating_backup,
            "noloadbalance": config.creating_backup,
            "clonefrom": False,
            "nosync": False,
        },
    }
    if member.log_dir is not None:
        rendered["log"] = {"level": "INFO", "dir": member.log_dir}
    else:
        rendered["log"] = {"level": "INFO"}
    check_printable(rendered)
    return rendered


def check_printable(node: object, where: str = "") -> None:
    """Refuse any key or string value of the document that is not printable ASCII.

    Values from outside (a stanza, paths, a restore target from the application bag)
    end up inside commands Patroni splits and in postgresql.conf lines Patroni writes:
    a line break or a control character there could add a parameter or a word. The
    settings are checked where they enter; this is the second line, whatever a caller
    builds. The value is never shown (passwords live in the same document).
    """
    if isinstance(node, str):
        if _PRINTABLE_RE.fullmatch(node) is None:
            raise ValueError(
                f"Patroni configuration {where or 'value'} is not printable ASCII "
                "(a line break or a control character)"
            )
    elif isinstance(node, Mapping):
        for key, value in node.items():
            check_printable(str(key), f"key under {where or 'the top'}")
            check_printable(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            check_printable(item, f"{where}[{index}]")


# ---------------------------------------------------------------------------
# REST


class PatroniUnavailable(WorkloadUnavailable):
    """Patroni's REST API did not answer (or answered nonsense)."""


PRIMARY_ROLES = frozenset({"leader", "master", "primary", "standby_leader"})


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class ClusterMember:
    """One member as ``GET /cluster`` reports it (3.0.2 and 4.x shapes)."""

    name: str
    role: str  # leader | replica | sync_standby | standby_leader
    state: str  # running | streaming | stopped | start failed | ...
    host: str | None
    port: int | None
    api_url: str | None
    timeline: int | None
    lag: int | None  # bytes behind the leader; None when unknown or for the leader
    receive_lag: int | None
    replay_lag: int | None
    tags: Mapping[str, Any]

    @property
    def is_primary(self) -> bool:
        return self.role in PRIMARY_ROLES

    @property
    def is_streaming(self) -> bool:
        """A replica that follows the leader: 4.x says ``streaming``; 3.0.2 says
        ``running`` and knows its lag."""
        if self.is_primary:
            return False
        if self.state == "streaming":
            return True
        return self.state == "running" and self.lag is not None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterMember:
        tags = data.get("tags")
        port = _int_or_none(data.get("port"))
        return cls(
            name=str(data.get("name", "")),
            role=str(data.get("role", "")),
            state=str(data.get("state", "")),
            host=str(data["host"]) if data.get("host") else None,
            port=port,
            api_url=str(data["api_url"]) if data.get("api_url") else None,
            timeline=_int_or_none(data.get("timeline")),
            lag=_int_or_none(data.get("lag")),
            receive_lag=_int_or_none(data.get("receive_lag")),
            replay_lag=_int_or_none(data.get("replay_lag")),
            tags=dict(tags) if isinstance(tags, Mapping) else {},
        )


def parse_cluster(data: Mapping[str, Any]) -> list[ClusterMember]:
    members = data.get("members")
    if not isinstance(members, list):
        raise PatroniUnavailable("unexpected /cluster answer: no members list")
    return [ClusterMember.from_json(m) for m in members if isinstance(m, Mapping)]


@dataclass(frozen=True)
class MemberStatus:
    """``GET /patroni`` of one member."""

    state: str
    role: str  # normalised: primary | replica | "" (3.0.2 says master)
    timeline: int | None
    system_identifier: int | None
    server_version: int | None
    patroni_version: str | None
    replication_state: str | None  # 4.x: streaming | in archive recovery

    @property
    def is_primary(self) -> bool:
        return self.role == "primary"

    @property
    def is_running(self) -> bool:
        return self.state in ("running", "streaming")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberStatus:
        role = str(data.get("role", ""))
        if role in PRIMARY_ROLES:
            role = "primary"
        patroni = data.get("patroni")
        version = patroni.get("version") if isinstance(patroni, Mapping) else None
        return cls(
            state=str(data.get("state", "")),
            role=role,
            timeline=_int_or_none(data.get("timeline")),
            system_identifier=_int_or_none(data.get("database_system_identifier")),
            server_version=_int_or_none(data.get("server_version")),
            patroni_version=str(version) if version is not None else None,
            replication_state=(
                str(data["replication_state"]) if data.get("replication_state") else None
            ),
        )


class PatroniClient:
    """A small REST client for one member. Writes carry ``auth`` (Patroni refuses them
    without it, HTTP 401); reads are open in Patroni 3.0.2 and are sent without it."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 5.0, auth: RestAuth | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._auth = auth

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"PatroniClient({self.base_url})"

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        if method != "GET" and self._auth is not None:
            headers["Authorization"] = self._auth.header()
        req = urllib.request.Request(  # noqa: S310 - the URL is always http://host:port
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (OSError, ValueError) as exc:
            raise PatroniUnavailable(f"Patroni at {self.base_url} unreachable: {exc}") from exc

    def _json(self, path: str) -> Mapping[str, Any]:
        status, text = self._request("GET", path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PatroniUnavailable(f"GET {path}: HTTP {status}, not JSON") from exc
        if not isinstance(data, Mapping):
            raise PatroniUnavailable(f"GET {path}: unexpected answer")
        return data

    def status_code(self, path: str) -> int:
        return self._request("GET", path)[0]

    def cluster(self) -> list[ClusterMember]:
        return parse_cluster(self._json("/cluster"))

    def member(self) -> MemberStatus:
        return MemberStatus.from_json(self._json("/patroni"))

    def is_primary(self) -> bool:
        return self.status_code("/primary") == 200

    def is_running(self) -> bool:
        return self.member().is_running

    def reload(self) -> None:
        status, text = self._request("POST", "/reload")
        if status not in (200, 202):
            raise PatroniUnavailable(f"reload refused: HTTP {status} {text.strip()}")

    def reinitialize(self) -> None:
        """Have Patroni create this replica again (its replica methods, in order). Patroni
        3.0.2 leaves the data directory to the method (a ``keep_data`` method gets it as
        it is)."""
        status, text = self._request("POST", "/reinitialize", {"force": True})
        if status != 200:
            raise PatroniUnavailable(f"reinitialize refused: HTTP {status} {text.strip()}")

    def switchover(self, leader: str, candidate: str) -> str:
        status, text = self._request(
            "POST", "/switchover", {"leader": leader, "candidate": candidate}
        )
        if status not in (200, 202):
            raise PatroniUnavailable(f"switchover refused: HTTP {status} {text.strip()}")
        return text.strip()


def remove_dcs_state(
    config_file: str,
    scope: str,
    *,
    user: processes.OsUser | None = None,
    timeout: float = 60.0,
    patronictl: str = PATRONICTL,
) -> CommandResult:
    """Delete ``scope``'s keys from the DCS, so that the next start bootstraps again.

    patronictl asks for the scope name and a confirmation phrase on stdin.
    """
    return processes.run(
        [patronictl, "-c", config_file, "remove", scope],
        user=user if user is not None else processes.db_user(),
        input_text=f"{scope}\nYes I am aware\n",
        timeout=timeout,
    )
