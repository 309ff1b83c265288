"""This unit's TLS key, CSR, certificate and CA on disk; keys and CSRs made by openssl.

The folder and files are root's with the database user's group (PostgreSQL and the
pgBackRest TLS server read them as ``postgres``; the key is 0640, which both accept for
a root-owned key): the database user can read them, never replace them or plant a link
for root to write through. Keys are made in a private temporary folder and only then
renamed into place. No Python crypto library is needed on the unit.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pwd
import tempfile
from collections.abc import Callable
from pathlib import Path

from pgbackups.adapters import files, processes
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import CommandResult, TlsMaterial

log = logging.getLogger(__name__)

Runner = Callable[..., CommandResult]


class DiskTlsFiles:
    def __init__(
        self, directory: str, *, owner: str | None = "postgres", run: Runner = processes.run
    ) -> None:
        """``owner``: the user whose group reads the files (None: ours, 0600 key)."""
        self.dir = Path(directory)
        self.owner = owner
        self._run = run

    def _file_owner(self) -> OsUser | None:
        if self.owner is None:
            return None
        entry = pwd.getpwnam(self.owner)
        return files.config_owner(OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir))

    @property
    def _key_mode(self) -> int:
        owner = self._file_owner()
        return 0o640 if owner is not None and owner.uid == 0 and owner.gid != 0 else 0o600

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
        found = (self.key_file, self.cert_file, self.ca_file)
        if not all(f.is_file() and f.stat().st_size > 0 for f in found):
            return None
        return TlsMaterial(str(self.ca_file), str(self.cert_file), str(self.key_file))

    def csr(self) -> str | None:
        # Read without following a link: it is sent to the certificates provider.
        if self.key_file.is_file():
            return files.read_text(self.csr_file)
        return None

    def _ensure_dir(self) -> None:
        files.ensure_dir(self.dir, 0o750, self._file_owner())

    def _write(self, path: Path, text: str, mode: int) -> bool:
        self._ensure_dir()
        return files.write_if_changed(text, path, self._file_owner(), mode)

    def new_key_and_csr(self, common_name: str, sans: list[str]) -> str:
        self._ensure_dir()
        alt = ",".join((f"IP:{s}" if _looks_like_ip(s) else f"DNS:{s}") for s in sans)
        # In root's private (0700) folder inside root's own: by path is safe there.
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=".new-key-") as tmp:
            key, csr = Path(tmp) / "unit.key", Path(tmp) / "unit.csr"
            argv = [
                "openssl",
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(csr),
                "-subj",
                f"/CN={common_name}",
            ]
            if alt:
                argv += ["-addext", f"subjectAltName={alt}"]
            result = self._run(argv, timeout=60)
            if not result.ok:
                raise RuntimeError(f"openssl could not make a key and CSR: {result.stderr.strip()}")
            owner = self._file_owner()
            for made, final, mode in (
                (key, self.key_file, self._key_mode),
                (csr, self.csr_file, 0o644),
            ):
                os.chmod(made, mode)
                if owner is not None and os.geteuid() == 0:
                    os.chown(made, owner.uid, owner.gid)
                os.replace(made, final)
        text = files.read_text(self.csr_file)
        if text is None:
            raise RuntimeError(f"openssl made no CSR at {self.csr_file}")
        return text

    def store_certificate(self, certificate: str, ca: str, chain: list[str]) -> bool:
        bundle_ca = "\n".join([ca.strip(), *(c.strip() for c in chain if c.strip() != ca.strip())])
        changed = self._write(self.cert_file, certificate.strip() + "\n", 0o644)
        changed |= self._write(self.ca_file, bundle_ca.strip() + "\n", 0o644)
        return changed

    def clear(self) -> None:
        # Names in root's own folder: unlink removes a link, never what it points at.
        for f in (self.key_file, self.csr_file, self.cert_file, self.ca_file):
            f.unlink(missing_ok=True)


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
