"""S3 settings: the model the hooks work from (docs/behaviour/world.md).

Raw settings arrive as a string map (the s3 relation's application bag, or the
local runtime's ``pgbackups s3 set``). :func:`parse_s3_settings` validates and
normalises them into :class:`S3Settings`, or reports what is missing or wrong.
Nothing here talks to S3.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUIRED_KEYS = ("bucket", "access-key", "secret-key")
# The raw key a host adds to the S3 settings with the repository's passphrase.
PASSPHRASE_KEY = "encryption-passphrase"  # noqa: S105 - a key name, not a secret
CIPHER_TYPE = "aes-256-cbc"
# pgBackRest takes any string; ours are generated (43 characters) or given by a person:
# long enough not to be guessed, printable without blanks so it fits one config line.
PASSPHRASE_MIN, PASSPHRASE_MAX = 20, 1024
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
URI_STYLES = ("host", "path")
# Retention is "keep everything" unless the integrator asks for days: pgBackRest has no
# "never" for time-based retention, and its help says to set the option to its maximum,
# which is 9999999 in 2.45 (10000000 is "out of range for 'repo1-retention-full'").
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
    # The repository's encryption passphrase (pgBackRest aes-256-cbc); "" = unencrypted.
    # Not from the S3 integrator: each host adds its own secret (docs/security.md).
    cipher_pass: str = field(default="", repr=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.cipher_pass)

    @property
    def repository_id(self) -> str:
        """Which repository these settings name (no secret): what ownership is verified
        for. Keys and the CA may change without changing the repository."""
        return f"{self.endpoint.rstrip('/')}/{self.bucket}{self.path}"

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
            "encryption": CIPHER_TYPE if self.cipher_pass else "none",
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


# --- Allow-lists (docs/security.md, "Input validation") ---------------------------
#
# These values come from another application (the S3 integrator) or a command line, and
# end up in pgbackrest.conf, in Patroni's YAML and in S3 requests. Each field gets the
# narrowest set of characters it needs, so that no value can carry a line break (of any
# of the kinds str.splitlines knows), an option or a shell word into a file we render.

BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
REGION_RE = re.compile(r"[a-z0-9-]{1,64}")
# AWS's classes are STANDARD_IA, GLACIER_IR...: upper case and ``_``; other servers name
# theirs freely, so letters, digits, ``_`` and ``-`` (nothing that splits a line or a word).
STORAGE_CLASS_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Printable ASCII without whitespace: what access keys and secrets are made of everywhere.
_KEY_RE = re.compile(r"[\x21-\x7e]+")
ACCESS_KEY_MAX = 128
SECRET_KEY_MAX = 256
# An S3 object key is at most 1024 bytes; the path is a prefix of every key.
_PATH_RE = re.compile(r"[\x21-\x7e]{0,1024}")
ENDPOINT_MAX = 255
# 100 years; pgBackRest's own upper bound is 9999999 (``repo1-retention-full``), which
# DEFAULT_DELETE_OLDER_THAN_DAYS uses for "keep everything".
DAYS_MIN, DAYS_MAX = 1, 36500
_DAYS_RE = re.compile(r"[0-9]{1,9}")
_PEM_BLOCK_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=\n]+?)\n?-----END CERTIFICATE-----"
)
# A whole chain is at most this many certificates and characters (a sane bound, not a
# limit anyone reaches: public bundles hold about 150 certificates in 220 kB).
CA_CHAIN_MAX_CERTS = 200
CA_CHAIN_MAX_CHARS = 512 * 1024
# Echoed values are cut at this length: messages end in Juju status lines.
_SHOWN_MAX = 64
_BLANKS = " \t\r\n"


def _shown(value: str) -> str:
    """A non-secret value as messages show it: quoted, escaped (``repr`` escapes every
    control and line-breaking character), and cut short."""
    if len(value) > _SHOWN_MAX:
        return repr(value[:_SHOWN_MAX]) + "..."
    return repr(value)


def _check_bucket(value: str) -> str | None:
    if BUCKET_RE.fullmatch(value) is None or ".." in value or _IPV4_RE.fullmatch(value) is not None:
        return (
            f"bucket {_shown(value)} is not an S3 bucket name: 3-63 lower-case letters, "
            "digits, dots and hyphens, starting and ending with a letter or digit, no '..', "
            "not an IP address"
        )
    return None


def _check_endpoint(value: str) -> str | None:
    """An ``https`` URL of a host, with an optional port and nothing else.

    pgBackRest's S3 driver speaks HTTPS only and takes just a host name and a port, so
    ``http``, user-info, a path, a query or a fragment could only be ignored or
    misread: they are refused. The characters are checked before ``urlsplit``, which
    silently drops tabs and line breaks.
    """
    expected = "expected e.g. https://s3.example.com:9000"
    if len(value) > ENDPOINT_MAX or not _printable(value) or " " in value:
        return f"endpoint {_shown(value)} is not a URL; {expected}"
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return f"endpoint {_shown(value)} is not a URL; {expected}"
    if parts.scheme == "http":
        return (
            f"endpoint {_shown(value)} is plain http; pgBackRest's S3 driver speaks HTTPS "
            f"only: {expected}"
        )
    try:
        port = parts.port
    except ValueError:
        return f"endpoint {_shown(value)} has an invalid port (1-65535); {expected}"
    host = parts.hostname or ""
    if (
        parts.scheme != "https"
        or not host
        or "@" in parts.netloc
        or parts.path
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
        or port == 0
        or not all(_HOST_LABEL_RE.fullmatch(label) for label in host.rstrip(".").split("."))
    ):
        return f"endpoint {_shown(value)} is not a URL; {expected}"
    return None


def _printable(value: str) -> bool:
    return all(" " <= c <= "~" for c in value)


def _check_path(value: str) -> str | None:
    segments = [s for s in value.split("/") if s]
    if _PATH_RE.fullmatch(value) is None or any(s in (".", "..") for s in segments):
        return (
            f"path {_shown(value)} is not a bucket path: printable ASCII without spaces, "
            "no '.' or '..' segment, at most 1024 characters"
        )
    return None


def _check_key(name: str, value: str, longest: int) -> str | None:
    # Never echoed: the access key identifies an account and the secret is a secret.
    if len(value) > longest or _KEY_RE.fullmatch(value) is None:
        return f"{name} must be printable ASCII without spaces, at most {longest} characters"
    return None


def _parse_days(value: str) -> int | str:
    if _DAYS_RE.fullmatch(value) is None or not DAYS_MIN <= int(value) <= DAYS_MAX:
        return (
            f"delete-older-than-days {_shown(value)} is not a whole number of days "
            f"from {DAYS_MIN} to {DAYS_MAX}"
        )
    return int(value)


def _split_pem(text: str) -> tuple[str, ...] | None:
    """The certificates of a PEM text that holds PEM certificates and nothing else."""
    text = text.replace("\r\n", "\n").strip()
    found: list[str] = []
    position = 0
    for match in _PEM_BLOCK_RE.finditer(text):
        if text[position : match.start()].strip():
            return None  # something between or before the certificates
        body = match.group(1).replace("\n", "")
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
        found.append(match.group(0))
        position = match.end()
    if not found or text[position:].strip():
        return None
    return tuple(found)


def _parse_ca_chain(value: str) -> tuple[str, ...] | str:
    """``tls-ca-chain`` is a JSON list of PEM texts (the s3 interface) or one PEM text.

    Each text holds one or more PEM certificates and nothing else (no preamble, no key):
    the chain becomes a CA file every S3 request trusts.
    """
    value = value.strip()
    if not value:
        return ()
    if len(value) > CA_CHAIN_MAX_CHARS:
        return f"tls-ca-chain is longer than {CA_CHAIN_MAX_CHARS} characters"
    # Any JSON value is judged as JSON: only a list of PEM strings is a chain.
    if value.startswith(("[", "{", '"')):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return "tls-ca-chain is not a valid JSON list of PEM certificates"
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return "tls-ca-chain must be a JSON list of PEM certificate strings"
        texts = [i for i in items if i.strip()]
    else:
        texts = [value]
    chain: list[str] = []
    for text in texts:
        certificates = _split_pem(text)
        if certificates is None:
            return "tls-ca-chain holds something that is not a PEM certificate"
        chain += certificates
    if len(chain) > CA_CHAIN_MAX_CERTS:
        return f"tls-ca-chain holds more than {CA_CHAIN_MAX_CERTS} certificates"
    return tuple(chain)


def parse_s3_settings(raw: Mapping[str, str]) -> S3Settings | S3SettingsProblem:
    """Validate and normalise raw S3 settings against the allow-lists above.

    Strings lose surrounding blanks; the endpoint loses a trailing ``/``; the path gets exactly
    one leading ``/``; the bucket loses surrounding ``/``. A refused value is named in
    :attr:`S3SettingsProblem.invalid`; a secret's value is never repeated.
    """
    # Only ASCII blanks are stripped (a pasted value's spaces, a file's final newline):
    # str.strip() would also drop \x1c-\x1f, \x85 and the like, which are refused.
    values = {k: (v.strip(_BLANKS) if isinstance(v, str) else "") for k, v in raw.items()}
    missing = tuple(k for k in REQUIRED_KEYS if not values.get(k))
    invalid: list[str] = []

    def check(problem: str | None) -> None:
        if problem is not None:
            invalid.append(problem)

    bucket = (values.get("bucket") or "").strip("/")
    if values.get("bucket"):
        check(_check_bucket(bucket))
    access_key = values.get("access-key") or ""
    if access_key:
        check(_check_key("access-key", access_key, ACCESS_KEY_MAX))
    secret_key = values.get("secret-key") or ""
    if secret_key:
        check(_check_key("secret-key", secret_key, SECRET_KEY_MAX))

    cipher_pass = values.get(PASSPHRASE_KEY) or ""
    if cipher_pass and (
        _KEY_RE.fullmatch(cipher_pass) is None
        or not PASSPHRASE_MIN <= len(cipher_pass) <= PASSPHRASE_MAX
    ):
        # Never echoed: it is the key to every backup.
        invalid.append(
            f"{PASSPHRASE_KEY} must be {PASSPHRASE_MIN}-{PASSPHRASE_MAX} printable "
            "characters without blanks"
        )

    # An absent or empty endpoint is AWS (the integrator leaves it out for AWS).
    endpoint = (values.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
    check(_check_endpoint(endpoint))

    region = values.get("region") or ""
    if region and REGION_RE.fullmatch(region) is None:
        invalid.append(
            f"region {_shown(region)} is not a region name: 1-64 lower-case letters, digits "
            "and hyphens (e.g. eu-west-1)"
        )

    path = "/" + (values.get("path") or "").strip("/")
    check(_check_path(path))

    uri_style = values.get("s3-uri-style") or "host"
    if uri_style not in URI_STYLES:
        invalid.append(f"s3-uri-style {_shown(uri_style)} is not one of {', '.join(URI_STYLES)}")

    storage_class = values.get("storage-class") or ""
    if storage_class and STORAGE_CLASS_RE.fullmatch(storage_class) is None:
        invalid.append(
            f"storage-class {_shown(storage_class)} is not a storage class: 1-64 letters, "
            "digits, '_' and '-' (e.g. STANDARD_IA)"
        )

    chain = _parse_ca_chain(values.get("tls-ca-chain") or "")
    if isinstance(chain, str):
        invalid.append(chain)
        chain = ()

    days_text = values.get("delete-older-than-days") or ""
    days = DEFAULT_DELETE_OLDER_THAN_DAYS
    if days_text:
        parsed_days = _parse_days(days_text)
        if isinstance(parsed_days, str):
            invalid.append(parsed_days)
        else:
            days = parsed_days

    if missing or invalid:
        return S3SettingsProblem(missing=missing, invalid=tuple(invalid))

    return S3Settings(
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        endpoint=endpoint,
        region=region,
        path=path,
        uri_style=uri_style,
        tls_ca_chain=chain,
        storage_class=storage_class,
        delete_older_than_days=days,
        cipher_pass=cipher_pass,
    )


def ca_chain_text(settings: S3Settings) -> str:
    """The settings' CA chain as one PEM file's text: what pgBackRest and the S3 client read.

    It lives here, beside the settings, because two adapters (pgBackRest's configuration
    and the boto3 client) must write the very same file and adapters do not import each
    other.
    """
    return "\n".join(pem.strip() for pem in settings.tls_ca_chain) + "\n"
