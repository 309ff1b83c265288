"""The cluster marker object and the repository ownership rule
(docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository).

Two clusters must never write into one repository. Before archiving is switched on, the
repository must be empty or belong to this cluster: the stanza name, the PostgreSQL
system identifier recorded in the stanza, and the cluster marker object
``<path>/pgbackups-cluster.json`` must all match.

The rule itself is pure (:func:`ownership_problem`); the handlers fetch what it needs
(``pgbackrest info``, the marker, the local system identifier) and act on its answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pgbackups.core.repository import StanzaInfo

MARKER_NAME = "pgbackups-cluster.json"
# pgBackRest names a stanza it cannot read "[invalid]" (e.g. GCS without a region).
INVALID_STANZA_NAME = "[invalid]"


@dataclass(frozen=True)
class ClusterMarker:
    stanza: str
    cluster_id: str
    system_identifier: int

    def encode(self) -> bytes:
        body = {
            "stanza": self.stanza,
            "cluster_id": self.cluster_id,
            "system_identifier": self.system_identifier,
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def object_key(repository_path: str, relative: str) -> str:
    """``<path>/<relative>`` as an S3 key: relative to the bucket, no leading ``/``."""
    prefix = repository_path.strip("/")
    return f"{prefix}/{relative}" if prefix else relative


def marker_key(repository_path: str) -> str:
    return object_key(repository_path, MARKER_NAME)


def enclosing_paths(repository_path: str) -> list[str]:
    """The paths a repository at ``repository_path`` would be nested in, nearest first:
    ``/a/b/c`` → ``/a/b``, ``/a``, ``/``. A repository there (its marker) makes this
    path part of another cluster's repository."""
    parts = [p for p in repository_path.strip("/").split("/") if p]
    return ["/" + "/".join(parts[:n]) for n in range(len(parts) - 1, -1, -1)] if parts else []


def decode_marker(body: bytes) -> ClusterMarker | None:
    """The marker in ``body``; None when it is not a marker we can read."""
    try:
        data = json.loads(body.decode())
        if not isinstance(data, dict):
            return None
        stanza, cluster_id, system_id = (
            data["stanza"],
            data["cluster_id"],
            data["system_identifier"],
        )
        if not isinstance(stanza, str) or not isinstance(cluster_id, str):
            return None
        return ClusterMarker(stanza, cluster_id, int(system_id))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class OwnershipProblem:
    """Why the repository cannot be used. ``foreign``: it belongs to another cluster
    (Blocked ANOTHER_CLUSTER_REPOSITORY); otherwise it could not be read or verified."""

    reason: str
    foreign: bool = True


def ownership_problem(
    *,
    stanzas: Sequence[StanzaInfo],
    marker_body: bytes | None,
    stanza_name: str,
    cluster_id: str,
    system_identifier: int | None,
) -> OwnershipProblem | None:
    """None when the repository is empty or ours
    (docs/behaviour/s3-credentials.md#two-clusters-never-share-one-repository).

    - absent marker and no stanza: an empty repository, ours to take;
    - a stanza but no marker: not ours to take. The marker is written before archiving
      ever starts, so only another writer leaves a stanza without one — and a restored
      copy of this cluster has the very same stanza name and system identifier, so the
      stanza alone cannot tell the two apart;
    - any other stanza, our stanza with another system identifier (or none recorded), or
      a marker that does not name this stanza, cluster and system identifier: foreign.
    """
    existing = [s for s in stanzas if s.exists]
    for stanza in existing:
        if stanza.name == INVALID_STANZA_NAME:
            return OwnershipProblem(
                f"pgBackRest cannot read the repository: {stanza.status_message}".strip(),
                foreign=False,
            )
    needs_system_id = bool(existing) or marker_body is not None
    if needs_system_id and system_identifier is None:
        return OwnershipProblem(
            "the PostgreSQL system identifier cannot be read to verify the repository",
            foreign=False,
        )
    for stanza in existing:
        if stanza.name != stanza_name:
            return OwnershipProblem(f"stanza {stanza.name!r} is not this cluster's")
        if system_identifier not in stanza.system_ids:
            recorded = ", ".join(str(i) for i in stanza.system_ids) or "none"
            return OwnershipProblem(
                f"stanza {stanza.name!r} records system identifier {recorded}, "
                f"this cluster is {system_identifier}"
            )
    if marker_body is None:
        if existing:
            return OwnershipProblem(
                f"stanza {existing[0].name!r} is there without the cluster marker {MARKER_NAME}"
            )
        return None
    marker = decode_marker(marker_body)
    if marker is None:
        return OwnershipProblem(f"the cluster marker {MARKER_NAME} cannot be read")
    expected = ClusterMarker(stanza_name, cluster_id, system_identifier or 0)
    if marker != expected:
        return OwnershipProblem(
            f"the cluster marker names stanza {marker.stanza!r}, cluster {marker.cluster_id!r}, "
            f"system identifier {marker.system_identifier}"
        )
    return None
