"""S3 settings: the model the hooks work from (SPEC §1).

Raw settings arrive as a string map (the s3 relation's application bag, or the
local runtime's ``pgbackups s3 set``). :func:`parse_s3_settings` validates and
normalises them into :class:`S3Settings`, or reports what is missing or wrong.
Nothing here talks to S3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUIRED_KEYS = ("bucket", "access-key", "secret-key")
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
URI_STYLES = ("host", "path")
# Count-based retention is "keep everything" unless the integrator asks for days.
DEFAULT_DELETE_OLDER_THAN_DAYS = 9999999


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    region: str = ""
    path: str = "/"
    uri_style: str = "host"
    tls_ca_chain: tuple[str, ...] = ()
    storage_class: str = ""
    delete_older_than_days: int = DEFAULT_DELETE_OLDER_THAN_DAYS

    @property
    def endpoint_host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    def redacted(self) -> dict[str, str]:
        """A view that is safe for logs and status output: no secret."""
        return {
            "bucket": self.bucket,
            "endpoint": self.endpoint,
            "region": self.region,
            "path": self.path,
            "s3-uri-style": self.uri_style,
            "storage-class": self.storage_class,
            "tls-ca-chain": f"{len(self.tls_ca_chain)} certificate(s)",
            "delete-older-than-days": str(self.delete_older_than_days),
            "access-key": "<redacted>",
            "secret-key": "<redacted>",
        }


@dataclass(frozen=True)
class S3SettingsProblem:
    """Why raw settings cannot be used. ``missing`` keys, or ``invalid`` explanations."""

    missing: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    def message(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"Missing S3 parameters: {list(self.missing)}")
        if self.invalid:
            parts.append("Invalid S3 parameters: " + "; ".join(self.invalid))
        return "; ".join(parts)


def _parse_ca_chain(value: str) -> tuple[str, ...] | str:
    """``tls-ca-chain`` is a JSON list of PEM strings (the s3 interface) or one PEM text."""
    value = value.strip()
    if not value:
        return ()
    # Any JSON value is judged as JSON: only a list of PEM strings is a chain.
    if value.startswith(("[", "{", '"')):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return "tls-ca-chain is not a valid JSON list of PEM certificates"
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return "tls-ca-chain must be a JSON list of PEM certificate strings"
        chain = tuple(i.strip() for i in items if i.strip())
    else:
        chain = (value,)
    for pem in chain:
        if "-----BEGIN CERTIFICATE-----" not in pem or "-----END CERTIFICATE-----" not in pem:
            return "tls-ca-chain holds something that is not a PEM certificate"
    return chain


def parse_s3_settings(raw: Mapping[str, str]) -> S3Settings | S3SettingsProblem:
    """Validate and normalise raw S3 settings.

    Strings are stripped; the endpoint loses a trailing ``/``; the path gets exactly
    one leading ``/``; the bucket loses surrounding ``/``.
    """
    values = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
    missing = tuple(k for k in REQUIRED_KEYS if not values.get(k))
    invalid: list[str] = []

    endpoint = (values.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        invalid.append(
            f"endpoint {endpoint!r} is not a URL; expected e.g. https://s3.example.com:9000"
        )

    uri_style = values.get("s3-uri-style") or "host"
    if uri_style not in URI_STYLES:
        invalid.append(f"s3-uri-style {uri_style!r} is not one of {', '.join(URI_STYLES)}")

    chain = _parse_ca_chain(values.get("tls-ca-chain") or "")
    if isinstance(chain, str):
        invalid.append(chain)
        chain = ()

    days_text = values.get("delete-older-than-days") or ""
    days = DEFAULT_DELETE_OLDER_THAN_DAYS
    if days_text:
        try:
            days = int(days_text)
            if days < 1:
                raise ValueError
        except ValueError:
            invalid.append(
                f"delete-older-than-days {days_text!r} is not a whole number of days (1 or more)"
            )

    if missing or invalid:
        return S3SettingsProblem(missing=missing, invalid=tuple(invalid))

    return S3Settings(
        bucket=values["bucket"].strip("/"),
        access_key=values["access-key"],
        secret_key=values["secret-key"],
        endpoint=endpoint,
        region=values.get("region") or "",
        path="/" + (values.get("path") or "").strip("/"),
        uri_style=uri_style,
        tls_ca_chain=chain,
        storage_class=values.get("storage-class") or "",
        delete_older_than_days=days,
    )


def ca_chain_text(settings: S3Settings) -> str:
    """The settings' CA chain as one PEM file's text: what pgBackRest and the S3 client read.

    It lives here, beside the settings, because two adapters (pgBackRest's configuration
    and the boto3 client) must write the very same file and adapters do not import each
    other.
    """
    return "\n".join(pem.strip() for pem in settings.tls_ca_chain) + "\n"
