"""S3Bucket against a real ``rclone serve s3`` over TLS with a private CA."""

from __future__ import annotations

import pytest
from realservers import S3Server, free_port

from pgbackups.adapters.s3 import S3Bucket
from pgbackups.core.host import ObjectStoreError
from pgbackups.core.marker import object_key

pytestmark = pytest.mark.real


def test_with_the_ca_create_put_get(s3: S3Server) -> None:
    settings = s3.settings("it-s3-roundtrip")
    bucket = S3Bucket(settings)
    try:
        assert bucket.ensure_bucket() is True
        assert bucket.ensure_bucket() is False
        key = object_key(settings.path, "backup/local.it/latest")
        assert key == "it/backup/local.it/latest"
        bucket.put(key, b"requested by the integration test\n")
        assert bucket.get(key) == b"requested by the integration test\n"
        bucket.put(key, b"overwritten")
        assert bucket.get(key) == b"overwritten"
        assert bucket.get(object_key(settings.path, "backup/absent")) is None
        assert bucket.list_keys("it/") == [key]
    finally:
        bucket.close()


def test_with_a_region_the_bucket_is_still_created(s3: S3Server) -> None:
    bucket = S3Bucket(s3.settings("it-s3-region", region="eu-west-3"))
    assert bucket.ensure_bucket() is True


def test_without_the_ca_certificate_verification_fails(s3: S3Server) -> None:
    bucket = S3Bucket(s3.settings("it-s3-noca", tls_ca_chain=()))
    with pytest.raises(ObjectStoreError) as caught:
        bucket.ensure_bucket()
    assert "certificate verification failed" in str(caught.value)
    with pytest.raises(ObjectStoreError, match="certificate verification failed"):
        bucket.put("k", b"v")


def test_wrong_secret_is_refused_without_leaking_it(s3: S3Server) -> None:
    S3Bucket(s3.settings("it-s3-secret")).ensure_bucket()
    wrong = "WrongSecretValue0123456789abcdefghijklmn"
    bucket = S3Bucket(s3.settings("it-s3-secret", secret_key=wrong))
    errors = []
    for call in (bucket.ensure_bucket, lambda: bucket.put("k", b"v"), lambda: bucket.get("k")):
        with pytest.raises(ObjectStoreError) as caught:
            call()
        errors.append(str(caught.value))
    for text in errors:
        assert wrong not in text and s3.credentials.secret_key not in text
        assert s3.credentials.access_key not in text
    assert errors[0] == "403: Forbidden"
    assert errors[1].startswith("SignatureDoesNotMatch") or errors[1].startswith("403")


def test_unreachable_endpoint(s3: S3Server) -> None:
    bucket = S3Bucket(s3.settings("it-s3-down", endpoint=f"https://localhost:{free_port()}"))
    with pytest.raises(ObjectStoreError, match="EndpointConnectionError: cannot reach"):
        bucket.ensure_bucket()
