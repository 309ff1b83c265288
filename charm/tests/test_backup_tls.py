"""This unit's pgBackRest certificate on disk, issued by real openssl from the private CA
(the CA key only ever in memory: it is read from the Juju secret)."""

from __future__ import annotations

import stat
from pathlib import Path

from backup_tls import DiskBackupTls
from pgbackups.adapters import certificates, processes


def _verify(ca_file: str, cert_file: str) -> bool:
    return processes.run(["openssl", "verify", "-CAfile", ca_file, cert_file], timeout=30).ok


def test_the_unit_certificate_comes_from_the_ca_and_is_issued_once(tmp_path: Path) -> None:
    ca = certificates.new_authority("app-pgbackrest-ca")
    files = DiskBackupTls(str(tmp_path / "pgbackrest-tls"), None)
    assert files.material() is None
    assert files.ensure(ca, "app-0", ["10.0.0.1"]) is True
    material = files.material()
    assert material is not None
    assert Path(material.ca_file).read_text() == ca.cert_pem
    assert _verify(material.ca_file, material.cert_file)
    # Root's, read by the database user through its group (docs/security.md, "Files and
    # privileges"): never writable by it, never readable by others.
    assert stat.S_IMODE(Path(material.key_file).stat().st_mode) == 0o640
    text = processes.run(
        ["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage",
         "-in", material.cert_file],
        timeout=30,
    ).stdout  # fmt: skip
    assert "CN = app-0" in text and "DNS:10.0.0.1, IP Address:10.0.0.1" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    # The CA's key is nowhere on disk.
    for path in (tmp_path / "pgbackrest-tls").iterdir():
        assert ca.key_pem.strip() not in path.read_text()

    key_before = Path(material.key_file).read_text()
    assert files.ensure(ca, "app-0", ["10.0.0.1"]) is False  # nothing changed
    assert Path(material.key_file).read_text() == key_before
    assert files.ensure(ca, "app-0", ["10.0.0.9"]) is True  # the address moved
    other = certificates.new_authority("app-pgbackrest-ca")
    assert files.ensure(other, "app-0", ["10.0.0.9"]) is True  # another CA
    assert _verify(material.ca_file, material.cert_file)
    assert Path(material.ca_file).read_text() == other.cert_pem
