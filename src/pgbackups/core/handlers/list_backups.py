"""list-backups (SPEC §4): every stanza's backups and the timelines restores created, as a
table or JSON (:mod:`pgbackups.core.listing` builds the rows)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pgbackups.core import messages as msg
from pgbackups.core.handlers._steps import parse_settings, restore_timelines
from pgbackups.core.host import BackupToolError, Host
from pgbackups.core.listing import FORMATS, build_rows, format_json, format_table
from pgbackups.core.outcomes import ActionFailed, ActionResults, Outcome
from pgbackups.core.settings import S3SettingsProblem

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
        stanzas = host.backup_tool.info()
        timelines = restore_timelines(host, stanzas)
    except BackupToolError as exc:
        log.error("list-backups: %s", exc)
        return ActionFailed(msg.with_reason(msg.FAILED_TO_LIST_BACKUPS, str(exc)))
    rows = build_rows(stanzas, timelines)
    if output == "json":
        text = format_json(rows)
    else:
        text = format_table(settings.bucket, settings.path, rows)
    return ActionResults({msg.RESULT_BACKUPS: text})
