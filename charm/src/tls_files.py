"""This unit's TLS key, certificate and CA bundle on disk, for PostgreSQL (``ssl_*_file``).

The key, the CSR and the certificate's life cycle (renewal, expiry) are the
tls-certificates library's (:mod:`tls_requirer`); the key's home is its Juju secret.
This module only writes what the provider issued, for the programs that read files:

- ``unit.key``: the private key (0640 root:postgres when we are root, else 0600);
- ``unit.crt``: this unit's certificate (the leaf) alone;
- ``ca.crt``: the CAs that sign the members' certificates (the provider's CA and any
  intermediate CA of the chain), never the unit's own certificate: a CA file that holds
  a leaf would make every holder of that leaf's key a trust anchor.

The folder and files are root's with the database user's group (PostgreSQL reads them
as ``postgres``): the database user can read them, never replace them or plant a link
for root to write through (``adapters/files.py`` writes without following links).
"""

from __future__ import annotations

import logging
import pwd
from pathlib import Path

from pgbackups.adapters import files
from pgbackups.adapters.processes import OsUser
from pgbackups.core.host import TlsMaterial

log = logging.getLogger(__name__)


class DiskTlsFiles:
    def __init__(self, directory: str, *, owner: str | None = "postgres") -> None:
        """``owner``: the user whose group reads the files (None: ours, 0600 key). Looked
        up on first write, never when built: the install hook builds the charm before
        the packages have made ``postgres``."""
        self.dir = Path(directory)
        self.owner = owner

    def _file_owner(self) -> OsUser | None:
        if self.owner is None:
            return None
        entry = pwd.getpwnam(self.owner)
        return files.config_owner(OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir))

    @property
    def key_file(self) -> Path:
        return self.dir / "unit.key"

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

    def store(self, key: str, certificate: str, cas: list[str]) -> bool:
        """Write the key, the certificate and the CA bundle; True when a file changed
        (then whatever serves TLS with them must reload)."""
        owner = self._file_owner()
        files.ensure_dir(self.dir, 0o750, owner)
        key_mode = 0o640 if owner is not None and owner.uid == 0 and owner.gid != 0 else 0o600
        bundle = "\n".join(c.strip() for c in dict.fromkeys(cas) if c.strip()) + "\n"
        # The key first: a certificate is never on disk beside a key it does not match
        # for longer than these three renames.
        changed = files.write_if_changed(key.strip() + "\n", self.key_file, owner, key_mode)
        changed |= files.write_if_changed(certificate.strip() + "\n", self.cert_file, owner, 0o644)
        changed |= files.write_if_changed(bundle, self.ca_file, owner, 0o644)
        return changed

    def clear(self) -> None:
        # Names in root's own folder: unlink removes a link, never what it points at.
        # unit.csr: what the charm's own requirer kept there before the library.
        for f in (self.key_file, self.cert_file, self.ca_file, self.dir / "unit.csr"):
            f.unlink(missing_ok=True)
