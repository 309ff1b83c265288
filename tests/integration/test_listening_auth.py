"""Every listening service authenticates its clients: the real etcd, Patroni and
PostgreSQL, configured as the local runtime and the charm configure them.

- etcd (local runtime): TLS with client certificates from the cluster CA; a plain or a
  certificate-less put is refused, the cluster's client certificate is let in.
- Patroni's REST API: a write without the password is refused (401), ours is accepted.
- PostgreSQL's socket: peer for the database OS user (and root), a password for anyone
  else, even for the superuser's name.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from realservers import PG_BIN, Certs, free_port, owned_dir, tail, wait_for

from pgbackups.adapters import patroni, postgres, processes
from pgbackups.adapters.files import write_atomically
from pgbackups.adapters.patroni import (
    PatroniClient,
    PatroniMember,
    PatroniPasswords,
    PatroniUnavailable,
    RestAuth,
)
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import WorkloadConfig
from pgbackups.local.machinery import etcd, programs
from pgbackups.local.machinery.etcd import EtcdTls
from pgbackups.workload.dcs import with_dcs

pytestmark = pytest.mark.real

PASSWORDS = PatroniPasswords("su-pw-it", "repl-pw-it", "rewind-pw-it", "rest-pw-it")


@dataclass(frozen=True)
class Etcd:
    port: int
    tls: EtcdTls

    @property
    def url(self) -> str:
        return etcd.client_url(self.port)


@pytest.fixture(scope="module")
def etcd_server(workdir: Path, certs: Certs, db_user: OsUser) -> Iterator[Etcd]:
    """A real etcd started with the runtime's command line and certificates."""
    base = owned_dir(workdir / "etcd", db_user, 0o700)
    d = certs.dir
    tls = EtcdTls(certs.ca_cert, d / "etcd.crt", d / "etcd.key", d / "etcd-c.crt", d / "etcd-c.key")
    etcd.issue_certs(tls, certs.ca_key, client_name="it-etcd-client", owner=db_user)
    port, peer_port = free_port(), free_port()
    argv = etcd.argv(
        programs.find("etcd"),
        name="it",
        data_dir=base / "data",
        client_port=port,
        peer_port=peer_port,
        tls=tls,
    )
    log_file = base / "etcd.log"
    pid = processes.spawn(argv, log_file=log_file, user=db_user)
    try:
        wait_for(lambda: etcd.is_healthy(port, tls), 30, "etcd")
    except TimeoutError:
        processes.stop(pid, timeout=10)
        raise RuntimeError(f"etcd did not start:\n{tail(log_file)}") from None
    yield Etcd(port, tls)
    processes.stop(pid, timeout=30)


def _put(url: str, context: ssl.SSLContext | None = None) -> dict[str, object]:
    """etcd's JSON gateway: put key ``it`` (etcd 3.4 serves /v3/kv/put)."""
    body = json.dumps(
        {"key": base64.b64encode(b"/service/it/leader").decode(), "value": "ZmFrZQ=="}
    )
    req = urllib.request.Request(url + "/v3/kv/put", data=body.encode(), method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


def test_etcd_refuses_a_plain_put(etcd_server: Etcd) -> None:
    plain = etcd_server.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _put(plain)


def test_etcd_refuses_a_put_without_a_client_certificate(etcd_server: Etcd) -> None:
    no_cert = ssl.create_default_context(cafile=str(etcd_server.tls.ca_file))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _put(etcd_server.url, no_cert)


def test_etcd_refuses_a_certificate_of_another_ca(
    etcd_server: Etcd, tmp_path: Path, db_user: OsUser
) -> None:
    from pgbackups.local.machinery import tls

    other = tmp_path / "other"
    other.mkdir()  # create_ca makes no folder (docs/security.md, "Files and privileges")
    tls.create_ca(other / "ca.crt", other / "ca.key", "another CA")
    tls.issue_cert(
        ca_cert=other / "ca.crt",
        ca_key=other / "ca.key",
        cert=other / "c.crt",
        key=other / "c.key",
        common_name="intruder",
        client_auth=True,
    )
    context = ssl.create_default_context(cafile=str(etcd_server.tls.ca_file))
    context.load_cert_chain(str(other / "c.crt"), str(other / "c.key"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _put(etcd_server.url, context)


def test_etcd_lets_in_the_cluster_client_certificate(etcd_server: Etcd) -> None:
    answer = _put(etcd_server.url, etcd.client_context(etcd_server.tls))
    assert "header" in answer


# --- Patroni and PostgreSQL ---------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    member: PatroniMember
    client: PatroniClient  # without credentials

    def authenticated(self, auth: RestAuth) -> PatroniClient:
        return PatroniClient(self.client.host, self.client.port, timeout=10, auth=auth)


@pytest.fixture(scope="module")
def member(workdir: Path, etcd_server: Etcd, db_user: OsUser) -> Iterator[Member]:
    """One Patroni (PostgreSQL 15 bootstrapped by initdb) on the real etcd, with the
    configuration both hosts render."""
    base = owned_dir(workdir / "patroni", db_user, 0o755)
    sock = owned_dir(base / "sock", db_user, 0o755)  # others may reach the socket: the test
    pg_port, rest_port = free_port(), free_port()
    m = PatroniMember(
        scope="it-listen",
        name="it-listen-0",
        data_dir=str(base / "data"),
        host="127.0.0.1",
        pg_port=pg_port,
        rest_port=rest_port,
        socket_dir=str(sock),
        etcd_hosts=(),
        passwords=PASSWORDS,
        pgpass=str(base / "pgpass"),
        pgbackrest_config=str(base / "pgbackrest.conf"),
        bin_dir=str(PG_BIN),
        db_os_user=db_user.name,
    )
    rendered = patroni.render_config(m, WorkloadConfig(s3=None, stanza=None, tls_server=False))
    section = {"etcd3": etcd.patroni_section(f"127.0.0.1:{etcd_server.port}", etcd_server.tls)}
    config = base / "patroni.yml"
    write_atomically(yaml.safe_dump(with_dcs(rendered, section)), config, db_user, 0o600)
    log_file = base / "patroni.log"
    pid = processes.spawn([programs.find("patroni"), str(config)], log_file=log_file, user=db_user)
    client = PatroniClient("127.0.0.1", rest_port, timeout=5)

    def primary() -> bool:
        try:
            return client.is_primary()
        except PatroniUnavailable:
            return False

    try:
        wait_for(primary, 90, "patroni primary")
        wait_for(lambda: postgres.accepts_connections(str(sock), pg_port), 30, "postgres")
    except TimeoutError:
        processes.stop(pid, timeout=60)
        raise RuntimeError(f"patroni did not start:\n{tail(log_file, 40)}") from None
    yield Member(m, client)
    processes.stop(pid, timeout=60)


def test_patroni_refuses_an_unauthenticated_reload(member: Member) -> None:
    req = urllib.request.Request(member.client.base_url + "/reload", method="POST")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310
    assert refused.value.code == 401
    with pytest.raises(PatroniUnavailable, match="HTTP 401"):
        member.client.reload()  # our client without credentials
    with pytest.raises(PatroniUnavailable, match="HTTP 401"):
        member.authenticated(RestAuth(patroni.REST_API_USER, "wrong")).reload()


def test_patroni_accepts_our_reload_and_reads_stay_open(member: Member) -> None:
    member.authenticated(RestAuth.of(PASSWORDS)).reload()
    assert member.client.member().is_primary  # GET /patroni without credentials


def _psql_as(user: OsUser, m: PatroniMember, role: str, password: str | None = None) -> str:
    """psql over the socket as OS ``user`` and database ``role``: '' when let in, else
    PostgreSQL's refusal."""
    env = {"PGPASSWORD": password} if password is not None else {}
    result = processes.run(
        [str(PG_BIN / "psql"), "-h", m.socket_dir, "-p", str(m.pg_port), "-U", role,
         "-d", "postgres", "-w", "-XAtc", "select 1"],
        user=user,
        env=env,
        timeout=30,
    )  # fmt: skip
    return "" if result.ok and result.stdout.strip() == "1" else result.stderr.strip()


def test_socket_lets_the_db_user_in_by_peer(member: Member, db_user: OsUser) -> None:
    assert _psql_as(db_user, member.member, "postgres") == ""


def test_socket_lets_root_in_by_peer(member: Member) -> None:
    if os.geteuid() != 0:
        pytest.skip("root's own connection: run as root")
    m = member.member
    with postgres.connect(m.socket_dir, m.pg_port) as conn:  # no password
        assert conn.execute("select current_user").fetchone() == ("postgres",)


def test_socket_refuses_the_superuser_to_another_os_user(member: Member) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run psql as another OS user")
    entry = pwd.getpwnam("nobody")
    nobody = OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, "/")
    m = member.member
    refused = _psql_as(nobody, m, "postgres")
    assert "Peer authentication failed" in refused
    # Not even with the superuser's password: the superuser comes in by peer only.
    assert "Peer authentication failed" in _psql_as(nobody, m, "postgres", PASSWORDS.superuser)
    # Any other role needs its password.
    assert "password" in _psql_as(nobody, m, patroni.REPLICATION_USER)
    assert _psql_as(nobody, m, patroni.REPLICATION_USER, PASSWORDS.replication) == ""


def test_tcp_needs_a_password(member: Member) -> None:
    m = member.member
    assert postgres.admits_tcp_client("127.0.0.1", m.pg_port, "postgres", PASSWORDS.superuser)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1", port=m.pg_port, user="postgres", password="wrong", dbname="postgres"
        ).close()


def test_a_clusters_keys_are_removed_in_one_request_and_nothing_else(
    etcd_server: Etcd,
) -> None:
    """What a restore's DCS removal deletes (patronictl remove's keys, without its
    Python start): every key under the scope, not another cluster's whose name begins
    the same; and only with the cluster's client certificate."""
    context = etcd.client_context(etcd_server.tls)
    for key in (b"/service/it/leader", b"/service/it/members/it-0", b"/service/it2/leader"):
        body = json.dumps({"key": base64.b64encode(key).decode(), "value": "eA=="}).encode()
        req = urllib.request.Request(etcd_server.url + "/v3/kv/put", data=body, method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=5, context=context):  # noqa: S310
            pass
    endpoint = f"127.0.0.1:{etcd_server.port}"
    assert etcd.delete_prefix(endpoint, etcd_server.tls, "/service/it/") >= 2
    assert etcd.delete_prefix(endpoint, etcd_server.tls, "/service/it/") == 0
    body = json.dumps({"key": base64.b64encode(b"/service/it2/leader").decode()}).encode()
    req = urllib.request.Request(etcd_server.url + "/v3/kv/range", data=body, method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
        assert json.loads(resp.read()).get("count") == "1", "another cluster's key stays"
