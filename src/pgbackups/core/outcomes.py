"""What a handler returns; the host turns it into ``event.defer()``, ``event.set_results()``,
``event.fail()`` or their local twins (``Done``: nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    """The hook ran to its end."""


@dataclass(frozen=True)
class Deferred:
    """Run this hook again before the unit's next event (and on the next update-status)."""

    reason: str


@dataclass(frozen=True)
class ActionResults:
    results: Mapping[str, str]


@dataclass(frozen=True)
class ActionFailed:
    message: str


Outcome = Done | Deferred | ActionResults | ActionFailed
