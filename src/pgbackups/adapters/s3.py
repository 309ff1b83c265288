"""The S3 bucket of the current settings, through botocore (implements ``host.ObjectStore``).

- botocore's client directly, not boto3's: boto3 adds nothing used here (resources,
  s3transfer's managed uploads) and its import costs about 60 ms more, paid by every
  command that touches S3 (docs/performance.md).
- The settings' CA chain is what botocore verifies the endpoint against (``verify=<file>``).
- Checksums only "when required": S3-compatible servers such as rclone reject the
  aws-chunked checksum trailer that botocore >= 1.36 sends by default.
- Every failure becomes :class:`~pgbackups.core.host.ObjectStoreError` with a short reason
  (the S3 error code and message, or the kind of network/TLS failure), never a key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from pgbackups.adapters import ca_files
from pgbackups.core import redact
from pgbackups.core.host import ObjectStoreError, ObjectStoreForbidden
from pgbackups.core.settings import S3Settings, ca_chain_text

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

T = TypeVar("T")

_NOT_FOUND = frozenset({"404", "NoSuchBucket", "NotFound", "NoSuchKey"})
_BAD_LOCATION = frozenset({"InvalidLocationConstraint", "IllegalLocationConstraintException"})
_ALREADY_EXISTS = frozenset({"BucketAlreadyExists", "BucketAlreadyOwnedByYou"})
_FORBIDDEN = frozenset(
    {"403", "Forbidden", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
_MAX_REASON = 240


def _scrub(text: str, settings: S3Settings) -> str:
    return redact.scrub(text, (settings.secret_key, settings.access_key))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _ssl_reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"certificate verify failed:?\s*([^()\]'\"]*)", text, re.IGNORECASE)
    if match:
        detail = match.group(1).strip().rstrip(".,")
        return "SSL certificate verification failed" + (f": {detail}" if detail else "")
    match = re.search(r"\[SSL: ([A-Z_]+)\]", text)
    return f"SSL error: {match.group(1)}" if match else "SSL error"


def describe_error(exc: BaseException, settings: S3Settings) -> str:
    """A short reason for a botocore failure, without the keys."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code.isdigit() and not message:
            message = {403: "Forbidden", 404: "Not Found"}.get(int(code), "")
        reason = f"{code}: {message}" if message else code or f"HTTP {status}"
    elif isinstance(exc, botocore.exceptions.SSLError):
        reason = _ssl_reason(exc)
    elif isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError,
    ):
        reason = f"{type(exc).__name__}: cannot reach {settings.endpoint}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return _short(_scrub(reason, settings))


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


class _S3OnlyLoader(botocore.loaders.Loader):
    """botocore's data loader, knowing that S3 is the one service asked for. Before it
    loads a model it lists every service folder it ships (some 400) only to check the
    name: about a third of creating the client, paid by every command that touches S3
    (docs/performance.md). The S3 model itself is found and loaded as before."""

    def list_available_services(self, type_name: str) -> list[str]:
        return ["s3"]


def _session() -> botocore.session.Session:
    session = botocore.session.get_session()
    data_path = session.get_config_variable("data_path")  # AWS_DATA_PATH, as botocore
    extra = str(data_path).split(os.pathsep) if data_path else []
    session.register_component("data_loader", _S3OnlyLoader(extra_search_paths=extra))
    return session


class S3Bucket:
    """The bucket of one :class:`S3Settings`. Keys are relative to the bucket root."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        ca_folder: Path | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 2,
    ) -> None:
        """``ca_folder``: the host's own folder for the CA chain's file (ca_files.py)."""
        self.settings = settings
        self.ca_file: str | None = None
        if settings.tls_ca_chain:
            self.ca_file = self._write_chain(ca_folder)
        verify: str | bool = self.ca_file if self.ca_file else True
        config = Config(
            region_name=settings.region or "us-east-1",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if settings.uri_style == "path" else "virtual"},
        )
        session = _session()
        # The same client boto3 would build (boto3 wraps this call), typed as its S3 client.
        self.client = cast(
            "S3Client",
            session.create_client(
                "s3",
                endpoint_url=settings.endpoint,
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                verify=verify,
                config=config,
            ),
        )

    def _write_chain(self, folder: Path | None) -> str:
        """The CA chain's file of our own (adapters/ca_files.py), never one that pgBackRest
        reads (rewriting that could cut short an archive-push reading it). A private copy
        is removed with this object."""
        ca = ca_files.write_ca_file(ca_chain_text(self.settings), folder)
        if ca.private:
            self._cleanup = weakref.finalize(self, ca_files.remove_quietly, ca.path)
        return ca.path

    def close(self) -> None:
        """Drop the private CA file (if this object wrote one) and the connections."""
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()
        with contextlib.suppress(Exception):
            self.client.close()

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            reason = describe_error(exc, self.settings)
            log.info("S3 %s on bucket %s failed: %s", what, self.settings.bucket, reason)
            raise ObjectStoreError(reason) from None

    # -- ObjectStore --------------------------------------------------------

    def ensure_bucket(self) -> bool:
        """Create the bucket when it does not exist. True if this call created it."""
        bucket = self.settings.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
            return False
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in _FORBIDDEN:
                raise ObjectStoreForbidden(describe_error(exc, self.settings)) from None
            if _error_code(exc) not in _NOT_FOUND:
                raise ObjectStoreError(describe_error(exc, self.settings)) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ObjectStoreError(describe_error(exc, self.settings)) from None

        region = self.settings.region
        try:
            try:
                if region and region != "us-east-1":
                    self.client.create_bucket(
                        Bucket=bucket,
                        CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                    )
                else:
                    self.client.create_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) not in _BAD_LOCATION:
                    raise
                log.info("S3 refused location %s for bucket %s; creating without", region, bucket)
                self.client.create_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in _ALREADY_EXISTS:
                return False
            raise ObjectStoreError(describe_error(exc, self.settings)) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ObjectStoreError(describe_error(exc, self.settings)) from None
        log.info("created S3 bucket %s", bucket)
        return True

    def put(self, key: str, body: bytes) -> None:
        self._call(
            f"put {key}",
            lambda: self.client.put_object(Bucket=self.settings.bucket, Key=key, Body=body),
        )

    def get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.settings.bucket, Key=key)
            return response["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ObjectStoreError(describe_error(exc, self.settings)) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ObjectStoreError(describe_error(exc, self.settings)) from None

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted."""

        def collect() -> list[str]:
            keys: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", []) if "Key" in item]
            return sorted(keys)

        return self._call(f"list {prefix or '/'}", collect)

    def delete(self, key: str) -> None:
        # S3 answers a DELETE of a missing key with 204, as for one that existed.
        self._call(
            f"delete {key}",
            lambda: self.client.delete_object(Bucket=self.settings.bucket, Key=key),
        )
