"""The repository ownership rule
(docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository) and the cluster marker
object, on their own."""

from __future__ import annotations

import json

import pytest
from fakes import CLUSTER_ID, OTHER_SYSTEM_ID, STANZA, SYSTEM_ID, marker_body, stanza_info

from pgbackups.core.marker import (
    ClusterMarker,
    decode_marker,
    marker_key,
    object_key,
    ownership_problem,
)
from pgbackups.core.repository import StanzaInfo


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/", "pgbackups-cluster.json"),
        ("/pg", "pg/pgbackups-cluster.json"),
        ("/a/b/", "a/b/pgbackups-cluster.json"),
    ],
)
def test_marker_key_is_relative_to_the_bucket(path: str, key: str) -> None:
    assert marker_key(path) == key


def test_object_key() -> None:
    assert object_key("/", "backup/s/latest") == "backup/s/latest"
    assert object_key("/pg", "backup/s/latest") == "pg/backup/s/latest"


def test_marker_round_trip() -> None:
    marker = ClusterMarker(STANZA, CLUSTER_ID, SYSTEM_ID)
    assert decode_marker(marker.encode()) == marker
    assert json.loads(marker.encode()) == {
        "stanza": STANZA,
        "cluster_id": CLUSTER_ID,
        "system_identifier": SYSTEM_ID,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"stanza": "x"}',
        b'{"stanza": 1, "cluster_id": "c", "system_identifier": 1}',
        b"\xff",
    ],
)
def test_unreadable_markers(body: bytes) -> None:
    assert decode_marker(body) is None


def check(
    stanzas: list[StanzaInfo],
    body: bytes | None = None,
    system_id: int | None = SYSTEM_ID,
) -> tuple[bool, bool] | None:
    problem = ownership_problem(
        stanzas=stanzas,
        marker_body=body,
        stanza_name=STANZA,
        cluster_id=CLUSTER_ID,
        system_identifier=system_id,
    )
    return None if problem is None else (True, problem.foreign)


FOREIGN = (True, True)
UNVERIFIABLE = (True, False)


@pytest.mark.parametrize(
    ("stanzas", "body", "system_id", "expected"),
    [
        ([], None, SYSTEM_ID, None),
        ([], None, None, None),  # empty: nothing to compare
        ([stanza_info(status_code=1, system_ids=())], None, SYSTEM_ID, None),
        # A stanza without the marker is not ours: a restored copy looks the same.
        ([stanza_info()], None, SYSTEM_ID, FOREIGN),
        ([stanza_info()], marker_body(), SYSTEM_ID, None),
        ([], marker_body(), SYSTEM_ID, None),
        ([stanza_info("other.main")], None, SYSTEM_ID, FOREIGN),
        ([stanza_info(), stanza_info("other.main")], marker_body(), SYSTEM_ID, FOREIGN),
        ([stanza_info(system_ids=(OTHER_SYSTEM_ID,))], None, SYSTEM_ID, FOREIGN),
        ([stanza_info(system_ids=())], None, SYSTEM_ID, FOREIGN),
        ([stanza_info()], marker_body(cluster_id="c2"), SYSTEM_ID, FOREIGN),
        ([stanza_info()], marker_body(system_id=OTHER_SYSTEM_ID), SYSTEM_ID, FOREIGN),
        ([], marker_body(stanza="other.main"), SYSTEM_ID, FOREIGN),
        ([], b"model-uuid", SYSTEM_ID, FOREIGN),
        ([stanza_info()], None, None, UNVERIFIABLE),
        ([], marker_body(), None, UNVERIFIABLE),
        ([stanza_info("[invalid]", system_ids=())], None, SYSTEM_ID, UNVERIFIABLE),
    ],
    ids=[
        "empty",
        "empty-no-system-id",
        "stanza-path-missing",
        "own-stanza-no-marker",
        "own-stanza-own-marker",
        "own-marker-only",
        "other-stanza",
        "own-and-other-stanza",
        "own-stanza-other-system-id",
        "own-stanza-no-db",
        "marker-other-cluster",
        "marker-other-system-id",
        "marker-other-stanza",
        "marker-garbage",
        "system-id-unknown",
        "marker-but-system-id-unknown",
        "invalid-stanza",
    ],
)
def test_ownership_rule(
    stanzas: list[StanzaInfo],
    body: bytes | None,
    system_id: int | None,
    expected: tuple[bool, bool] | None,
) -> None:
    assert check(stanzas, body, system_id) == expected
