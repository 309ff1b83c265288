"""The requirer side of ``tls-certificates``: the subset this charm supports.

The full interface (the ``tls_certificates_interface`` library, v1 to v4) has renewal,
expiry events, revocation, application certificates, private keys in Juju secrets and
more. This charm supports the part every provider version shares for *unit*
certificates:

1. When the ``certificates`` relation exists and this unit has no key yet, the unit
   generates an RSA key and a CSR (``openssl``, on the unit; the key never leaves it),
   with CN = the unit's address and SANs = its address and host name, and publishes
   ``certificate_signing_requests = [{"certificate_signing_request": <csr>, "ca": false}]``
   (JSON) in its own unit bag of the relation.
2. The provider answers in its *application* bag:
   ``certificates = [{"certificate_signing_request", "certificate", "ca", "chain"}, ...]``
   (JSON). The entry whose CSR equals ours (whitespace-insensitive) and is not
   ``"revoked": true`` is written to disk beside the key; a later answer for the same CSR
   (a renewal by the provider) replaces it.
3. relation-broken removes the key, CSR and certificates from disk: TLS is off.

Not supported: requesting renewal before expiry, CSR changes when the address changes,
private keys from Juju secrets, application certificates. Malformed provider data is
logged and ignored (TLS stays as it was), never a hook error.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import ops

from pgbackups.core.host import TlsMaterial

log = logging.getLogger(__name__)

CSR_KEY = "certificate_signing_requests"
CERTIFICATES_KEY = "certificates"


class TlsFiles(Protocol):
    """Where this unit's key, CSR and certificates live (an adapter: disk and openssl)."""

    def material(self) -> TlsMaterial | None:
        """The paths, when a key, a certificate and a CA are all on disk."""
        ...

    def csr(self) -> str | None: ...

    def new_key_and_csr(self, common_name: str, sans: list[str]) -> str:
        """Generate a private key and a CSR for it; store both; return the CSR (PEM)."""
        ...

    def store_certificate(self, certificate: str, ca: str, chain: list[str]) -> bool:
        """Write the certificate and the CA; True when something changed on disk."""
        ...

    def clear(self) -> None:
        """Remove the key, CSR and certificates."""
        ...


def _same_pem(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


class TlsRequirer(ops.Object):
    def __init__(self, charm: ops.CharmBase, relation_name: str, files: TlsFiles):
        super().__init__(charm, relation_name + "-tls")
        self.relation_name = relation_name
        self.files = files

    @property
    def relation(self) -> ops.Relation | None:
        return self.model.get_relation(self.relation_name)

    def material(self) -> TlsMaterial | None:
        """This unit's TLS files, or None when there is no relation or no certificate."""
        if self.relation is None:
            return None
        return self.files.material()

    def sync(self, address: str, hostname: str) -> None:
        """Bring the disk and our CSR in line with the relation (idempotent)."""
        relation = self.relation
        if relation is None:  # relation-broken, or never related
            self.files.clear()
            return
        csr = self.files.csr()
        if csr is None:
            sans = [s for s in dict.fromkeys([address, hostname]) if s]
            csr = self.files.new_key_and_csr(address or hostname, sans)
        wanted = json.dumps([{"certificate_signing_request": csr, "ca": False}])
        if relation.data[self.model.unit].get(CSR_KEY) != wanted:
            relation.data[self.model.unit][CSR_KEY] = wanted
        self._pick_certificate(relation, csr)

    def _pick_certificate(self, relation: ops.Relation, csr: str) -> None:
        if relation.app is None:
            return
        raw = relation.data[relation.app].get(CERTIFICATES_KEY, "")
        if not raw:
            return
        try:
            entries = json.loads(raw)
        except json.JSONDecodeError:
            log.error("tls-certificates: the provider's %r is not JSON; ignored", CERTIFICATES_KEY)
            return
        if not isinstance(entries, list):
            log.error(
                "tls-certificates: the provider's %r is not a list; ignored", CERTIFICATES_KEY
            )
            return
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            their_csr = entry.get("certificate_signing_request")
            if not isinstance(their_csr, str) or not _same_pem(their_csr, csr):
                continue
            if entry.get("revoked") is True:
                log.warning("tls-certificates: our certificate was revoked; waiting for a new one")
                continue
            cert, ca = entry.get("certificate"), entry.get("ca")
            chain = entry.get("chain") or []
            if not isinstance(cert, str) or not isinstance(ca, str) or not cert or not ca:
                log.error("tls-certificates: the entry for our CSR lacks certificate or ca")
                continue
            if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
                chain = []
            if self.files.store_certificate(cert, ca, chain):
                log.info("tls-certificates: stored a new certificate for this unit")
            return
