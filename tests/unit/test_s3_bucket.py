"""S3Bucket against botocore's Stubber: keys, errors, bucket creation rules."""

from __future__ import annotations

import io
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from pgbackups.adapters.s3 import S3Bucket, describe_error
from pgbackups.core.host import ObjectStoreError, ObjectStoreForbidden
from pgbackups.core.marker import object_key
from pgbackups.core.settings import S3Settings, ca_chain_text

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def _settings(**kw: Any) -> S3Settings:
    base: dict[str, Any] = {
        "bucket": "pgbr",
        "access_key": "AKIAEXAMPLE",
        "secret_key": "s3cr3tValue",
        "endpoint": "https://localhost:4569",
        "uri_style": "path",
    }
    base.update(kw)
    return S3Settings(**base)


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Bucket, Stubber]]:
    bucket = S3Bucket(_settings(region="eu-west-3"))
    with Stubber(bucket.client) as stubber:
        yield bucket, stubber
        stubber.assert_no_pending_responses()


def test_object_key() -> None:
    # Keys under the settings' path come from pgbackups.core.marker.object_key.
    assert object_key(_settings(path="/").path, "backup/s/latest") == "backup/s/latest"
    assert object_key(_settings(path="/a/b").path, "backup/s") == "a/b/backup/s"
    assert object_key(_settings(path="/x/").path, "k") == "x/k"


def test_client_configuration() -> None:
    bucket = S3Bucket(_settings())
    # botocore-stubs' Config does not declare the options it was built with.
    config: Any = bucket.client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert bucket.client.meta.region_name == "us-east-1"
    assert bucket.client.meta.endpoint_url == "https://localhost:4569"
    virtual = S3Bucket(_settings(uri_style="host", region="eu-west-3"))
    virtual_config: Any = virtual.client.meta.config
    assert virtual_config.s3 == {"addressing_style": "virtual"}
    assert virtual.client.meta.region_name == "eu-west-3"


def test_ca_chain_goes_to_the_hosts_folder(tmp_path: Path) -> None:
    """The file botocore verifies against (its rules: test_ca_files.py)."""
    bucket = S3Bucket(_settings(tls_ca_chain=(PEM,)), ca_folder=tmp_path)
    assert bucket.ca_file is not None and Path(bucket.ca_file).parent == tmp_path
    # The same text pgbackrest.write_ca_chain puts in pgBackRest's CA file.
    assert Path(bucket.ca_file).read_text() == ca_chain_text(bucket.settings)
    client: Any = bucket.client  # what botocore's HTTP session verifies with
    assert client._endpoint.http_session._verify == bucket.ca_file
    bucket.close()
    assert os.path.exists(bucket.ca_file), "another client may verify against it"


def test_without_a_folder_the_ca_chain_is_a_private_temp_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bucket = S3Bucket(_settings(tls_ca_chain=(PEM,)))
    assert bucket.ca_file is not None and Path(bucket.ca_file).parent == tmp_path
    assert stat.S_IMODE(os.stat(bucket.ca_file).st_mode) == 0o600
    bucket.close()
    assert not os.path.exists(bucket.ca_file)
    assert S3Bucket(_settings()).ca_file is None


def test_existing_bucket(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_response("head_bucket", {}, {"Bucket": "pgbr"})
    assert bucket.ensure_bucket() is False


def test_missing_bucket_is_created_in_the_region(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("head_bucket", "404", "Not Found", 404)
    stubber.add_response(
        "create_bucket",
        {},
        {"Bucket": "pgbr", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-3"}},
    )
    assert bucket.ensure_bucket() is True


def test_refused_location_is_retried_without(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("head_bucket", "NoSuchBucket", "gone", 404)
    stubber.add_client_error("create_bucket", "InvalidLocationConstraint", "no", 400)
    stubber.add_response("create_bucket", {}, {"Bucket": "pgbr"})
    assert bucket.ensure_bucket() is True


def test_us_east_1_sends_no_location() -> None:
    bucket = S3Bucket(_settings(region="us-east-1"))
    with Stubber(bucket.client) as stubber:
        stubber.add_client_error("head_bucket", "404", "Not Found", 404)
        stubber.add_response("create_bucket", {}, {"Bucket": "pgbr"})
        assert bucket.ensure_bucket() is True


@pytest.mark.parametrize("code", ["BucketAlreadyExists", "BucketAlreadyOwnedByYou"])
def test_race_on_create_counts_as_existing(stubbed: tuple[S3Bucket, Stubber], code: str) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("head_bucket", "404", "Not Found", 404)
    stubber.add_client_error("create_bucket", code, "exists", 409)
    assert bucket.ensure_bucket() is False


def test_forbidden_bucket(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("head_bucket", "403", "", 403)
    with pytest.raises(ObjectStoreForbidden, match=r"^403: Forbidden$"):
        bucket.ensure_bucket()


def test_create_refused(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("head_bucket", "404", "Not Found", 404)
    stubber.add_client_error("create_bucket", "AccessDenied", "Access Denied", 403)
    with pytest.raises(ObjectStoreError, match=r"^AccessDenied: Access Denied$") as info:
        bucket.ensure_bucket()
    assert not isinstance(info.value, ObjectStoreForbidden), "creation refused: a bucket error"


def test_put_get_and_missing(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_response("put_object", {}, {"Bucket": "pgbr", "Key": "a/b", "Body": b"hi"})
    body = StreamingBody(io.BytesIO(b"hi"), 2)
    stubber.add_response("get_object", {"Body": body}, {"Bucket": "pgbr", "Key": "a/b"})
    stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
    bucket.put("a/b", b"hi")
    assert bucket.get("a/b") == b"hi"
    assert bucket.get("a/c") is None


def test_get_other_error(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
    with pytest.raises(ObjectStoreError, match="AccessDenied"):
        bucket.get("k")


def test_list_keys(stubbed: tuple[S3Bucket, Stubber]) -> None:
    bucket, stubber = stubbed
    stubber.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "p/b"}, {"Key": "p/a"}], "IsTruncated": False},
        {"Bucket": "pgbr", "Prefix": "p/"},
    )
    assert bucket.list_keys("p/") == ["p/a", "p/b"]


def test_error_text_never_carries_the_keys() -> None:
    settings = _settings()
    exc = botocore.exceptions.ClientError(
        {
            "Error": {
                "Code": "SignatureDoesNotMatch",
                "Message": "bad signature for AKIAEXAMPLE with s3cr3tValue",
            }
        },
        "PutObject",
    )
    text = describe_error(exc, settings)
    assert text.startswith("SignatureDoesNotMatch: bad signature")
    assert "AKIAEXAMPLE" not in text and "s3cr3tValue" not in text


def test_ssl_and_connection_reasons() -> None:
    settings = _settings()
    ssl = botocore.exceptions.SSLError(
        endpoint_url="https://localhost:4569",
        error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
        "issuer certificate (_ssl.c:992)",  # type: ignore[arg-type]  # botocore formats it
    )
    assert describe_error(ssl, settings) == (
        "SSL certificate verification failed: unable to get local issuer certificate"
    )
    conn = botocore.exceptions.EndpointConnectionError(endpoint_url="https://localhost:1")
    assert describe_error(conn, settings) == (
        "EndpointConnectionError: cannot reach https://localhost:4569"
    )


def test_long_messages_are_shortened() -> None:
    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": "X", "Message": "word " * 200}}, "GetObject"
    )
    assert len(describe_error(exc, _settings())) <= 240
