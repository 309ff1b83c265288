"""Action parameters: one allow-list per action, before anything runs (core/params.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pgbackups.core import messages as msg
from pgbackups.core import targets
from pgbackups.core.params import ACTION_PARAMS, BACKUP_TYPES, check_action_params
from pgbackups.local.cli.run import parse_params
from pgbackups.local.errors import UsageError


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("create-backup", {}),
        ("create-backup", {"type": "full"}),
        ("create-backup", {"type": " incremental "}),
        ("list-backups", {"format": "json"}),
        ("restore", {"backup-id": "2026-11-28T14:39:26Z"}),
        ("restore", {"backup-id": "20261128-143926F_20261128-150000I"}),
        ("restore", {"restore-to-time": "latest"}),
        ("restore", {"restore-to-time": "2026-11-28 14:00:00+02:00"}),
        ("restore", {"backup-id": "20261128-143926F", "restore-to-time": "LATEST"}),
        ("rollback-restore", {}),
    ],
)
def test_accepted(action: str, params: dict[str, str]) -> None:
    assert check_action_params(action, params) is None


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        # An empty value is "nothing", not "absent": it once ran an unasked-for restore.
        (
            "restore",
            {"backup-id": "20261128-143926F", "restore-to-time": ""},
            "restore-to-time is empty",
        ),
        ("restore", {"backup-id": " ", "restore-to-time": "latest"}, "backup-id is empty"),
        ("restore", {}, msg.MISSING_RESTORE_TARGET),
        ("restore", {"backup-id": "yesterday"}, f"{msg.INVALID_BACKUP_ID}: yesterday"),
        ("restore", {"restore-to-time": "soon"}, targets.BAD_FORMAT),
        ("restore", {"restore-to-time": "2026-11-28 14:00:00\n"}, "must be printable ASCII"),
        ("restore", {"backup-id": "\u0662" * 8 + "-143926F"}, "must be printable ASCII"),
        ("restore", {"type": "full"}, "restore has no parameter 'type'"),
        ("create-backup", {"type": ""}, "type is empty"),
        ("create-backup", {"type": "FULL"}, f"{msg.INVALID_BACKUP_TYPE}: FULL. Possible values"),
        ("create-backup", {"type": "diff"}, "Possible values: full, differential, incremental."),
        ("create-backup", {"type": "full\x1c"}, "must be printable ASCII"),
        ("create-backup", {"type": "f" * 65}, "at most 64 characters"),
        ("list-backups", {"format": "yaml"}, "Invalid format: yaml. Possible values: table, json."),
        ("list-backups", {"format": ""}, "format is empty"),
        ("rollback-restore", {"force": "yes"}, "it accepts: none"),
        ("drop-database", {}, "unknown action 'drop-database'"),
    ],
)
def test_refused(action: str, params: dict[str, str], message: str) -> None:
    problem = check_action_params(action, params)
    assert problem is not None
    assert message in problem


def test_the_cli_parses_keys_and_leaves_values_to_the_action_check() -> None:
    # A key given twice is a usage error (exit 2); a refused value is the action's failure
    # (exit 1, as `juju run` reports it): `pgbackups run` checks it before it locks the
    # cluster (tests/e2e/test_hooks.py, test_solo_bad_parameters_are_usage_errors).
    with pytest.raises(UsageError, match="given twice") as caught:
        parse_params("create-backup", ["type=full", "type=incremental"])
    assert caught.value.exit_code == 2
    empty = parse_params("restore", ["backup-id=2026-11-28T14:39:26Z", "restore-to-time="])
    assert check_action_params("restore", empty) == (
        "restore-to-time is empty: give a value or leave the parameter out"
    )
    assert parse_params("create-backup", ["type=differential"]) == {"type": "differential"}


KEYS = st.one_of(st.sampled_from([k for keys in ACTION_PARAMS.values() for k in keys]), st.text())
VALUES = st.one_of(
    st.text(),
    st.sampled_from([*BACKUP_TYPES, "table", "json", "latest", "", " ", "2026-11-28T14:39:26Z"]),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S%z")),
    st.from_regex(r"\d{8}-\d{6}[FDI]", fullmatch=True),
)


@given(
    st.sampled_from([*ACTION_PARAMS, "unknown"]),
    st.dictionaries(KEYS, VALUES, max_size=3),
)
@example("restore", {"backup-id": "20261128-143926F", "restore-to-time": ""})
def test_any_parameters_are_a_one_line_refusal_or_a_form_the_handler_takes(
    action: str, params: dict[str, str]
) -> None:
    problem = check_action_params(action, params)
    if problem is not None:
        assert problem.strip() and "\n" not in problem
        assert all(c.isprintable() for c in problem)
        return
    # Accepted: every value is a non-empty printable value the handlers' parsing takes.
    assert all(v.strip() and re.fullmatch(r"[ -~]+", v) for v in params.values())
    if action == "restore":
        now = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # form only, not the future
        request = targets.parse_request(
            params.get("backup-id", ""), params.get("restore-to-time", ""), now
        )
        assert isinstance(request, targets.Request)
