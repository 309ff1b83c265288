"""This unit's TLS key, CSR, certificate and CA on disk; keys and CSRs made by openssl.

The files are owned by ``postgres`` (PostgreSQL and the pgBackRest TLS server read them);
the key is mode 0600. No Python crypto library is needed on the unit.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pgbackups.adapters import processes
from pgbackups.core.host import CommandResult, TlsMaterial

log = logging.getLogger(__name__)

Runner = Callable[..., CommandResult]


class DiskTlsFiles:
    def __init__(
        self, directory: str, *, owner: str | None = "postgres", run: Runner = processes.run
    ) -> None:
        self.dir = Path(directory)
        self.owner = owner
        self._run = run

    @property
    def key_file(self) -> Path:
        return self.dir / "unit.key"

    @property
    def csr_file(self) -> Path:
        return self.dir / "unit.csr"

    @property
    def cert_file(self) -> Path:
        return self.dir / "unit.crt"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def material(self) -> TlsMaterial | None:
        files = (self.key_file, self.cert_file, self.ca_file)
        if not all(f.is_file() and f.stat().st_size > 0 for f in files):
            return None
        return TlsMaterial(str(self.ca_file), str(self.cert_file), str(self.key_file))

    def csr(self) -> str | None:
        if self.key_file.is_file() and self.csr_file.is_file():
            return self.csr_file.read_text()
        return None

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        if self.owner:
            shutil.chown(self.dir, self.owner, self.owner)

    def _write(self, path: Path, text: str, mode: int) -> bool:
        if path.is_file() and path.read_text() == text:
            return False
        self._ensure_dir()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        if self.owner:
            shutil.chown(tmp, self.owner, self.owner)
        os.replace(tmp, path)
        return True

    def new_key_and_csr(self, common_name: str, sans: list[str]) -> str:
        self._ensure_dir()
        alt = ",".join((f"IP:{s}" if _looks_like_ip(s) else f"DNS:{s}") for s in sans)
        argv = [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(self.key_file),
            "-out",
            str(self.csr_file),
            "-subj",
            f"/CN={common_name}",
        ]
        if alt:
            argv += ["-addext", f"subjectAltName={alt}"]
        result = self._run(argv, timeout=60)
        if not result.ok:
            raise RuntimeError(f"openssl could not make a key and CSR: {result.stderr.strip()}")
        os.chmod(self.key_file, 0o600)
        if self.owner:
            for f in (self.key_file, self.csr_file):
                shutil.chown(f, self.owner, self.owner)
        return self.csr_file.read_text()

    def store_certificate(self, certificate: str, ca: str, chain: list[str]) -> bool:
        bundle_ca = "\n".join([ca.strip(), *(c.strip() for c in chain if c.strip() != ca.strip())])
        changed = self._write(self.cert_file, certificate.strip() + "\n", 0o644)
        changed |= self._write(self.ca_file, bundle_ca.strip() + "\n", 0o644)
        return changed

    def clear(self) -> None:
        for f in (self.key_file, self.csr_file, self.cert_file, self.ca_file):
            f.unlink(missing_ok=True)


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
