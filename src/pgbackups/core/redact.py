"""Removing known secret values from text before it is logged, shown or raised.

A secret reaches an output in more forms than the one we hold: pgBackRest and botocore
print request paths and queries URL-encoded (``%20`` or ``+`` for a space, either case of
hex digits), and JSON output (``pgbackrest info --output=json``, a provider's error body)
escapes quotes, backslashes, control and non-ASCII characters. :func:`scrub` removes each
of those forms, so a secret with a space, ``%``, ``"``, ``\\`` or a non-ASCII character is
caught wherever it went. The one scrubber for every adapter: the pgBackRest and S3
adapters both call it (adapters do not import each other, hence the core).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "<redacted>"

_PERCENT_ESCAPE_RE = re.compile(r"%[0-9A-F]{2}")


def forms(secret: str) -> frozenset[str]:
    """Every spelling of ``secret`` that :func:`scrub` removes (empty for "")."""
    if not secret:
        return frozenset()
    spellings = {
        secret,
        json.dumps(secret)[1:-1],  # \uXXXX for non-ASCII
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    for encoded in (
        quote(secret),  # "/" kept, as in a URL path
        quote(secret, safe=""),
        quote_plus(secret),  # "+" for a space, as in a query or a form body
        quote_plus(secret, safe="/"),
    ):
        spellings.add(encoded)
        # RFC 3986 lets an encoder use lower-case hex digits.
        spellings.add(_PERCENT_ESCAPE_RE.sub(lambda m: m.group().lower(), encoded))
    return frozenset(spellings)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by :data:`REDACTED`.

    One pass over the text, trying the longest form first at each place: a shorter form
    found inside a longer one (one secret inside another, or inside its own JSON form)
    never leaves a part of the longer behind, and a marker already put in is never
    scanned again (a one-letter secret would otherwise eat into ``<redacted>``).
    """
    spellings: set[str] = set()
    for secret in secrets:
        spellings |= forms(secret)
    # Only the forms the text holds: a form absent from it matches nowhere, and a
    # substring test is far cheaper than the alternation below over megabytes of
    # output (a listing of a month of WAL). Same result, in milliseconds.
    spellings = {s for s in spellings if s in text}
    if not spellings:
        return text
    ordered = sorted(spellings, key=lambda s: (-len(s), s))
    pattern = re.compile("|".join(re.escape(s) for s in ordered))
    return pattern.sub(REDACTED, text)
