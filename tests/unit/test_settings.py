"""S3 settings (docs/behaviour/world.md): validation and normalisation, and no secret in a repr."""

from __future__ import annotations

import json

import pytest

from pgbackups.core.settings import (
    DEFAULT_DELETE_OLDER_THAN_DAYS,
    DEFAULT_ENDPOINT,
    S3Settings,
    S3SettingsProblem,
    parse_s3_settings,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
BASE = {"bucket": "backups", "access-key": "AKIA", "secret-key": "very-secret"}


def parsed(**extra: str) -> S3Settings:
    result = parse_s3_settings({**BASE, **extra})
    assert isinstance(result, S3Settings), result
    return result


def test_defaults() -> None:
    s = parsed()
    assert (s.endpoint, s.region, s.path, s.uri_style) == (DEFAULT_ENDPOINT, "", "/", "host")
    assert s.tls_ca_chain == ()
    assert s.delete_older_than_days == DEFAULT_DELETE_OLDER_THAN_DAYS
    assert s.endpoint_host == "s3.amazonaws.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", "/"), ("pg", "/pg"), ("/pg/", "/pg"), ("  //a/b//  ", "/a/b"), ("/", "/")],
)
def test_path_gets_exactly_one_leading_slash(raw: str, expected: str) -> None:
    assert parsed(path=raw).path == expected


def test_strings_are_stripped_and_endpoint_loses_trailing_slash() -> None:
    s = parsed(bucket=" /backups/ ", endpoint=" https://minio:9000/ ", region=" eu-1 ")
    assert (s.bucket, s.endpoint, s.region) == ("backups", "https://minio:9000", "eu-1")
    assert s.endpoint_host == "minio"


@pytest.mark.parametrize(
    ("raw", "missing"),
    [
        ({}, ("bucket", "access-key", "secret-key")),
        ({"bucket": "bkt"}, ("access-key", "secret-key")),
        ({**BASE, "secret-key": "  "}, ("secret-key",)),
    ],
)
def test_missing_keys(raw: dict[str, str], missing: tuple[str, ...]) -> None:
    problem = parse_s3_settings(raw)
    assert isinstance(problem, S3SettingsProblem)
    assert problem.missing == missing
    assert problem.message() == f"Missing S3 parameters: {list(missing)}"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"endpoint": "s3.example.com"}, "endpoint 's3.example.com' is not a URL"),
        ({"endpoint": "ftp://x"}, "is not a URL"),
        ({"s3-uri-style": "virtual"}, "s3-uri-style 'virtual' is not one of host, path"),
        ({"tls-ca-chain": "[not json"}, "not a valid JSON list"),
        ({"tls-ca-chain": '{"a": 1}'}, "must be a JSON list of PEM certificate strings"),
        ({"tls-ca-chain": json.dumps({"a": PEM})}, "must be a JSON list of PEM"),
        ({"tls-ca-chain": "[1, 2]"}, "must be a JSON list of PEM certificate strings"),
        ({"tls-ca-chain": "hello"}, "not a PEM certificate"),
        ({"delete-older-than-days": "0"}, "not a whole number of days"),
        ({"delete-older-than-days": "ten"}, "not a whole number of days"),
    ],
)
def test_invalid_settings(extra: dict[str, str], fragment: str) -> None:
    problem = parse_s3_settings({**BASE, **extra})
    assert isinstance(problem, S3SettingsProblem)
    assert not problem.missing
    assert fragment in problem.message()
    assert problem.message().startswith("Invalid S3 parameters: ")


def test_missing_and_invalid_together() -> None:
    problem = parse_s3_settings({"bucket": "bkt", "s3-uri-style": "x"})
    assert isinstance(problem, S3SettingsProblem)
    assert problem.missing and problem.invalid
    assert problem.message().startswith("Missing S3 parameters: ['access-key', 'secret-key']; ")


@pytest.mark.parametrize(
    ("raw", "count"),
    [(json.dumps([PEM]), 1), (json.dumps([PEM, PEM, " "]), 2), (PEM, 1), ("", 0)],
)
def test_ca_chain_forms(raw: str, count: int) -> None:
    assert len(parsed(**{"tls-ca-chain": raw}).tls_ca_chain) == count


def test_other_fields() -> None:
    s = parsed(
        **{"s3-uri-style": "path", "storage-class": "STANDARD_IA", "delete-older-than-days": "30"}
    )
    assert (s.uri_style, s.storage_class, s.delete_older_than_days) == ("path", "STANDARD_IA", 30)


def test_secrets_never_in_repr_or_redacted_view() -> None:
    s = parsed()
    assert "very-secret" not in repr(s)
    assert "AKIA" not in repr(s)
    view = s.redacted()
    assert "very-secret" not in str(view)
    assert view["secret-key"] == "<redacted>"
    assert view["bucket"] == "backups"


# --- Allow-lists (docs/security.md, "Input validation") ----------------------------

# The two exploits of the security issue: a region and a path whose line-breaking
# characters (which str.splitlines knows and "\n"-only checks do not) carried options.
REGION_EXPLOIT = "us-east-1\x1crepo1-s3-verify-tls=n"
PATH_EXPLOIT = "/pg\x0brepo1-host=evil.example.com\x0bcmd-ssh=/tmp/x.sh"


def refusal(**extra: str) -> str:
    problem = parse_s3_settings({**BASE, **extra})
    assert isinstance(problem, S3SettingsProblem), problem
    assert not problem.missing
    assert len(problem.invalid) == 1, problem.invalid
    return problem.invalid[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("region", REGION_EXPLOIT),
        ("region", "EU-WEST-1"),
        ("region", "eu west"),
        ("region", "a" * 65),
        ("path", PATH_EXPLOIT),
        ("path", "/a/../b"),
        ("path", "/a/./b"),
        ("path", "/with space"),
        ("path", "/caf\u00e9"),
        ("path", "/" + "a" * 1024),
        ("bucket", "b"),
        ("bucket", "Backups"),
        ("bucket", "my_bucket"),
        ("bucket", "-bucket"),
        ("bucket", "bucket-"),
        ("bucket", "a..b"),
        ("bucket", "192.168.1.10"),
        ("bucket", "b" * 64),
        ("bucket", "bkt\u2028x"),
        ("endpoint", "s3.example.com"),
        ("endpoint", "http://minio:9000"),
        ("endpoint", "ftp://x"),
        ("endpoint", "https://"),
        ("endpoint", "https://user:pw@s3.example.com"),
        ("endpoint", "https://s3.example.com/prefix"),
        ("endpoint", "https://s3.example.com?x=1"),
        ("endpoint", "https://s3.example.com#frag"),
        ("endpoint", "https://s3.example.com:99999"),
        ("endpoint", "https://s3.example.com:0"),
        ("endpoint", "https://s3.exa\tmple.com"),
        ("endpoint", "https://s3.example.com\x85repo1-host=x"),
        ("endpoint", "https://[::1"),
        ("endpoint", "https://s3_example.com"),
        ("s3-uri-style", "virtual"),
        ("s3-uri-style", "path\x1c"),
        ("storage-class", "STANDARD IA"),
        ("storage-class", "STANDARD\x1dx=y"),
        ("delete-older-than-days", "0"),
        ("delete-older-than-days", "36501"),
        ("delete-older-than-days", "99999999"),
        ("delete-older-than-days", "-5"),
        ("delete-older-than-days", "+5"),
        ("delete-older-than-days", "1_0"),
        ("delete-older-than-days", "\uff15"),  # a full-width 5: int() would take it
        ("tls-ca-chain", "hello"),
        ("tls-ca-chain", f"preamble\n{PEM}"),
        ("tls-ca-chain", f"{PEM}\nrepo1-host=x"),
        ("tls-ca-chain", PEM.replace("MIIB", "MI!B")),
        ("tls-ca-chain", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"),
    ],
)
def test_a_value_outside_its_allow_list_is_refused_naming_the_field(field: str, value: str) -> None:
    reason = refusal(**{field: value})
    assert reason.startswith(f"{field} "), reason
    assert value.strip() not in reason or value.strip().isprintable()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("access-key", "AKIA EXAMPLE"),
        ("access-key", "AKIA\x1cEXAMPLE"),
        ("access-key", "A" * 129),
        ("secret-key", "s3cr3t\nrepo1-host=x"),
        ("secret-key", "s3cr3t\u2029x"),
        ("secret-key", "s3cr\u00e9t"),
        ("secret-key", "s" * 257),
    ],
)
def test_a_bad_key_is_named_but_never_shown(field: str, value: str) -> None:
    reason = refusal(**{field: value})
    assert reason.startswith(f"{field} must be printable ASCII"), reason
    assert value not in reason
    assert value[:4] not in reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bucket", "my.backups-2026"),
        ("bucket", "abc"),
        ("bucket", "a" * 63),
        ("region", "eu-west-1"),
        ("region", "garage"),
        ("path", "/prod/pg-15_main@site:1"),
        ("endpoint", "https://s3.example.com"),
        ("endpoint", "https://S3.Example.com:9000/"),
        ("endpoint", "https://10.0.0.5:9000"),
        ("s3-uri-style", "path"),
        ("storage-class", "GLACIER_IR"),
        ("delete-older-than-days", "1"),
        ("delete-older-than-days", "36500"),
        ("access-key", "A" * 128),
        ("secret-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY+EXAMPLEKEY=!#$%"),
    ],
)
def test_a_value_inside_its_allow_list_is_accepted(field: str, value: str) -> None:
    parsed(**{field: value})


def test_the_ca_chain_keeps_each_certificate_of_a_bundle() -> None:
    bundle = f"{PEM}\r\n\r\n{PEM.replace('MIIB', 'MIIC')}\n"
    assert parsed(**{"tls-ca-chain": bundle}).tls_ca_chain == (
        PEM,
        PEM.replace("MIIB", "MIIC"),
    )


def test_no_days_keeps_everything_at_pgbackrest_s_maximum() -> None:
    # pgBackRest 2.45: repo1-retention-full is 1..9999999; its help says to use the
    # maximum for indefinite retention. The user's own range stops at 100 years.
    assert parsed().delete_older_than_days == DEFAULT_DELETE_OLDER_THAN_DAYS == 9999999


def test_an_encryption_passphrase_is_kept_and_never_shown() -> None:
    s = parsed(**{"encryption-passphrase": "p" * 43})
    assert s.encrypted and s.cipher_pass == "p" * 43
    assert "p" * 43 not in repr(s) and "p" * 43 not in str(s.redacted())
    assert s.redacted()["encryption"] == "aes-256-cbc"
    assert parsed().redacted()["encryption"] == "none" and not parsed().encrypted
    # Not part of which repository it is: the same repository, encrypted or not.
    assert s.repository_id == parsed().repository_id


@pytest.mark.parametrize("value", ["short-one", "has a space in it here!", "x" * 1025, "é" * 30])
def test_a_bad_passphrase_is_refused_and_not_echoed(value: str) -> None:
    problem = parse_s3_settings({**BASE, "encryption-passphrase": value})
    assert isinstance(problem, S3SettingsProblem)
    assert "encryption-passphrase must be 20-1024 printable characters" in problem.message()
    assert value not in problem.message()
