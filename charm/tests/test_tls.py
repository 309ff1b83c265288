"""This unit's certificate through the tls-certificates library, from an empty provider
bag, against a provider that answers as the self-signed-certificates operator does: its
application bag's ``certificates`` (JSON: ``ca``, ``chain``, ``certificate``,
``certificate_signing_request``) for the CSR the library wrote into our unit bag,
signed by a real CA (openssl, in the test). Only the disk (``FakeTlsFiles``) and the
workload are fakes; the library, its secrets and the certificates are real."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from charm_fakes import World
from charm_states import ctx, peers, state, unit_bag
from charmlibs.interfaces import tls_certificates as tls
from ops import testing

from tls_requirer import ca_bundle, certificate_request

OPENSSL_TIMEOUT = 60


def openssl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["openssl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=OPENSSL_TIMEOUT,
        check=True,
    )
    return done.stdout


class SelfSignedProvider:
    """What self-signed-certificates does with a requirer's unit bag: a certificate
    from its CA for every CSR there, published in its application bag."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ca_key = home / "ca.key"
        self.ca_cert = home / "ca.crt"
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "90",
            "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
            "-subj", "/CN=self-signed-certificates-operator",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self.serial = 1000

    @property
    def ca(self) -> str:
        return self.ca_cert.read_text()

    def sign(self, csr: str, days: int = 90) -> str:
        self.serial += 1
        csr_file = self.home / f"req-{self.serial}.csr"
        csr_file.write_text(csr)
        return openssl(
            "x509", "-req", "-in", str(csr_file), "-CA", str(self.ca_cert),
            "-CAkey", str(self.ca_key), "-set_serial", str(self.serial),
            "-days", str(days), "-copy_extensions", "copy",
        )  # fmt: skip

    def publish(self, requirer_unit_bag: dict[str, str]) -> dict[str, str]:
        requests = json.loads(requirer_unit_bag.get("certificate_signing_requests", "[]"))
        issued = []
        for request in requests:
            csr = request["certificate_signing_request"]
            cert = self.sign(csr)
            issued.append(
                {
                    "ca": self.ca,
                    "chain": [cert, self.ca],
                    "certificate": cert,
                    "certificate_signing_request": csr,
                }
            )
        return {"certificates": json.dumps(issued)} if issued else {}


@pytest.fixture
def provider(tmp_path: Path) -> SelfSignedProvider:
    return SelfSignedProvider(tmp_path)


def empty_certificates() -> testing.Relation:
    return testing.Relation("certificates", remote_app_name="self-signed-certificates")


def provider_answers(
    out: testing.State, rel_id: int, bag: dict[str, str]
) -> tuple[testing.State, testing.Relation]:
    """The state after ``out`` once the provider's application bag is ``bag``."""
    rel = out.get_relation(rel_id)
    assert isinstance(rel, testing.Relation)
    new = dataclasses.replace(rel, remote_app_data=bag)
    others = [r for r in out.relations if r.id != rel_id]
    return dataclasses.replace(out, relations=frozenset([*others, new]), deferred=[]), new


def changed(out: testing.State, rel_id: int, bag: dict[str, str]) -> testing.State:
    """relation-changed on the certificates relation, the provider's bag being ``bag``."""
    st, rel = provider_answers(out, rel_id, bag)
    c = ctx()
    return c.run(c.on.relation_changed(rel, remote_unit=0), st)


def ours(out: testing.State, rel_id: int) -> dict[str, str]:
    return dict(out.get_relation(rel_id).local_unit_data)


def our_csrs(out: testing.State, rel_id: int) -> list[str]:
    sent = json.loads(ours(out, rel_id)["certificate_signing_requests"])
    return [r["certificate_signing_request"] for r in sent]


def requested_csr(world: World, provider: SelfSignedProvider) -> tuple[testing.State, int]:
    """The relation is created (the provider's bag empty): the library's CSR is in our
    unit bag, its key in a secret of ours."""
    rel = empty_certificates()
    c = ctx()
    out = c.run(c.on.relation_created(rel), state(peers(others=1), rel))
    return out, rel.id


def test_an_empty_provider_bag_gets_a_csr_naming_the_unit_and_a_key_in_a_secret(
    world: World, provider: SelfSignedProvider
) -> None:
    out, rel_id = requested_csr(world, provider)
    [csr_pem] = our_csrs(out, rel_id)
    csr = tls.CertificateSigningRequest.from_string(csr_pem)
    assert csr.common_name == "10.0.0.1"
    assert csr.sans_ip == {"10.0.0.1"}
    # The key is the library's, in a Juju secret this unit owns; never on our bags.
    keys = [s for s in out.secrets if s.label and "private-key" in s.label]
    assert len(keys) == 1 and keys[0].owner == "unit"
    content = keys[0].tracked_content
    assert content is not None
    key = tls.PrivateKey.from_string(content["private-key"])
    assert csr.matches_private_key(key)
    assert world.tls_files.stored == []
    assert "tls" not in unit_bag(out)
    assert "apply_config" not in world.calls


def test_the_certificate_for_our_csr_is_written_apart_from_the_ca_and_tls_turns_on(
    world: World, provider: SelfSignedProvider
) -> None:
    out, rel_id = requested_csr(world, provider)
    bag = provider.publish(ours(out, rel_id))
    out2 = changed(out, rel_id, bag)
    [(key, cert, cas)] = world.tls_files.stored
    issued = json.loads(bag["certificates"])[0]["certificate"]
    assert cert.strip() == issued.strip()
    assert cas == [provider.ca.strip()]  # the chain's leaf is not a trust anchor
    assert tls.Certificate.from_string(cert).matches_private_key(tls.PrivateKey.from_string(key))
    assert unit_bag(out2)["tls"] == "enabled"
    # The core re-rendered (Patroni reloads, PostgreSQL re-reads its ssl files) and the
    # pgBackRest TLS server of this two-unit cluster followed.
    assert world.calls[-2:] == ["apply_config", "start_tls_server"]


def test_a_renewed_certificate_for_the_same_csr_rewrites_the_files_and_reloads(
    world: World, provider: SelfSignedProvider
) -> None:
    out, rel_id = requested_csr(world, provider)
    requested = ours(out, rel_id)
    out2 = changed(out, rel_id, provider.publish(requested))
    first = world.tls_files.cert
    world.calls.clear()
    changed(out2, rel_id, provider.publish(requested))  # a new serial, for the same CSR
    assert world.tls_files.cert != first
    assert len(world.tls_files.stored) == 2
    assert "apply_config" in world.calls  # Patroni reloads: PostgreSQL re-reads the files


def test_the_same_certificate_again_changes_nothing(
    world: World, provider: SelfSignedProvider
) -> None:
    out, rel_id = requested_csr(world, provider)
    bag = provider.publish(ours(out, rel_id))
    out2 = changed(out, rel_id, bag)
    world.calls.clear()
    c2 = ctx()
    c2.run(c2.on.update_status(), out2)
    assert len(world.tls_files.stored) == 1
    assert "store_tls" in world.calls  # update-status looked again, found the same


def test_expiry_asks_for_a_new_certificate_and_its_arrival_rewrites_the_files(
    world: World, provider: SelfSignedProvider
) -> None:
    out, rel_id = requested_csr(world, provider)
    [old_csr] = our_csrs(out, rel_id)
    out2 = changed(out, rel_id, provider.publish(ours(out, rel_id)))
    [cert_secret] = [s for s in out2.secrets if s.label and "-certificate-" in s.label]
    assert cert_secret.expire is not None  # the library renews at 90 % of the life
    c2 = ctx()
    out3 = c2.run(c2.on.secret_expired(cert_secret, revision=cert_secret._latest_revision), out2)
    [new_csr] = our_csrs(out3, rel_id)
    assert new_csr != old_csr  # a new request, with the same key
    old_key = world.tls_files.key
    changed(out3, rel_id, provider.publish(ours(out3, rel_id)))
    assert len(world.tls_files.stored) == 2
    assert world.tls_files.key == old_key
    assert world.tls_files.cert is not None
    assert tls.Certificate.from_string(world.tls_files.cert).matches_private_key(
        tls.PrivateKey.from_string(old_key or "")
    )
    assert "apply_config" in world.calls


def test_a_certificate_for_another_csr_is_not_ours(
    world: World, provider: SelfSignedProvider, tmp_path: Path
) -> None:
    out, rel_id = requested_csr(world, provider)
    other_key = tmp_path / "other.key"
    foreign = openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(other_key),
        "-subj", "/CN=10.0.0.1",
    )  # fmt: skip
    bag = provider.publish(
        {"certificate_signing_requests": json.dumps([{"certificate_signing_request": foreign}])}
    )
    out2 = changed(out, rel_id, bag)
    assert world.tls_files.stored == []
    assert "tls" not in unit_bag(out2)


@pytest.mark.parametrize(
    "bag",
    [
        {"certificates": "{not json"},
        {"certificates": json.dumps({"a": 1})},
        {"certificates": "[1]"},
    ],
)
def test_malformed_provider_data_is_ignored(
    world: World, provider: SelfSignedProvider, bag: dict[str, str]
) -> None:
    out, rel_id = requested_csr(world, provider)
    out2 = changed(out, rel_id, bag)
    assert world.tls_files.stored == []
    assert out2.unit_status == testing.ActiveStatus()


def test_relation_broken_removes_the_files_and_stops_the_tls_server(world: World) -> None:
    world.with_tls()
    rel = empty_certificates()
    pr = peers(others=1, unit={"tls": "enabled"})
    c = ctx()
    out = c.run(c.on.relation_broken(rel), state(pr, rel))
    assert "clear_tls" in world.calls
    assert "tls" not in unit_bag(out)
    assert world.calls[-1] == "stop_tls_server"


# --- what is asked for, what is trusted ----------------------------------------------


def test_the_request_names_the_address_and_the_host() -> None:
    [req] = certificate_request("10.0.0.1", "unit-1.lxd", None)
    assert req.common_name == "10.0.0.1"
    assert req.sans_ip == {"10.0.0.1"}
    assert req.sans_dns == {"unit-1.lxd"}
    assert certificate_request("", "unit-1.lxd", None) == []  # no address yet: no CSR
    no_ip = tls.ProviderCapabilities(supports_ip_sans=False)
    [req2] = certificate_request("10.0.0.1", "unit-1.lxd", no_ip)
    assert req2.sans_ip is None


def test_the_ca_bundle_keeps_intermediates_and_drops_the_leaf(
    provider: SelfSignedProvider, tmp_path: Path
) -> None:
    key = tmp_path / "leaf.key"
    csr = openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", "/CN=x"
    )  # fmt: skip
    leaf = tls.Certificate.from_string(provider.sign(csr))
    ca = tls.Certificate.from_string(provider.ca)
    assert ca_bundle(leaf, ca, [leaf, ca]) == [str(ca)]
    assert ca_bundle(leaf, ca, []) == [str(ca)]
