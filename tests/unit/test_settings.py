"""S3 settings (SPEC §1): validation and normalisation, and no secret in a repr."""

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
    s = parsed(bucket=" /backups/ ", endpoint=" http://minio:9000/ ", region=" eu-1 ")
    assert (s.bucket, s.endpoint, s.region) == ("backups", "http://minio:9000", "eu-1")
    assert s.endpoint_host == "minio"


@pytest.mark.parametrize(
    ("raw", "missing"),
    [
        ({}, ("bucket", "access-key", "secret-key")),
        ({"bucket": "b"}, ("access-key", "secret-key")),
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
    problem = parse_s3_settings({"bucket": "b", "s3-uri-style": "x"})
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
