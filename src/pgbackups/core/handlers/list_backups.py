"""list-backups (docs/behaviour/list-backups.md): every stanza's backups and the timelines restores
created, as a table or JSON (:mod:`pgbackups.core.listing` builds the rows)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core.archive import ArchivedSegment, ArchiveListing
from pgbackups.core.handlers._steps import parse_settings
from pgbackups.core.handlers._wal import own_archive
from pgbackups.core.host import BackupToolError, Host, ObjectStoreError
from pgbackups.core.listing import FORMATS, build_rows, format_json, format_table
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.repository import StanzaInfo, TimelineRecord
from pgbackups.core.settings import S3Settings, S3SettingsProblem
from pgbackups.core.verification import Verified, decode, verify_key

log = logging.getLogger(__name__)


def on_list_backups(host: Host, params: Mapping[str, str]) -> Outcome:
    output = (params.get("format") or "table").strip()
    if output not in FORMATS:
        return ActionFailed(f"Invalid format: {output}. Possible values: {', '.join(FORMATS)}.")
    settings = parse_settings(host.s3_parameters())
    if settings is None:
        return ActionFailed(msg.S3_RELATION_MISSING_LIST)
    if isinstance(settings, S3SettingsProblem):
        return ActionFailed(settings.message())
    try:
        # The own archive is listed while info runs (the two longest calls here).
        stanzas, own = host.backup_tool.info_and_archive(host.stanza_name)
        timelines, own_segments = _timelines_and_own_archive(host, stanzas, own)
    except BackupToolError as exc:
        log.error("list-backups: %s", exc)
        return ActionFailed(msg.with_reason(msg.FAILED_TO_LIST_BACKUPS, str(exc)))
    checked = _verified(host, settings)
    rows = build_rows(stanzas, timelines, checked)
    holes, reach = own_archive(host, stanzas, timelines, own_segments)
    if output == "json":
        text = format_json(rows)
    else:
        text = format_table(settings.bucket, settings.path, rows)
        if reach:
            text += "\n\nRecoverable window (restore-to-time reaches, per timeline):\n" + "\n".join(
                f"  {window.describe()}" for window in reach
            )
        if holes:
            text += "\n\nWAL archive gaps (no restore replays past them):\n" + "\n".join(
                f"  {problem.describe()}" for problem in holes
            )
    results = {msg.RESULT_BACKUPS: text}
    if reach:
        results[msg.RESULT_RECOVERABLE_WINDOW] = json.dumps([w.as_dict() for w in reach])
    if holes:  # beside the rows, so the JSON list of rows keeps its shape for scripts
        results[msg.RESULT_ARCHIVE_GAPS] = json.dumps(
            [{"segment": p.segment, "problem": p.kind} for p in holes]
        )
    return ActionResults(results)


def _verified(host: Host, settings: S3Settings) -> dict[str, dict[str, Verified]]:
    """The verify action's record (core/verification.py); {} when there is none or it
    cannot be read (logged: listing the backups is this action's job)."""
    try:
        return decode(host.object_store(settings).get(verify_key(settings.path)))
    except ObjectStoreError as exc:
        log.warning("The verification record could not be read: %s", exc)
        return {}


def _timelines_and_own_archive(
    host: Host, stanzas: list[StanzaInfo], own: ArchiveListing | None
) -> tuple[list[TimelineRecord], tuple[ArchivedSegment, ...]]:
    """The timelines restores created, of every stanza that exists (as
    ``restore_timelines`` reads them), and this cluster's WAL segments for the gap
    check: its stanza's from ``own``, the one listing of its archive, which gives both
    (a month of WAL is tens of thousands of objects, listed once instead of twice).
    Raises BackupToolError."""
    timelines: list[TimelineRecord] = []
    segments: tuple[ArchivedSegment, ...] = ()
    for stanza in stanzas:
        if not stanza.exists:
            continue
        if stanza.name == host.stanza_name and own is not None:
            timelines += own.timelines
            segments = own.segments
        else:
            timelines += host.backup_tool.timelines(stanza.name)
    return timelines, segments
