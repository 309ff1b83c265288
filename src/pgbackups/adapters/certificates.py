"""A private certificate authority and the certificates it issues (openssl, EC P-256).

The charm's pgBackRest TLS servers trust this CA alone: a client certificate from a
shared provider (which any related application can ask for, with any common name) is
refused. The CA key lives in a Juju secret, never in a file of its own: it reaches
openssl on its standard input (``/dev/stdin``), and every key openssl makes is printed
to its standard output and kept in memory. Only public material (a CSR, the CA
certificate, the extensions) goes through files, in a private temporary directory.

openssl rather than the ``cryptography`` package: it is installed on every unit already
(and used for the unit's key and CSR), and the charm needs no compiled wheel.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgbackups.adapters import processes

CA_DAYS = 3650
LEAF_DAYS = 3650  # no renewal yet: a unit re-issues its own when the CA or its names change
OPENSSL_TIMEOUT = 30.0
# What a common name or a subject alternative name may hold here: unit and member names,
# host names and addresses. Nothing that ends an openssl -subj field (/, =, +) or a line.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")


class CertificateError(Exception):
    """openssl failed (the message is its last line of output: never a key)."""


@dataclass(frozen=True)
class CertificateAuthority:
    cert_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class IssuedCertificate:
    cert_pem: str
    key_pem: str = field(repr=False)


def _openssl(argv: Sequence[str], *, stdin: str | None = None) -> str:
    result = processes.run(["openssl", *argv], input_text=stdin, timeout=OPENSSL_TIMEOUT)
    if not result.ok:
        # openssl never echoes a key it reads; its last line says what went wrong.
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CertificateError(f"openssl {argv[0]} failed: {last[-300:]}")
    return result.stdout


def _check_name(name: str) -> str:
    if _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"{name!r} cannot be a certificate name")
    return name


def _new_key() -> str:
    return _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])


def new_authority(common_name: str, *, days: int = CA_DAYS) -> CertificateAuthority:
    """A new self-signed CA (key and certificate in PEM, in memory)."""
    key = _new_key()
    cert = _openssl(
        [
            "req", "-x509", "-new", "-key", "/dev/stdin",
            "-subj", f"/CN={_check_name(common_name)}", "-days", str(days),
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        stdin=key,
    )  # fmt: skip
    return CertificateAuthority(cert_pem=cert, key_pem=key)


def _subject_alt_names(names: Sequence[str]) -> str:
    """Every name as a DNS name, and an address as an IP address too: pgBackRest (2.45
    at least) matches the host it dials against DNS names only, and a unit is dialled at
    its address."""
    entries: list[str] = []
    for name in dict.fromkeys(_check_name(n) for n in names):
        entries.append(f"DNS:{name}")
        with contextlib.suppress(ValueError):  # not an address: a DNS name only
            entries.append(f"IP:{ipaddress.ip_address(name)}")
    return ",".join(entries)


def issue(
    authority: CertificateAuthority,
    common_name: str,
    names: Sequence[str],
    *,
    days: int = LEAF_DAYS,
) -> IssuedCertificate:
    """A new key and a certificate for it signed by ``authority``, for both ends of a TLS
    connection (serverAuth and clientAuth): ``common_name`` is what a pgBackRest TLS server
    admits (``tls-server-auth``), ``names`` what a client may dial."""
    key = _new_key()
    csr = _openssl(
        ["req", "-new", "-key", "/dev/stdin", "-subj", f"/CN={_check_name(common_name)}"],
        stdin=key,
    )
    extensions = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    if names:
        extensions += f"subjectAltName={_subject_alt_names(names)}\n"
    with tempfile.TemporaryDirectory(prefix="pgbackups-cert-") as tmp:  # 0700, ours
        folder = Path(tmp)
        (folder / "ca.crt").write_text(authority.cert_pem)
        (folder / "leaf.csr").write_text(csr)
        (folder / "ext.cnf").write_text(extensions)
        cert = _openssl(
            [
                "x509", "-req", "-in", str(folder / "leaf.csr"),
                "-CA", str(folder / "ca.crt"), "-CAkey", "/dev/stdin",
                "-set_serial", "0x" + secrets.token_hex(16), "-days", str(days),
                "-extfile", str(folder / "ext.cnf"),
            ],
            stdin=authority.key_pem,
        )  # fmt: skip
    return IssuedCertificate(cert_pem=cert, key_pem=key)
