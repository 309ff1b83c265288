"""A CA per cluster, and the certificates it issues (openssl, EC P-256).

The S3 server gets a certificate for ``localhost`` (+ IP 127.0.0.1; pgBackRest 2.45 does
not match IP SANs, so clients use the name). With ``--tls`` every unit gets one for
PostgreSQL and, later, the pgBackRest TLS server (serverAuth + clientAuth).
Keys are generated in a private temporary directory and only then moved into place,
so they are never readable by others, not even for a moment. The certificate folders
are root's (``paths``): nothing here is written where the database user could plant a
link, and a key the database user reads is root's, 0640, with that user's group.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.adapters.processes import OsUser
from pgbackups.local.errors import PgbackupsError

log = logging.getLogger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 825
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(argv: Sequence[str]) -> None:
    result = processes.run(["openssl", *argv], timeout=30)
    if not result.ok:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PgbackupsError(f"openssl {argv[0]} failed: {last}")


def _install(src: Path, dest: Path, *, mode: int, owner: OsUser | None) -> None:
    # ``src`` is in root's private (0700) temporary folder: by path is safe there; the
    # rename then replaces ``dest`` in root's own folder, whatever it was.
    os.chmod(src, mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(src, owner.uid, owner.gid)
    os.replace(src, dest)


def create_ca(cert: Path, key: Path, common_name: str) -> None:
    """A self-signed CA; its key stays with the invoking user (0600)."""
    # mkdtemp: a new 0700 folder of root's, in root's own certificate folder.
    with tempfile.TemporaryDirectory(dir=cert.parent, prefix=".ca-") as tmp:
        tkey, tcert = Path(tmp) / "ca.key", Path(tmp) / "ca.crt"
        _openssl(
            [
                "req", "-x509", *_KEY_ARGS, "-keyout", str(tkey), "-out", str(tcert),
                "-days", str(CA_DAYS), "-subj", f"/CN={common_name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )  # fmt: skip
        _install(tkey, key, mode=0o600, owner=None)
        _install(tcert, cert, mode=0o644, owner=None)


def issue_cert(
    *,
    ca_cert: Path,
    ca_key: Path,
    cert: Path,
    key: Path,
    common_name: str,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    client_auth: bool = False,
    owner: OsUser | None = None,
) -> None:
    """A leaf certificate signed by the CA, owned by ``owner``; ``key`` is 0600, or 0640
    when ``owner`` is root with another user's group (PostgreSQL and pgBackRest accept a
    root-owned key that its group may read: :func:`pgbackups.adapters.files.config_owner`)."""
    eku = "serverAuth,clientAuth" if client_auth else "serverAuth"
    san = ",".join([f"DNS:{d}" for d in dns_names] + [f"IP:{ip}" for ip in ip_addresses])
    # mkdtemp: a new 0700 folder of root's, in root's own certificate folder.
    with tempfile.TemporaryDirectory(dir=cert.parent, prefix=".leaf-") as tmp:
        t = Path(tmp)
        ext = t / "ext.cnf"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n"
            f"subjectAltName={san}\n"
        )
        _openssl(
            ["req", "-new", *_KEY_ARGS, "-keyout", str(t / "leaf.key"), "-out",
             str(t / "leaf.csr"), "-subj", f"/CN={common_name}"]
        )  # fmt: skip
        _openssl(
            ["x509", "-req", "-in", str(t / "leaf.csr"), "-CA", str(ca_cert), "-CAkey",
             str(ca_key), "-set_serial", "0x" + secrets.token_hex(16), "-days",
             str(LEAF_DAYS), "-extfile", str(ext), "-out", str(t / "leaf.crt")]
        )  # fmt: skip
        group_reads = owner is not None and owner.uid == 0 and owner.gid != 0
        _install(t / "leaf.key", key, mode=0o640 if group_reads else 0o600, owner=owner)
        _install(t / "leaf.crt", cert, mode=0o644, owner=owner)


def remove_cert(cert: Path, key: Path) -> None:
    # Names in root's own folder: unlink removes a link, never what it points at.
    for path in (cert, key):
        path.unlink(missing_ok=True)
