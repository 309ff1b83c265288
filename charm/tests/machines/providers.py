"""The remote applications of the scenario, scripted: what they publish, and when.

- :class:`S3Integrator` behaves like s3-integrator: nothing in its bag until our leader
  has written ``bucket``; then the connection info of the scenario's S3 server (its own
  configured bucket if it has one, else ours), ``tls-ca-chain`` as a JSON list of PEMs.
- :class:`CertificatesProvider` behaves like self-signed-certificates: for each unit's
  CSR (``certificate_signing_requests`` in the unit's bag) it signs a certificate with
  its CA, the CSR's names copied, and publishes ``certificates`` (a JSON list of
  ``{certificate_signing_request, certificate, ca, chain}``) in its application bag.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pgbackups.adapters.certificates import CertificateAuthority


@dataclass
class S3Integrator:
    app: str
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    ca_pem: str
    region: str = "us-east-1"
    path: str = "/charm-on-machines"
    configured_bucket: str = ""

    def answer(
        self, our_app_bag: Mapping[str, str], our_unit_bags: Mapping[int, Mapping[str, str]]
    ) -> dict[str, str]:
        requested = our_app_bag.get("bucket", "")
        if not requested:
            return {}
        return {
            "access-key": self.access_key,
            "secret-key": self.secret_key,
            "bucket": self.configured_bucket or requested,
            "endpoint": self.endpoint,
            "region": self.region,
            "path": self.path,
            "s3-uri-style": "path",
            "tls-ca-chain": json.dumps([self.ca_pem]),
        }


class CertificatesProvider:
    app = "self-signed-certificates"

    def __init__(self, ca: CertificateAuthority, work_dir: Path) -> None:
        self.ca = ca
        self.work_dir = work_dir
        self.signed: dict[str, str] = {}  # CSR -> certificate (signed once, as the provider)

    def _sign(self, csr: str) -> str:
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix=".sign-") as tmp:
            folder = Path(tmp)
            (folder / "unit.csr").write_text(csr)
            (folder / "ca.crt").write_text(self.ca.cert_pem)
            key = folder / "ca.key"
            key.touch(mode=0o600)
            key.write_text(self.ca.key_pem)
            subprocess.run(
                ["openssl", "x509", "-req", "-in", str(folder / "unit.csr"),
                 "-CA", str(folder / "ca.crt"), "-CAkey", str(key),
                 "-set_serial", "0x" + secrets.token_hex(16), "-days", "30",
                 "-copy_extensions", "copyall", "-out", str(folder / "unit.crt")],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            return (folder / "unit.crt").read_text()

    def answer(
        self, our_app_bag: Mapping[str, str], our_unit_bags: Mapping[int, Mapping[str, str]]
    ) -> dict[str, str]:
        entries = []
        for _unit, bag in sorted(our_unit_bags.items()):
            for request in json.loads(bag.get("certificate_signing_requests", "[]")):
                csr = request["certificate_signing_request"]
                if csr not in self.signed:
                    self.signed[csr] = self._sign(csr)
                entries.append(
                    {
                        "certificate_signing_request": csr,
                        "certificate": self.signed[csr],
                        "ca": self.ca.cert_pem,
                        "chain": [self.signed[csr], self.ca.cert_pem],
                    }
                )
        return {"certificates": json.dumps(entries)} if entries else {}
