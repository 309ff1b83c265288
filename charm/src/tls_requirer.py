"""This unit's certificate on the ``certificates`` relation (``tls-certificates``),
through the ``charmlibs-interfaces-tls-certificates`` library (Mode.UNIT).

The library does the interface: it generates the private key and keeps it in a Juju
secret owned by this unit, writes the CSR into our unit bag, finds the provider's
certificate for it, and renews: the certificate's secret expires at 90 % of the
certificate's life (``secret-expired`` makes a new CSR with the same key), and a new
certificate for our CSR in the provider's bag (a provider-side renewal) is a new
``certificate_available``. This module only decides what to ask for and puts what was
issued on disk (:mod:`tls_files`):

- the request names the unit's address: CN = the address, an IP SAN for it (unless the
  provider says it takes no IP SANs) and a DNS SAN for the host name. The request is
  built on every hook: when the address changes, the library withdraws the old CSR.
- ``certificate_available``: key, leaf and CA bundle written; ``updated`` is emitted
  when a file changed, so the charm reloads what serves TLS with them.
- relation-broken: the files are removed (the library removes its secrets).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Protocol

import ops
from charmlibs.interfaces import tls_certificates as tls

from pgbackups.core.host import TlsMaterial

log = logging.getLogger(__name__)


class TlsFiles(Protocol):
    """Where this unit's key, certificate and CA bundle live (an adapter: the disk)."""

    def material(self) -> TlsMaterial | None:
        """The paths, when a key, a certificate and a CA bundle are all on disk."""
        ...

    def store(self, key: str, certificate: str, cas: list[str]) -> bool:
        """Write them; True when something changed on disk."""
        ...

    def clear(self) -> None:
        """Remove them."""
        ...


class TlsFilesUpdatedEvent(ops.EventBase):
    """This unit's TLS files changed (a first certificate, a renewal, or removal)."""


class UnitCertificateEvents(ops.ObjectEvents):
    updated = ops.EventSource(TlsFilesUpdatedEvent)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def certificate_request(
    address: str, hostname: str, capabilities: tls.ProviderCapabilities | None
) -> list[tls.CertificateRequestAttributes]:
    """What this unit asks for: its address (and host name); nothing before it has one."""
    if not address:
        return []
    ip_sans = capabilities is None or capabilities.supports_ip_sans is not False
    dns = {hostname} if hostname else set()
    if not _is_ip(address):
        dns.add(address)
    return [
        tls.CertificateRequestAttributes(
            common_name=address,
            sans_ip=[address] if _is_ip(address) and ip_sans else None,
            sans_dns=sorted(dns) or None,
        )
    ]


def ca_bundle(
    certificate: tls.Certificate, ca: tls.Certificate, chain: list[tls.Certificate]
) -> list[str]:
    """The provider's CA and the chain's other CA certificates; never the leaf."""
    out = [str(ca)]
    for member in chain:
        if member != certificate and member.is_ca and str(member) not in out:
            out.append(str(member))
    return out


class UnitCertificate(ops.Object):
    on = UnitCertificateEvents()  # type: ignore[misc, unused-ignore]

    def __init__(
        self,
        charm: ops.CharmBase,
        relation_name: str,
        files: TlsFiles,
        *,
        address: Callable[[], str],
        hostname: Callable[[], str],
        refresh_events: list[ops.BoundEvent],
    ) -> None:
        super().__init__(charm, relation_name + "-unit-certificate")
        self.relation_name = relation_name
        self.files = files
        self._address = address
        self._hostname = hostname
        self.lib = tls.TLSCertificatesRequiresV4(
            charm,
            relation_name,
            certificate_requests=self._requests,
            mode=tls.Mode.UNIT,
            refresh_events=refresh_events,
        )
        charm.framework.observe(self.lib.on.certificate_available, self._on_available)
        charm.framework.observe(charm.on[relation_name].relation_broken, self._on_broken)

    def _requests(
        self, capabilities: tls.ProviderCapabilities | None
    ) -> list[tls.CertificateRequestAttributes]:
        return certificate_request(self._address(), self._hostname(), capabilities)

    @property
    def relation(self) -> ops.Relation | None:
        return self.model.get_relation(self.relation_name)

    def material(self) -> TlsMaterial | None:
        """This unit's TLS files, or None when there is no relation or no certificate."""
        if self.relation is None:
            return None
        return self.files.material()

    def _on_available(self, event: tls.CertificateAvailableEvent) -> None:
        key = self.lib.private_key
        if key is None:  # the library emits only for a CSR of its key; never expected
            log.error("tls-certificates: a certificate arrived but this unit has no key")
            return
        if not event.certificate.matches_private_key(key):
            log.error("tls-certificates: the certificate does not match this unit's key")
            return
        cas = ca_bundle(event.certificate, event.ca, event.chain)
        if self.files.store(str(key), str(event.certificate), cas):
            log.info(
                "tls-certificates: stored this unit's certificate (valid until %s)",
                event.certificate.expiry_time.isoformat(),
            )
            self.on.updated.emit()

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        had = self.files.material() is not None
        self.files.clear()
        if had:
            self.on.updated.emit()
