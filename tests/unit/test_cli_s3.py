"""``pgbackups s3 set``: options refused before anything is read or written."""

from __future__ import annotations

import argparse

import pytest

from pgbackups.local.cli import s3
from pgbackups.local.errors import UsageError


def parsed_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    s3.register(parser.add_subparsers())
    return parser.parse_args(["s3", "set", *argv])


@pytest.mark.parametrize(
    "option", ["--endpoint", "--bucket", "--region", "--path", "--access-key", "--ca-file"]
)
def test_an_empty_option_is_refused_with_exit_2(option: str) -> None:
    with pytest.raises(UsageError, match=f"{option} is empty") as caught:
        s3.refuse_empty_options(parsed_args(option, ""))
    assert caught.value.exit_code == 2


def test_days_reach_the_settings_check_as_typed() -> None:
    # int() would have turned "+5" and a full-width 5 into 5 before any check saw them.
    assert parsed_args("--delete-older-than-days", "+5").delete_older_than_days == "+5"
    s3.refuse_empty_options(parsed_args("--endpoint", "https://s3.example.com"))


def test_no_encryption_and_a_passphrase_exclude_each_other() -> None:
    args = parsed_args("--no-encryption", "--encryption-passphrase-file", "/p")
    with pytest.raises(UsageError, match="exclude each other"):
        s3.refuse_empty_options(args)
    with pytest.raises(UsageError, match="--encryption-passphrase-file is empty"):
        s3.refuse_empty_options(parsed_args("--encryption-passphrase-file", ""))
