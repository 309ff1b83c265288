"""The Juju agent's stand-in: ``ops.testing`` runs each event, on the unit's machine.

Juju cannot run here; what the charm sees of it is ``ops``'s backend, and ``ops.testing``
(Scenario) is that backend with the state handed in and out. :class:`Juju` plays the
controller and the unit agents around it:

- each event runs in a forked child that entered the unit's machine (its network and
  mount namespaces, :func:`machines.namespaces.call_in`), with the systemd stand-in as
  ``PgBackupsCharm.runner``; it runs ``ctx.run(event, state)`` and sends the output
  state back. Everything below the charm's handlers is the production code;
- the state is carried from one event to the next per unit (status, deferred events,
  stored state, workload version), and the relations are assembled the way Juju shows
  them to that unit: its own bags, the bags of the peers it has seen join, the leader's
  application bag, the application's secrets, the providers' application bags;
- a change to a bag is followed by the relation-changed events Juju would deliver (to
  the units that see that bag), and a change of our side of the S3 or TLS relation is
  shown to the scripted provider (:mod:`machines.providers`), whose answer is delivered
  the same way. :meth:`Juju.drain` runs them until nothing is left.

Hook errors are not retried here: in this scenario an uncaught exception is a bug, and
:class:`HookError` says which hook, with the charm's log.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ops import testing

from charm import PgBackupsCharm
from machines.namespaces import MachineCallError, Namespaces, call_in
from machines.systemd import MachineSystemd

log = logging.getLogger(__name__)

APP = "pgbackups-postgresql"
MODEL = testing.Model(name="machines", uuid="5c1e0a1e-0000-4000-8000-00000000c4a3")
PEERS = "database-peers"
S3 = "s3-parameters"
TLS = "certificates"
RELATION_IDS = {PEERS: 1, S3: 2, TLS: 3}
MAX_EVENTS_PER_DRAIN = 400

# An event as the parent describes it to the child: picklable, and turned into
# ``ctx.on.<kind>(...)`` there (see _event).
Event = tuple[Any, ...]


class HookError(RuntimeError):
    """A hook raised on a unit: the charm's bug, shown with the hook's log."""


class Machine(Protocol):
    """What the harness knows of a unit's machine (see :mod:`machines.world`)."""

    @property
    def namespaces(self) -> Namespaces: ...

    @property
    def address(self) -> str: ...

    @property
    def systemd_state(self) -> Path: ...

    @property
    def log_file(self) -> Path: ...


class Provider(Protocol):
    """A scripted remote application (s3-integrator, self-signed-certificates)."""

    app: str

    def answer(
        self, our_app_bag: Mapping[str, str], our_unit_bags: Mapping[int, Mapping[str, str]]
    ) -> dict[str, str]:
        """The provider's application bag, given what our side published."""
        ...


@dataclass(frozen=True)
class HookResult:
    state: testing.State
    results: dict[str, Any] | None
    failure: str | None
    logs: tuple[str, ...]


@dataclass
class Agent:
    """One unit's agent: what Juju keeps for it between events."""

    id: int
    machine: Machine
    # ops.testing's status (its own classes, which compare with testing.ActiveStatus...)
    status: Any = field(default_factory=testing.UnknownStatus)
    deferred: tuple[testing.DeferredEvent, ...] = ()
    stored: tuple[testing.StoredState, ...] = ()
    version: str = ""
    seen: set[int] = field(default_factory=set)  # peers whose relation-joined it ran
    # The secrets this unit owns (the tls-certificates library keeps the unit's private
    # key in one): Juju keeps them for the unit from one hook to the next.
    unit_secrets: dict[str, testing.Secret] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{APP}/{self.id}"


@dataclass
class ProviderRelation:
    """A relation to a scripted provider: our application bag (the leader's), our unit
    bags, and the provider's application bag."""

    endpoint: str
    provider: Provider
    app_bag: dict[str, str] = field(default_factory=dict)
    unit_bags: dict[int, dict[str, str]] = field(default_factory=dict)
    provider_bag: dict[str, str] = field(default_factory=dict)


def _event(ctx: testing.Context[PgBackupsCharm], state: testing.State, spec: Event) -> Any:
    kind = spec[0]
    if kind == "action":
        return ctx.on.action(spec[1], params=spec[2])
    if kind.startswith("relation_"):
        relation = state.get_relation(RELATION_IDS[spec[1]])
        if kind == "relation_departed":
            return ctx.on.relation_departed(relation, remote_unit=spec[2], departing_unit=spec[3])
        if kind in ("relation_joined", "relation_changed"):
            return getattr(ctx.on, kind)(relation, remote_unit=spec[2])
        return getattr(ctx.on, kind)(relation)
    return getattr(ctx.on, kind)()


def _run_hook(unit_id: int, state: testing.State, spec: Event) -> HookResult:
    """In the child, on the machine: one event through ops.testing into the charm."""
    ctx = testing.Context(PgBackupsCharm, app_name=APP, unit_id=unit_id)
    failure: str | None = None
    try:
        out = ctx.run(_event(ctx, state, spec), state)
    except testing.ActionFailed as exc:
        failure, out = exc.message, exc.state if exc.state is not None else state
    logs = tuple(f"{entry.level} {entry.message}" for entry in ctx.juju_log)
    return HookResult(out, ctx.action_results, failure, logs)


def _with_runner(state_dir: Path) -> Callable[[], None]:
    def prepare() -> None:
        # Only in the child: the parent's class is never changed.
        PgBackupsCharm.runner = MachineSystemd(state_dir)
        logging.getLogger().setLevel(logging.INFO)

    return prepare


class Juju:
    def __init__(self) -> None:
        self.agents: dict[int, Agent] = {}
        self.leader: int | None = None
        self.app_bag: dict[str, str] = {}
        self.unit_bags: dict[int, dict[str, str]] = {}
        self.secrets: dict[str, testing.Secret] = {}
        self.related: dict[str, ProviderRelation] = {}
        self.queue: collections.deque[tuple[int, Event]] = collections.deque()
        self.planned_units = 0
        self.history: list[str] = []

    # --- the state a unit sees -------------------------------------------------------

    def _network(self, agent: Agent) -> testing.Network:
        address = agent.machine.address
        return testing.Network(
            PEERS,
            bind_addresses=[testing.BindAddress([testing.Address(address)])],
            ingress_addresses=[address],
            egress_subnets=[f"{address}/32"],
        )

    def state_for(self, unit_id: int) -> testing.State:
        agent = self.agents[unit_id]
        relations: list[testing.RelationBase] = [
            testing.PeerRelation(
                PEERS,
                id=RELATION_IDS[PEERS],
                local_app_data=dict(self.app_bag),
                local_unit_data=dict(self.unit_bags[unit_id]),
                peers_data={v: dict(self.unit_bags[v]) for v in sorted(agent.seen)},
            )
        ]
        for endpoint, rel in self.related.items():
            relations.append(
                testing.Relation(
                    endpoint,
                    id=RELATION_IDS[endpoint],
                    remote_app_name=rel.provider.app,
                    local_app_data=dict(rel.app_bag),
                    local_unit_data=dict(rel.unit_bags.setdefault(unit_id, {})),
                    remote_app_data=dict(rel.provider_bag),
                    remote_units_data={0: {}},
                )
            )
        return testing.State(
            leader=unit_id == self.leader,
            relations=relations,
            networks={self._network(agent)},
            secrets=[*self.secrets.values(), *agent.unit_secrets.values()],
            planned_units=self.planned_units,
            model=MODEL,
            deferred=list(agent.deferred),
            stored_states=list(agent.stored),
            unit_status=agent.status,
            workload_version=agent.version,
        )

    # --- running events --------------------------------------------------------------

    def run(self, unit_id: int, spec: Event) -> HookResult:
        """One event on one unit (no follow-ups: see :meth:`fire`)."""
        agent = self.agents[unit_id]
        if spec[0] == "relation_joined" and spec[1] == PEERS:
            agent.seen.add(spec[2])
        state = self.state_for(unit_id)
        started = time.monotonic()
        try:
            result = call_in(
                agent.machine.namespaces,
                _run_hook,
                unit_id,
                state,
                spec,
                prepare=_with_runner(agent.machine.systemd_state),
            )
        except MachineCallError as exc:
            raise HookError(f"{agent.name} {spec}: {exc}") from None
        took = time.monotonic() - started
        self._write_log(agent, spec, result, took)
        self._absorb(unit_id, result.state)
        if spec[0] == "relation_departed" and spec[1] == PEERS:
            agent.seen.discard(spec[3])
        return result

    def _write_log(self, agent: Agent, spec: Event, result: HookResult, took: float) -> None:
        line = f"{agent.name} {spec[0]} {' '.join(map(str, spec[1:]))} ({took:.1f}s)"
        self.history.append(line)
        log.info("%s -> %s", line, result.state.unit_status)
        with agent.machine.log_file.open("a") as out:
            out.write(f"=== {line}: {result.state.unit_status}\n")
            for entry in result.logs:
                out.write(f"    {entry}\n")
            if result.failure is not None:
                out.write(f"    ACTION FAILED: {result.failure}\n")

    def _queue(self, unit_id: int, spec: Event) -> None:
        if (unit_id, spec) not in self.queue:
            self.queue.append((unit_id, spec))

    def _absorb(self, unit_id: int, out: testing.State) -> None:
        """Take the unit's output state in, and queue what Juju would deliver next."""
        agent = self.agents[unit_id]
        agent.status = out.unit_status
        agent.deferred = tuple(out.deferred)
        agent.stored = tuple(out.stored_states)
        agent.unit_secrets = {s.id: s for s in out.secrets if s.owner == "unit"}
        agent.version = out.workload_version
        peer = out.get_relation(RELATION_IDS[PEERS])
        bag: dict[str, str] = dict(peer.local_unit_data)
        if bag != self.unit_bags[unit_id]:
            self.unit_bags[unit_id] = bag
            for other in self.agents.values():
                if other.id != unit_id and unit_id in other.seen:
                    self._queue(other.id, ("relation_changed", PEERS, unit_id))
        if unit_id == self.leader:
            for secret in out.secrets:
                if secret.owner == "app":
                    self.secrets[secret.id] = secret
            app_bag: dict[str, str] = dict(peer.local_app_data)
            if app_bag != self.app_bag:
                self.app_bag = app_bag
                # To the units that see the leader (ops.testing wants a remote unit; a
                # unit that has not seen it join reads the bag at its joined/changed).
                for other in self.agents.values():
                    if other.id != unit_id and unit_id in other.seen:
                        self._queue(other.id, ("relation_changed", PEERS, unit_id))
        for endpoint, rel in self.related.items():
            relation = out.get_relation(RELATION_IDS[endpoint])
            changed = False
            if unit_id == self.leader and dict(relation.local_app_data) != rel.app_bag:
                rel.app_bag = dict(relation.local_app_data)
                changed = True
            if dict(relation.local_unit_data) != rel.unit_bags.get(unit_id):
                rel.unit_bags[unit_id] = dict(relation.local_unit_data)
                changed = True
            if changed:
                self._provider_answers(rel)

    def _provider_answers(self, rel: ProviderRelation) -> None:
        live = {u: b for u, b in rel.unit_bags.items() if u in self.agents}
        answer = rel.provider.answer(rel.app_bag, live)
        if answer != rel.provider_bag:
            rel.provider_bag = answer
            for agent in self.agents.values():
                self._queue(agent.id, ("relation_changed", rel.endpoint, 0))

    def drain(self) -> None:
        """Deliver the queued follow-up events, oldest first, until none is left."""
        delivered = 0
        while self.queue:
            unit_id, spec = self.queue.popleft()
            if unit_id not in self.agents:
                continue
            self.run(unit_id, spec)
            delivered += 1
            if delivered > MAX_EVENTS_PER_DRAIN:
                raise HookError(f"over {MAX_EVENTS_PER_DRAIN} follow-up events: a hook loop?")

    def fire(self, unit_id: int, spec: Event) -> HookResult:
        result = self.run(unit_id, spec)
        self.drain()
        return result

    def action(self, unit_id: int, name: str, **params: str) -> HookResult:
        return self.fire(unit_id, ("action", name, params))

    def update_status(self) -> None:
        """Juju's update-status on every unit (its interval, compressed)."""
        for unit_id in sorted(self.agents):
            self.fire(unit_id, ("update_status",))

    def settle(self, what: str, done: Callable[[], bool], *, timeout: float) -> None:
        """update-status rounds until ``done()``; TimeoutError (with the statuses) if not."""
        deadline = time.monotonic() + timeout
        while True:
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not after {timeout:g}s; {self.statuses()}")
            self.update_status()
            time.sleep(1.0)

    def statuses(self) -> dict[str, str]:
        return {a.name: f"{a.status.name}: {a.status.message}" for a in self.agents.values()}

    # --- the model's lifecycle --------------------------------------------------------

    def add_unit(self, unit_id: int, machine: Machine) -> None:
        """A unit on a new machine, through the hooks Juju runs on it (install, the
        relations it is born into, leader-elected if it is the first, config-changed,
        start), then the relation-joined/changed of it and its peers, both ways."""
        address = machine.address
        self.agents[unit_id] = Agent(unit_id, machine)
        self.unit_bags[unit_id] = {
            "ingress-address": address,
            "private-address": address,
            "egress-subnets": f"{address}/32",
        }
        self.planned_units = len(self.agents)
        self.fire(unit_id, ("install",))
        self.fire(unit_id, ("relation_created", PEERS))
        for endpoint in self.related:
            self.fire(unit_id, ("relation_created", endpoint))
        if self.leader is None:
            self.leader = unit_id
            self.fire(unit_id, ("leader_elected",))
        self.fire(unit_id, ("config_changed",))
        self.fire(unit_id, ("start",))
        for endpoint in self.related:
            self.fire(unit_id, ("relation_joined", endpoint, 0))
            self.fire(unit_id, ("relation_changed", endpoint, 0))
        # The units already there see the new one first: Juju runs both sides at once,
        # and this harness one hook at a time, so the order it picks is the one in which
        # the new unit's start (which waits for its member to run) finds its peers ready
        # for it (the primary's pg_hba admits it only once it saw it join).
        for other in sorted(self.agents):
            if other == unit_id:
                continue
            for a, b in ((other, unit_id), (unit_id, other)):
                self.fire(a, ("relation_joined", PEERS, b))
                self.fire(a, ("relation_changed", PEERS, b))

    def remove_unit(self, unit_id: int) -> None:
        """``juju remove-unit``: relation-departed on every side (the leaving unit sees
        itself depart), relation-broken and stop on the leaving unit, then it is gone."""
        leaving = self.agents[unit_id]
        self.planned_units = len(self.agents) - 1
        for other in sorted(self.agents):
            if other == unit_id:
                continue
            self.fire(unit_id, ("relation_departed", PEERS, other, unit_id))
            self.fire(other, ("relation_departed", PEERS, unit_id, unit_id))
        for endpoint in self.related:
            self.fire(unit_id, ("relation_departed", endpoint, 0, unit_id))
            self.fire(unit_id, ("relation_broken", endpoint))
        self.fire(unit_id, ("stop",))
        self.fire(unit_id, ("remove",))
        del self.agents[unit_id]
        del self.unit_bags[unit_id]
        for rel in self.related.values():
            rel.unit_bags.pop(unit_id, None)
        if self.leader == unit_id:
            self.leader = None
        log.info("%s removed", leaving.name)

    def elect(self, unit_id: int) -> None:
        """Leadership moves to ``unit_id``: it runs leader-elected."""
        self.leader = unit_id
        self.fire(unit_id, ("leader_elected",))

    def integrate(self, endpoint: str, provider: Provider) -> None:
        """``juju integrate``: relation-created, then joined and changed of the
        provider's unit, on every unit; the provider answers what our side writes."""
        self.related[endpoint] = ProviderRelation(endpoint, provider)
        for unit_id in sorted(self.agents):
            self.fire(unit_id, ("relation_created", endpoint))
        for unit_id in sorted(self.agents):
            self.fire(unit_id, ("relation_joined", endpoint, 0))
            self.fire(unit_id, ("relation_changed", endpoint, 0))
