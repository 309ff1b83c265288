"""A single-node etcd per cluster on loopback: Patroni's DCS (etcd3 API).

Any local user can open a loopback port, and whoever writes Patroni's keys can fake a
leader. So etcd serves TLS on both its ports and lets in only clients that present a
certificate from the cluster's CA (``--client-cert-auth``, ``--peer-client-cert-auth``):
those keys belong to the database user. Certificates rather than etcd's users and
passwords: the cluster already has a CA, there is no moment between start and
``auth enable`` when etcd is open, and no password goes on a command line (etcd 3.4).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pgbackups.adapters.processes import OsUser
from pgbackups.local.machinery import tls as tls_mod

# Where etcd listens without machines (machinery/netns.py: then on the DCS machine's address).
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class EtcdTls:
    """The files of etcd's TLS: its own certificate, and what its clients present."""

    ca_file: Path
    cert_file: Path  # etcd's own (serverAuth + clientAuth: it is its own peer)
    key_file: Path
    client_cert_file: Path
    client_key_file: Path


def issue_certs(
    tls: EtcdTls, ca_key: Path, *, client_name: str, owner: OsUser, host: str = LOOPBACK
) -> None:
    """etcd's own certificate (server, and client of itself on the peer port) and the one
    its clients present, both from the CA of ``tls.ca_file``; keys 0600 ``owner``'s."""
    tls_mod.issue_cert(
        ca_cert=tls.ca_file,
        ca_key=ca_key,
        cert=tls.cert_file,
        key=tls.key_file,
        common_name="localhost",
        # Clients dial 127.0.0.1. No DNS name: python-etcd (Patroni's etcd3 client) reads
        # the names with pyOpenSSL, which needs python3-idna for a DNS name (Debian's
        # Patroni 3.0.2 does not pull it in) and nothing for an IP address.
        dns_names=(),
        ip_addresses=(host,),
        client_auth=True,
        owner=owner,
    )
    tls_mod.issue_cert(
        ca_cert=tls.ca_file,
        ca_key=ca_key,
        cert=tls.client_cert_file,
        key=tls.client_key_file,
        common_name=client_name,
        client_auth=True,
        owner=owner,
    )


def client_url(port: int, host: str = LOOPBACK) -> str:
    return f"https://{host}:{port}"


def argv(
    etcd: str,
    *,
    name: str,
    data_dir: Path,
    client_port: int,
    peer_port: int,
    tls: EtcdTls,
    host: str = LOOPBACK,
) -> list[str]:
    client = client_url(client_port, host)
    peer = f"https://{host}:{peer_port}"
    return [
        etcd,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--listen-metrics-urls", "",
        "--cert-file", str(tls.cert_file),
        "--key-file", str(tls.key_file),
        "--trusted-ca-file", str(tls.ca_file),
        "--client-cert-auth",
        "--peer-cert-file", str(tls.cert_file),
        "--peer-key-file", str(tls.key_file),
        "--peer-trusted-ca-file", str(tls.ca_file),
        "--peer-client-cert-auth",
    ]  # fmt: skip


def client_context(tls: EtcdTls) -> ssl.SSLContext:
    """What etcd's clients need: its CA, and the client certificate it asks for."""
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    context.load_cert_chain(str(tls.client_cert_file), str(tls.client_key_file))
    return context


def patroni_section(endpoint: str, tls: EtcdTls) -> dict[str, object]:
    """Patroni's ``etcd3`` section (3.0.2: ``protocol``, ``cacert``, ``cert``, ``key``)."""
    return {
        "hosts": [endpoint],
        "protocol": "https",
        "cacert": str(tls.ca_file),
        "cert": str(tls.client_cert_file),
        "key": str(tls.client_key_file),
    }


def is_healthy(client_port: int, tls: EtcdTls, timeout: float = 1.0, host: str = LOOPBACK) -> bool:
    url = f"{client_url(client_port, host)}/health"
    try:
        context = client_context(tls)
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            data = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(data, dict) and str(data.get("health")) == "true"


def delete_prefix(endpoint: str, tls: EtcdTls, prefix: str, timeout: float = 10.0) -> int:
    """Delete every key under ``prefix`` in one request to etcd's v3 gateway; the number
    deleted. Raises OSError (unreachable, or etcd refused it)."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])  # the first key past the prefix
    body = json.dumps(
        {"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}
    ).encode()
    request = urllib.request.Request(
        f"https://{endpoint}/v3/kv/deleterange", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=client_context(tls)) as resp:  # noqa: S310
            answer = json.loads(resp.read())
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(f"etcd at {endpoint} did not delete {prefix}: {exc}") from exc
    return int(answer.get("deleted", 0))
