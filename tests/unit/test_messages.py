"""The message catalogue (docs/behaviour/messages.md): verbatim strings and the S3-block
recognition."""

from __future__ import annotations

import pytest

from pgbackups.core import messages as msg


def test_verbatim_catalogue() -> None:
    assert msg.INITIALISING_STANZA == "initialising stanza"
    assert msg.CHECKING_STANZA == "checking stanza"
    assert msg.CREATING_BACKUP == "creating backup"
    assert msg.RESTORING_BACKUP == "restoring backup"
    assert msg.FAILED_TO_ACCESS_CREATE_BUCKET == (
        "failed to access/create the bucket, check your S3 settings"
    )
    assert msg.ANOTHER_CLUSTER_REPOSITORY == "the S3 repository has backups from another cluster"
    assert msg.FAILED_TO_INITIALIZE_STANZA == "failed to initialize stanza, check your S3 settings"
    assert msg.FAILED_TO_RESTORE_BACKUP == "Failed to restore backup"
    assert msg.BACKUP_UNIT_BLOCKED == "Unit is in a blocking state"
    assert msg.S3_RELATION_MISSING == (
        "Relation with s3-integrator charm missing, cannot create backup."
    )
    assert msg.MISSING_BACKUP_ID == "Missing backup-id to restore"
    assert msg.FAILED_TO_LIST_BACKUPS == "Failed to list PostgreSQL backups with error"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(None, "m"), ("", "m"), ("  ", "m"), (" why ", "m: why")],
)
def test_with_reason(reason: str | None, expected: str) -> None:
    assert msg.with_reason("m", reason) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Failed to restore backup", True),
        ("Failed to restore backup: old data kept at /x", True),
        ("Failed to restore backups", False),
        ("Failed to restore backup:x", False),
        ("", False),
    ],
)
def test_has_prefix(text: str, expected: bool) -> None:
    assert msg.has_prefix(text, msg.FAILED_TO_RESTORE_BACKUP) is expected


@pytest.mark.parametrize("message", msg.S3_BLOCK_MESSAGES)
def test_s3_block_messages_with_and_without_reason(message: str) -> None:
    assert msg.is_s3_block_message(message)
    assert msg.is_s3_block_message(msg.with_reason(message, "ERROR: [039]: HTTP"))


@pytest.mark.parametrize(
    "text",
    [msg.FAILED_TO_RESTORE_BACKUP, msg.CANNOT_RESTORE_PITR, "failed to initialize stanza", ""],
)
def test_other_blocks_are_not_s3_blocks(text: str) -> None:
    assert not msg.is_s3_block_message(text)
