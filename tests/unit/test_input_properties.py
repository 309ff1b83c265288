"""Property tests over every S3 setting (docs/security.md, "Input validation").

Each raw value is either refused, with a message that names its field and never shows a
secret, or rendered into pgbackrest.conf as exactly its own option(s): never a traceback,
never a new option, never another option's value changed. pgbackrest.conf is read here
the way pgBackRest reads it: lines end at "\\n" only, ``key=value`` splits at the first
``=``. tests/integration/test_input_validation.py asks the real pgBackRest the same
question for a few examples.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgbackups.adapters.pgbackrest import PgBackRestConfig, PgBackRestFeatures, render_config
from pgbackups.core.settings import S3Settings, S3SettingsProblem, parse_s3_settings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
BASE = {
    "bucket": "backups",
    "access-key": "AKIAEXAMPLE",
    "secret-key": "s3cr3t",
    "endpoint": "https://s3.example.com",
    "region": "eu-west-1",
    "path": "/pg",
}
SECRETS = ("access-key", "secret-key")
# The options each setting may write or change (the rest of the file must not move).
OWN_OPTIONS: dict[str, set[str]] = {
    "bucket": {"repo1-s3-bucket"},
    "access-key": {"repo1-s3-key"},
    "secret-key": {"repo1-s3-key-secret"},
    "endpoint": {"repo1-s3-endpoint", "repo1-storage-port"},
    "region": {"repo1-s3-region"},
    "path": {"repo1-path"},
    "s3-uri-style": {"repo1-s3-uri-style"},
    "storage-class": {"repo1-s3-storage-class"},
    "delete-older-than-days": {"repo1-retention-full"},
    "tls-ca-chain": {"repo1-storage-ca-file"},
}
# What turns a value into several lines somewhere: pgBackRest splits at "\n", Python's
# splitlines at all of these; plus characters an option or a shell word is made of.
BREAKERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\t "
NASTY = st.text(alphabet=st.sampled_from([*BREAKERS, "=", "[", "]", "#", ";", "$", "`", "a", "-"]))
INJECTIONS = st.sampled_from(
    [f"{b}repo1-s3-verify-tls=n" for b in BREAKERS] + [f"{b}[evil]" for b in BREAKERS]
)
PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "bucket": st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True),
    "access-key": st.from_regex(r"[\x21-\x7e]{1,130}", fullmatch=True),
    "secret-key": st.from_regex(r"[\x21-\x7e]{1,260}", fullmatch=True),
    "endpoint": st.from_regex(
        r"(https?://)?[a-zA-Z0-9.@:_-]{0,30}(:[0-9]{1,6})?/?", fullmatch=True
    ),
    "region": st.from_regex(r"[a-z0-9-]{1,70}", fullmatch=True),
    "path": st.from_regex(r"/?[\x21-\x7e]{0,40}", fullmatch=True),
    "s3-uri-style": st.sampled_from(["path", "host", "virtual", "PATH"]),
    "storage-class": st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True),
    "delete-older-than-days": st.integers(-10, 10**8).map(str),
    "tls-ca-chain": st.sampled_from([PEM, json.dumps([PEM]), json.dumps([PEM, PEM]), "[]"]),
}


def raw_values(field: str) -> st.SearchStrategy[str]:
    plausible = PLAUSIBLE[field]
    return st.one_of(
        st.text(),
        NASTY,
        plausible,
        st.tuples(plausible, INJECTIONS).map("".join),
        st.tuples(plausible, NASTY, plausible).map("".join),
    )


FIELDS = st.sampled_from(sorted(OWN_OPTIONS))


@st.composite
def field_and_value(draw: st.DrawFn) -> tuple[str, str]:
    field = draw(FIELDS)
    return field, draw(raw_values(field))


def config(s3: S3Settings) -> PgBackRestConfig:
    return PgBackRestConfig(
        stanza="prod.main",
        pg_path="/var/lib/postgresql/15/main",
        s3=s3,
        ca_file="/etc/pgbackups/s3-ca.pem",
        process_max=2,
        restore_process_max=2,
        # A build with a storage-class option, so that storage-class is rendered too.
        features=PgBackRestFeatures((2, 58), storage_class_option="repo-s3-storage-class"),
    )


def options_as_pgbackrest_reads_them(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) per option line, lines split at "\\n" as pgBackRest does."""
    found, section = [], ""
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _parsed(raw: dict[str, str]) -> S3Settings:
    parsed = parse_s3_settings(raw)
    assert isinstance(parsed, S3Settings)
    return parsed


BASELINE = _parsed(BASE)
BASELINE_OPTIONS = options_as_pgbackrest_reads_them(render_config(config(BASELINE)))


def assert_only_own_options_changed(field: str, settings: S3Settings) -> None:
    text = render_config(config(settings))
    assert all(" " <= c <= "~" or c == "\n" for c in text)
    options = options_as_pgbackrest_reads_them(text)
    keys = [(s, k) for s, k, _ in options]
    assert len(keys) == len(set(keys)), "an option appears twice"
    before = {(s, k): v for s, k, v in BASELINE_OPTIONS}
    after = {(s, k): v for s, k, v in options}
    changed = {k for (_, k) in set(before) ^ set(after)}
    changed |= {k for (s, k) in set(before) & set(after) if before[s, k] != after[s, k]}
    assert changed <= OWN_OPTIONS[field], (field, changed)


@settings(max_examples=400)
@given(field_and_value())
@example(("region", "us-east-1\x1crepo1-s3-verify-tls=n"))
@example(("path", "/pg\x0brepo1-host=evil.example.com\x0bcmd-ssh=/tmp/x.sh"))
@example(("delete-older-than-days", "99999999"))
@example(("endpoint", ""))
def test_every_setting_is_refused_by_name_or_rendered_into_its_own_option(
    case: tuple[str, str],
) -> None:
    field, value = case
    result = parse_s3_settings({**BASE, field: value})
    if isinstance(result, S3SettingsProblem):
        assert not result.missing or field in ("bucket", *SECRETS)
        for reason in result.invalid:
            assert reason.startswith(f"{field} "), reason
            # (A value of a few characters may be a word of the message by chance.)
            if field in SECRETS and len(value.strip()) >= 6:
                assert value.strip() not in reason
        return
    assert_only_own_options_changed(field, result)


TEXT_FIELDS = (
    "bucket",
    "access_key",
    "secret_key",
    "region",
    "path",
    "uri_style",
    "endpoint",
    "storage_class",
)


@settings(max_examples=200)
@given(st.sampled_from(TEXT_FIELDS), st.text())
def test_the_renderer_refuses_what_a_caller_built_around_the_parser(
    attribute: str, value: str
) -> None:
    """Second line: S3Settings built directly (no parse) still add no option."""
    changed: dict[str, Any] = {attribute: value}
    settings = replace(BASELINE, **changed)
    field = {"access_key": "access-key", "secret_key": "secret-key", "uri_style": "s3-uri-style"}
    name = field.get(attribute, attribute.replace("_", "-"))
    try:
        assert_only_own_options_changed(name, settings)
    except ValueError as exc:  # the renderer's refusal: a ValueError, never another error
        if attribute in ("access_key", "secret_key") and len(value) >= 6:
            assert value not in str(exc)
