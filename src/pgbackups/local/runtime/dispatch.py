"""Delivering events to units of a local cluster, the way Juju does.

Before a unit's next event (and on every update-status) the events it deferred run
again, oldest first; one that defers again stays queued. Hooks end in ``Done`` or
``Deferred``; actions in results or a failure, which the caller prints. As under Juju,
a unit runs one event at a time (``PeerDataStore.unit_turn``): a second waits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from pgbackups.core.events import ACTIONS, HOOKS
from pgbackups.core.host import Host, WorkloadError
from pgbackups.core.outcomes import ActionFailed, Deferred, Outcome
from pgbackups.core.params import check_action_params
from pgbackups.local.runtime.peerdata import DeferredEvent, PeerDataStore

log = logging.getLogger(__name__)


class Dispatcher:
    """Runs hooks and actions on units; ``host_for(unit)`` builds a fresh Host per event."""

    def __init__(
        self,
        store: PeerDataStore,
        host_for: Callable[[str], Host],
        machine_of: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self._store = store
        self._host_for = host_for
        # Where a unit's events run: on its own machine (its network), as the charm's
        # hooks run on the unit's machine; by default here.
        self._machine_of = machine_of or (lambda _unit: contextlib.nullcontext())

    def fire(self, unit: str, event: str, params: Mapping[str, str] | None = None) -> Outcome:
        """Deliver hook ``event`` to ``unit`` after the unit's deferred events."""
        if event not in HOOKS:
            raise ValueError(f"unknown hook {event!r}; known: {', '.join(sorted(HOOKS))}")
        with self._store.unit_turn(unit), self._machine_of(unit):
            self._rerun_deferred(unit)
            return self._run_hook(unit, event, params or {})

    def run_action(self, unit: str, action: str, params: Mapping[str, str]) -> Outcome:
        if action not in ACTIONS:
            return ActionFailed(
                f"unknown action {action!r}; available: {', '.join(sorted(ACTIONS))}"
            )
        # Before anything runs, deferred events included: a bad parameter changes nothing.
        problem = check_action_params(action, params)
        if problem is not None:
            return ActionFailed(problem)
        with self._store.unit_turn(unit), self._machine_of(unit):
            self._rerun_deferred(unit)
            try:
                outcome = ACTIONS[action](self._host_for(unit), params)
            except WorkloadError as exc:
                # The workload's one way of failing (core/host.py): the action fails with
                # its reason, as the charm reports it, never a traceback.
                log.error("%s %s: %s", unit, action, exc)
                return ActionFailed(f"{action} failed: {exc}")
        log.info("%s %s -> %s", unit, action, type(outcome).__name__)
        return outcome

    def rerun_deferred(self, unit: str) -> None:
        """Run what ``unit`` deferred, oldest first; what defers again is queued again."""
        with self._store.unit_turn(unit):
            self._rerun_deferred(unit)

    def _rerun_deferred(self, unit: str) -> None:
        with self._machine_of(unit):
            for deferred in self._store.take_deferred(unit):
                log.info("%s: re-running deferred %s (%s)", unit, deferred.name, deferred.reason)
                self._run_hook(unit, deferred.name, deferred.params)

    def _run_hook(self, unit: str, event: str, params: Mapping[str, str]) -> Outcome:
        try:
            outcome: Outcome = HOOKS[event](self._host_for(unit))
        except WorkloadError as exc:
            # As the charm does: the hook is tried again before the unit's next event.
            outcome = Deferred(f"the workload failed: {exc}")
        if isinstance(outcome, Deferred):
            log.info("%s: %s deferred: %s", unit, event, outcome.reason)
            self._store.defer(unit, DeferredEvent(event, dict(params), outcome.reason))
        return outcome
