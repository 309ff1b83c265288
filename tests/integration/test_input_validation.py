"""The real pgBackRest reads the pgbackrest.conf we render from hostile S3 settings.

The security issue's two exploits are here as regressions: a region whose ``\\x1c`` made
``repo1-s3-verify-tls=n`` a line of its own, and a path whose ``\\x0b`` carried
``repo1-host`` and ``cmd-ssh`` so that ``pgbackrest info`` ran a script. Each raw setting
is either refused by :func:`parse_s3_settings` (the field named) or rendered; what is
rendered is then shown to pgBackRest 2.45 (``help backup`` prints every option it took
from the file as ``[current=...]``) and it must see exactly our options. The broad search
is tests/unit/test_input_properties.py; this keeps the real program to a few examples.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgbackups.adapters import processes
from pgbackups.adapters.pgbackrest import PgBackRestConfig, render_config, write_config
from pgbackups.core.host import CommandResult
from pgbackups.core.settings import S3Settings, S3SettingsProblem, parse_s3_settings

pytestmark = pytest.mark.real

STANZA = "it.validation"
BASE = {
    "bucket": "backups",
    "access-key": "AKIAEXAMPLE",
    "secret-key": "s3cr3t",
    "endpoint": "https://s3.example.com:9000",
    "region": "eu-west-3",
    "path": "/prod/pg",
    "s3-uri-style": "path",
    "delete-older-than-days": "30",
}
_OPTION_RE = re.compile(r"^  --([a-z0-9-]+)")
_CURRENT_RE = re.compile(r"\[current=")


def pgbackrest(config: Path, *args: str) -> CommandResult:
    return processes.run(
        ["pgbackrest", f"--config={config}", f"--stanza={STANZA}", *args], timeout=30
    )


def options_pgbackrest_took(config: Path) -> set[str]:
    """The options ``help backup`` shows with a current value (index-less names)."""
    result = pgbackrest(config, "help", "backup")
    assert result.ok, result.stderr + result.stdout
    taken, name, block = set(), "", ""
    for line in [*result.stdout.splitlines(), ""]:
        match = _OPTION_RE.match(line)
        if match or not line.startswith("    "):
            if name and _CURRENT_RE.search(block):
                taken.add(name)
            name, block = (match.group(1), line) if match else ("", "")
        else:
            block += " " + line.strip()
    return taken - {"config", "stanza"}  # the command line's own


def current_value(config: Path, option: str) -> str:
    result = pgbackrest(config, "help", "backup", option)
    assert result.ok, result.stderr + result.stdout
    values = [
        ln[len("current: ") :] for ln in result.stdout.splitlines() if ln.startswith("current: ")
    ]
    assert len(values) == 1, result.stdout
    return values[0]


def index_less(key: str) -> str:
    return re.sub(r"^(repo|pg)1-", r"\1-", key)


def rendered_keys(text: str) -> set[str]:
    return {
        line.partition("=")[0]
        for line in text.split("\n")
        if "=" in line and not line.startswith("#")
    }


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "log").mkdir()
    (tmp_path / "lock").mkdir()
    return tmp_path


def config_for(place: Path, s3: S3Settings) -> PgBackRestConfig:
    return PgBackRestConfig(
        stanza=STANZA,
        pg_path=str(place / "data"),
        s3=s3,
        log_path=str(place / "log"),
        lock_path=str(place / "lock"),
        spool_path=str(place / "spool"),
        process_max=1,
        restore_process_max=1,
    )


def render_or_refuse(place: Path, s3: S3Settings) -> tuple[Path, str] | None:
    """The file pgBackRest would read, or None when the renderer refused the settings."""
    try:
        text = render_config(config_for(place, s3))
    except ValueError:
        return None
    path = place / "pgbackrest.conf"
    write_config(text, path, None, mode=0o600)
    return path, text


def test_pgbackrest_takes_exactly_the_options_of_good_settings(place: Path) -> None:
    settings = parse_s3_settings(BASE)
    assert isinstance(settings, S3Settings)
    rendered = render_or_refuse(place, settings)
    assert rendered is not None
    path, text = rendered
    backup_options = options_pgbackrest_took(path)
    assert backup_options == {index_less(k) for k in rendered_keys(text)} & backup_options
    assert {
        o: current_value(path, o)
        for o in ("repo-s3-region", "repo-path", "repo-s3-bucket", "repo-s3-endpoint")
    } == {
        "repo-s3-region": "eu-west-3",
        "repo-path": "/prod/pg",
        "repo-s3-bucket": "backups",
        "repo-s3-endpoint": "s3.example.com",
    }
    assert current_value(path, "repo-storage-port") == "9000"
    assert current_value(path, "repo-retention-full") == "30"


HOSTILE = [
    ("region", "eu-west-3\x1crepo1-s3-verify-tls=n"),  # the first exploit
    ("path", "/prod/pg\x0brepo1-host=evil.example.com\x0bcmd-ssh={script}"),  # the second
    ("bucket", "backups\u2028repo1-s3-verify-tls=n"),
    ("secret-key", "s3cr3t\x85repo1-s3-verify-tls=n"),
    ("endpoint", "https://s3.example.com\x1d[it.validation]\x1dpg1-path=/tmp"),
    ("delete-older-than-days", "99999999"),  # accepted once, then every backup failed
]


@pytest.mark.parametrize(("field", "value"), HOSTILE, ids=[f for f, _ in HOSTILE])
def test_a_hostile_setting_is_refused_by_name_and_pgbackrest_never_sees_more(
    place: Path, field: str, value: str
) -> None:
    script, marker = place / "evil.sh", place / "evil-ran"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    value = value.format(script=script)

    result = parse_s3_settings({**BASE, field: value})
    assert isinstance(result, S3SettingsProblem), f"{field} accepted: {result}"
    assert [r.split(" ")[0] for r in result.invalid] == [field]
    if field == "secret-key":
        assert "s3cr3t" not in result.message()

    # Second line: the same value put straight into the settings, past the parser.
    good = parse_s3_settings(BASE)
    assert isinstance(good, S3Settings)
    attribute = {
        "region": "region",
        "path": "path",
        "bucket": "bucket",
        "secret-key": "secret_key",
        "endpoint": "endpoint",
    }.get(field)
    if attribute is None:
        return
    changed: dict[str, Any] = {attribute: value}
    rendered = render_or_refuse(place, replace(good, **changed))
    if rendered is None:
        return  # refused by the renderer: nothing to read
    path, _ = rendered
    # The options we meant are those of the good settings: one value changed, no key.
    meant = rendered_keys(render_config(config_for(place, good)))
    assert options_pgbackrest_took(path) <= {index_less(k) for k in meant}
    pgbackrest(path, "--log-level-file=off", "--io-timeout=1", "info")
    assert not marker.exists(), "pgbackrest info ran a script from the settings"
