"""pg_controldata parsing."""

from __future__ import annotations

from pgbackups.adapters.postgres import parse_controldata_system_id

CONTROLDATA = """\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7713227888885071459
Database cluster state:               in production
Latest checkpoint's TimeLineID:       10
"""


def test_system_identifier() -> None:
    assert parse_controldata_system_id(CONTROLDATA) == 7713227888885071459


def test_no_identifier() -> None:
    assert parse_controldata_system_id("pg_controldata: error: could not open file") is None
