"""This unit's identity for the pgBackRest TLS servers: a key and a certificate from the
application's private CA, and that CA alone as what the servers and clients trust.

Why a private CA: pgBackRest's TLS server admits a client by the common name of its
certificate (``tls-server-auth``). With the ``certificates`` relation's CA, any
application related to the same provider can get a certificate with any name, ours
included. Only our units can read the application's secret, so only they can hold a
certificate from its CA.

Why each unit issues its own certificate from the CA key in the secret, instead of the
leader signing CSRs from the unit bags: an application-owned Juju secret is readable by
every unit of the application anyway (Juju has no leader-only read), so a CSR round trip
would keep the key from nobody, and would make every unit's TLS wait for a leader hook.

The certificate's common name is the unit's member name (``app-0``: stable, and what the
peers' ``tls-server-auth`` lists); its names are the unit's address (a DNS name too:
pgBackRest dials the address and matches DNS names only). It is issued again when the CA
or the address changes. The key is 0600 and the database user's (the TLS server reads
it); the certificates are 0644. The CA key never touches this disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pgbackups.adapters import certificates
from pgbackups.adapters.certificates import CertificateAuthority
from pgbackups.adapters.files import config_owner, ensure_dir, read_text, write_atomically
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import TlsMaterial

log = logging.getLogger(__name__)


class BackupTlsFiles(Protocol):
    def material(self) -> TlsMaterial | None:
        """The CA, certificate and key paths, once all three are on disk."""
        ...

    def ensure(self, ca: CertificateAuthority, common_name: str, names: Sequence[str]) -> bool:
        """Issue this unit's certificate unless the one on disk is from ``ca`` for these
        names; True when something changed on disk."""
        ...


class DiskBackupTls:
    def __init__(self, directory: str, owner: OsUser | None) -> None:
        self.dir = Path(directory)
        self.owner = owner

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.dir / "unit.crt"

    @property
    def key_file(self) -> Path:
        return self.dir / "unit.key"

    @property
    def issued_file(self) -> Path:
        """What the certificate on disk was issued for (no secret)."""
        return self.dir / "issued.json"

    def material(self) -> TlsMaterial | None:
        files = (self.ca_file, self.cert_file, self.key_file)
        if not all(f.is_file() and f.stat().st_size > 0 for f in files):
            return None
        return TlsMaterial(str(self.ca_file), str(self.cert_file), str(self.key_file))

    def ensure(self, ca: CertificateAuthority, common_name: str, names: Sequence[str]) -> bool:
        issued_for = json.dumps(
            {"ca": ca.cert_pem, "common-name": common_name, "names": list(names)}, sort_keys=True
        )
        if self.material() is not None and read_text(self.issued_file) == issued_for:
            return False
        issued = certificates.issue(ca, common_name, names)
        # Root's folder, read by the database user through its group (pgBackRest's TLS
        # server runs as postgres): root never writes into a folder postgres controls.
        owner = config_owner(self.owner) if self.owner is not None else None
        ensure_dir(self.dir, 0o750, owner, taken_from=self.owner)
        # The key first, then what names it: a reader never pairs a new certificate with
        # an old key for long, and issued.json last means a crash in between issues again.
        write_atomically(issued.key_pem, self.key_file, owner, 0o640)
        write_atomically(issued.cert_pem, self.cert_file, owner, 0o644)
        write_atomically(ca.cert_pem, self.ca_file, owner, 0o644)
        write_atomically(issued_for, self.issued_file, None, 0o644)
        log.info("issued this unit's pgBackRest TLS certificate (%s)", common_name)
        return True
