"""The one scrubber (core.redact) and the adapters that use it: a secret is removed in
every form it can take in an output (raw, URL-encoded, JSON-escaped), whatever it holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

from hypothesis import example, given
from hypothesis import strategies as st

from pgbackups.adapters.pgbackrest import extract_error_line, read_config_secrets
from pgbackups.adapters.pgbackrest import scrub as pgbackrest_scrub
from pgbackups.adapters.s3 import describe_error
from pgbackups.core.host import CommandResult
from pgbackups.core.redact import REDACTED, scrub
from pgbackups.core.settings import S3Settings

ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "quote": quote,
    "quote-safe-none": lambda s: quote(s, safe=""),
    "quote_plus": quote_plus,
    "quote_plus-lower-hex": lambda s: _lower_hex(quote_plus(s)),
    "json": lambda s: json.dumps(s)[1:-1],
    "json-unicode": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
}


def _lower_hex(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            out.append(text[i : i + 3].lower())
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _left(text: str, form: str) -> bool:
    """Whether ``form`` is still in ``text`` outside the markers."""
    return any(form in piece for piece in text.split(REDACTED))


secrets = st.text(min_size=1, max_size=40)


@given(
    secret=secrets,
    encoding=st.sampled_from(sorted(ENCODINGS)),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
@example(secret="pass word", encoding="quote_plus", before="?x=", after="&y")
@example(secret='quo"te\\back', encoding="json", before='{"m": "', after='"}')
@example(secret="100% sûr ✓", encoding="quote", before="/bucket/", after=" HTTP/1.1")
@example(secret="e", encoding="raw", before="<redacted>", after="")
def test_any_secret_in_any_form_is_removed(
    secret: str, encoding: str, before: str, after: str
) -> None:
    form = ENCODINGS[encoding](secret)
    result = scrub(before + form + after, [secret])
    assert not _left(result, form)
    assert not _left(result, secret)


@given(secret=secrets, other=st.text(max_size=60))
def test_text_without_the_secret_is_unchanged(secret: str, other: str) -> None:
    if any(form in other for form in {enc(secret) for enc in ENCODINGS.values()}):
        return
    assert scrub(other, [secret]) == other


def test_no_secret_or_an_empty_one_changes_nothing() -> None:
    assert scrub("a b c", []) == "a b c"
    assert scrub("a b c", [""]) == "a b c"


def test_a_secret_inside_another_leaves_nothing_of_the_longer() -> None:
    assert scrub("key=abc def", ["abc", "abc def"]) == f"key={REDACTED}"


def test_pgbackrest_error_line_removes_a_secret_with_spaces_and_its_encodings() -> None:
    secret = 'se cr/et"%'
    stderr = (
        f"ERROR: [039]: HTTP request failed for /b?key={quote_plus(secret)}\n"
        f'ERROR: [029]: bad JSON {{"secret": {json.dumps(secret)}}}\n'
        f"ERROR: [031]: option repo1-s3-key-secret={secret} is wrong\n"
    )
    line = extract_error_line(CommandResult(("pgbackrest",), 39, "", stderr), [secret])
    for form in (secret, quote_plus(secret), json.dumps(secret)[1:-1], 'cr/et"'):
        assert form not in line, form
    assert line.startswith("ERROR: [039]: HTTP request failed for /b?key=<redacted>")


def test_pgbackrest_secret_option_with_spaces_is_read_whole(tmp_path: Path) -> None:
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text("[global]\nrepo1-s3-key=AK 1\nrepo1-s3-key-secret=s3 cr3t x\nlog-path=/l\n")
    assert set(read_config_secrets(conf)) == {"AK 1", "s3 cr3t x"}
    text = pgbackrest_scrub("denied: s3 cr3t x / AK 1", read_config_secrets(conf))
    assert text == f"denied: {REDACTED} / {REDACTED}"


def test_s3_errors_are_scrubbed_in_every_form() -> None:
    settings = S3Settings(
        bucket="b", access_key="AK", secret_key="s/k+é", endpoint="https://s3.example.com"
    )
    exc = ValueError(f"signed {quote('s/k+é', safe='')} and {json.dumps('s/k+é')}")
    reason = describe_error(exc, settings)
    assert "s/k+é" not in reason and quote("s/k+é", safe="") not in reason
    assert "\\u00e9" not in reason
    assert reason == f'ValueError: signed {REDACTED} and "{REDACTED}"'
