"""The active coordinator's side of clusters: definitions, forming, membership orders.

The pure parts are :mod:`robeing.protocol.clusters`; this host keeps the
:class:`~robeing.protocol.clusters.ClusterDirectory`, durable in the stream
``robeing.coordinator.clusters`` (signed records, folded in order by every
coordinator that becomes active, so definitions survive a failover and a
broker restart), answers the ``cluster.*`` questions that reach the
coordinator's task queue, and sends membership orders.

Invariants:
    * A change is answered as done only after its record was confirmed into
      the stream; a refused change writes nothing and moves nobody.
    * Only records signed by a coordinator are folded; any other record is
      counted (``invalid_records``) and skipped.
    * Agents converge on the directory: a heartbeat announcing another
      cluster than the directory assigns the sender brings it an order (at
      most one per agent per :data:`REORDER_S`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ....broker import topology as topo
from ....protocol.clusters import (
    DEFAULT_CLUSTER,
    ORDER_TYPE,
    RECORD_TYPE,
    ClusterDirectory,
    ClusterRecord,
    FormRefused,
    LeaderScore,
    MembershipOrder,
    MemberView,
    choose_leader,
    choose_members,
    member_view,
    score_members,
)
from ....protocol.clusters.names import cluster_name_problem
from ....protocol.clusters.summary import TermBook
from ....protocol.coordinator import CoordinatorState, Event
from ....protocol.envelope import Envelope
from ....protocol.errors import DecodeError, ProtocolError
from ....protocol.fields import count, need, strings, text
from ....protocol.heartbeat import Heartbeat
from ...context import AgentContext, Message
from .pool import PoolHost
from .summaries import Summaries

log = logging.getLogger(__name__)

REORDER_S = 2.0  # an agent that keeps announcing the wrong cluster is ordered this often
ELECT_S = 1.0  # how often the leaders of named clusters are recomputed
MAX_VIEWS = 100_000  # members remembered for scoring
MAX_SHOWN = 1000  # members listed by `cluster show`


class ClusterHost:
    """Keeps the directory for the active coordinator and answers ``cluster.*``."""

    def __init__(
        self,
        agent: AgentContext,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        feed: Callable[[Event], None] = lambda _e: None,
    ) -> None:
        self.agent = agent
        self._spawn = spawn
        self.directory = ClusterDirectory()
        self.invalid_records = 0
        self.state: CoordinatorState | None = None
        self._ordered: dict[str, float] = {}  # agent -> when we last ordered it
        self.views: dict[str, MemberView] = {}  # agent -> its latest heartbeat, for scoring
        self._started: dict[str, tuple[float, int]] = {}  # agent -> (started_at, restarts)
        self.leaders: dict[str, str] = {}  # named cluster -> the member the score designates
        self.pool = PoolHost(self.live_members)  # the pools of the clusters, and leases
        self._next_election = 0.0
        self.terms = TermBook()  # the leaders' terms, from their summaries
        self.summaries = Summaries(agent, self, feed, spawn)

    def handlers(self) -> dict[str, Any]:
        """The questions this host and its pool answer, by message type."""
        return {
            **self.pool.handlers(),
            "cluster.form": self.on_form,
            "cluster.dissolve": self.on_dissolve,
            "cluster.leave": self.on_leave,
            "cluster.list": self.on_list,
            "cluster.show": self.on_show,
        }

    async def load(self, state: CoordinatorState) -> None:
        """Fold every stored record (declaring the stream if nobody has yet)."""
        self.state = state
        await self.agent.broker.declare_queue(topo.clusters_spec())

        def on_body(body: bytes) -> None:
            try:
                opened = self.agent.open_stored(body)
                if opened.envelope.type != RECORD_TYPE or opened.certificate.role != "coordinator":
                    raise DecodeError("not a coordinator's cluster record")
                self.directory.apply(ClusterRecord.from_data(opened.envelope.payload))
            except ProtocolError as exc:
                self.invalid_records += 1
                log.warning("ignoring a cluster record: %s", exc)

        read = await self.agent.broker.read_stream(topo.clusters_spec(), "first", on_body)
        self.pool.start(state)
        log.info(
            "loaded %d cluster record(s): %d cluster(s) defined",
            read,
            len(self.directory.clusters),
        )

    # -- membership orders ---------------------------------------------------------

    def on_heartbeat(self, sender: str, beat: Heartbeat, direct: bool = True) -> None:
        """Order an agent that announces another cluster than the directory's back in line.

        ``direct``: we heard the agent's own heartbeat (not a leader's summary of it).
        """
        if self.state is None or beat.role == "coordinator":
            return
        if direct and beat.cluster_id != DEFAULT_CLUSTER:
            # A named cluster's member heard directly: its cluster has no live leader.
            self.state.counters["member_heartbeats_direct"] += 1
        self._observe(sender, beat)
        if beat.state != "alive":
            return
        wanted = self.directory.cluster_of(sender, beat.cluster_id)
        if wanted == beat.cluster_id:
            self._ordered.pop(sender, None)
            return
        now = time.monotonic()
        if now - self._ordered.get(sender, -REORDER_S) < REORDER_S:
            return
        self._ordered[sender] = now
        self._spawn(self._order(sender, wanted))

    def _observe(self, sender: str, beat: Heartbeat) -> None:
        """Keep the sender's view for leader scores, counting the restarts we see."""
        started, restarts = self._started.get(sender, (beat.started_at, 0))
        if beat.started_at > started:
            restarts += 1
        if sender in self._started or len(self._started) < MAX_VIEWS:
            self._started[sender] = (max(started, beat.started_at), restarts)
            self.views[sender] = member_view(sender, beat, restarts)

    def tick(self) -> None:
        """Recompute each named cluster's leader (about once a :data:`ELECT_S`); sweep leases."""
        self.pool.tick()
        now = time.monotonic()
        if self.state is None or now < self._next_election:
            return
        self._next_election = now + ELECT_S
        for name in self._names():
            # The member holding the lead is the sitting one, so the designation
            # agrees with the lock while it lives (and the margin keeps it).
            held = self.summaries.holder(name)
            sitting = held[1] if held is not None else self.leaders.get(name)
            leader = choose_leader(self._scores(name), sitting)
            if leader != self.leaders.get(name):
                log.info("cluster %s: candidate %s (was %s)", name, leader, self.leaders.get(name))
            if leader is None:
                self.leaders.pop(name, None)
            else:
                self.leaders[name] = leader
        self.summaries.tick()

    def live_members(self, name: str) -> set[str]:
        """The live agents the coordinator schedules on that are in cluster ``name`` now."""
        announced = self._announced()
        return {a for a, c in announced.items() if self.directory.cluster_of(a, c) == name}

    def scores(self, name: str) -> dict[str, LeaderScore]:
        """The leader score of each live member of ``name``."""
        return self._scores(name)

    def names(self) -> list[str]:
        """The named clusters (defined or announced)."""
        return self._names()

    def _scores(self, name: str) -> dict[str, LeaderScore]:
        ids = sorted(self.live_members(name))
        return score_members(self.views[a] for a in ids if a in self.views)

    async def _order(self, agent_id: str, cluster: str) -> None:
        assert self.state is not None
        order = MembershipOrder(cluster, self.state.epoch, self.directory.applied)
        try:
            await self.agent.send(agent_id, ORDER_TYPE, order.to_data(), priority=8)
        except Exception as exc:  # its next heartbeat brings another order
            log.warning("could not order %s into cluster %s: %s", agent_id, cluster, exc)

    # -- changes -------------------------------------------------------------------

    async def _record(self, record: ClusterRecord) -> None:
        """Store ``record`` (confirmed), fold it in, and order the agents it moves."""
        before = dict(self.directory.assigned)
        body = self.agent.seal(Envelope(RECORD_TYPE, record.to_data()), False)
        await self.agent.broker.publish("", topo.CLUSTERS_STREAM, body)
        self.directory.apply(record)
        for agent_id, cluster in self.directory.assigned.items():
            if before.get(agent_id) != cluster:
                self._ordered[agent_id] = time.monotonic()
                await self._order(agent_id, cluster)

    def _announced(self) -> dict[str, str]:
        assert self.state is not None
        return {a.id: a.cluster_id or DEFAULT_CLUSTER for a in self.state.fleet.registry}

    async def on_form(self, msg: Message) -> dict[str, Any]:
        """``cluster.form {name, purpose, skills, size}``: choose members, store, order them."""
        assert self.state is not None
        data = msg.payload
        name = text(need(data, "name", str), "name", 200)
        purpose = text(need(data, "purpose", str, ""), "purpose", 500)
        skills = strings(need(data, "skills", list, []), "skills", max_items=64, max_len=128)
        size = count(need(data, "size", int), "size", low=None)
        perf = self.state.perf
        try:
            members = choose_members(
                name,
                skills,
                size,
                list(self.state.fleet.registry),
                self.directory,
                self._announced(),
                lambda a: perf.score(a),
            )
        except FormRefused as exc:
            return {"error": str(exc)}
        record = ClusterRecord("form", name, time.time(), msg.sender, purpose, skills, members)
        await self._record(record)
        log.warning("formed cluster %s of %s for %s", name, ", ".join(members), msg.sender)
        return {"cluster": self.directory.clusters[name].to_data()}

    async def on_dissolve(self, msg: Message) -> dict[str, Any]:
        """``cluster.dissolve {name}``: its members return to the default cluster."""
        name = text(need(msg.payload, "name", str), "name", 200)
        if name not in self.directory.clusters:
            return {"error": self._unknown(name)}
        members = self.directory.clusters[name].members
        await self._record(ClusterRecord("dissolve", name, time.time(), msg.sender))
        return {"dissolved": name, "members": list(members)}

    async def on_leave(self, msg: Message) -> dict[str, Any]:
        """``cluster.leave {agent}``: the agent returns to the default cluster."""
        agent_id = text(need(msg.payload, "agent", str), "agent", 128)
        named = [c.name for c in self.directory.clusters.values() if agent_id in c.members]
        if not named:
            announced = self._announced().get(agent_id)
            if announced and announced != DEFAULT_CLUSTER:
                return {"error": f"{agent_id} is in cluster {announced} by its own CLUSTER_ID; "
                                 "restart it without one to leave"}  # fmt: skip
            return {"error": f"{agent_id} is in no named cluster formed by `robeing cluster form`"}
        record = ClusterRecord("leave", named[0], time.time(), msg.sender, agent=agent_id)
        await self._record(record)
        return {"left": named[0], "agent": agent_id}

    def on_list(self, msg: Message) -> dict[str, Any]:
        """``cluster.list``: every named cluster with its size and live members."""
        return {"clusters": [self._describe(n, brief=True) for n in self._names()]}

    def on_show(self, msg: Message) -> dict[str, Any]:
        """``cluster.show {name}``: a cluster's definition and members with their health."""
        name = text(need(msg.payload, "name", str), "name", 200)
        if name != DEFAULT_CLUSTER and name not in self._names():
            return {"error": self._unknown(name)}
        return {"cluster": self._describe(name)}

    # -- reading -------------------------------------------------------------------

    def _names(self) -> list[str]:
        return self.directory.names(self._announced())

    def _unknown(self, name: str) -> str:
        if (problem := cluster_name_problem(name)) is not None:
            return problem
        known = ", ".join(self._names()) or "none"
        return f"no cluster named {name!r}; named clusters: {known}"

    def _leadership(self, name: str) -> dict[str, Any]:
        """Who leads ``name`` (the lock's holder, by its last summary), in which term,
        and whom the score designates."""
        if name == DEFAULT_CLUSTER:
            return {"leader": self.agent.id, "term": self.state.epoch if self.state else None}
        held = self.summaries.holder(name)
        return {
            "leader": held[1] if held else None,
            "term": held[0] if held else None,
            "candidate": self.leaders.get(name),
        }

    def _describe(self, name: str, brief: bool = False) -> dict[str, Any]:
        assert self.state is not None
        announced = self._announced()
        live = sorted(a for a, c in announced.items() if self.directory.cluster_of(a, c) == name)
        defined = self.directory.clusters.get(name)
        kind = "formed" if defined else "static"
        out: dict[str, Any] = {
            "name": name,
            "kind": "coordinator" if name == DEFAULT_CLUSTER else kind,
            "purpose": defined.purpose if defined else "",
            "skills": list(defined.skills) if defined else [],
            "members": len(defined.members) if defined else len(live),
            "live": len(live),
            **self._leadership(name),
        }
        if brief:
            return out
        scores = self._scores(name) if name != DEFAULT_CLUSTER else {}
        health = self.state.fleet.health_report(time.time(), limit=100_000)
        ids = sorted(set(defined.members) | set(live)) if defined else live
        out["formed_by"] = defined.formed_by if defined else None
        out["formed_at"] = defined.formed_at if defined else None
        out["member_list"] = [
            {
                "id": a,
                "health": health.get(a, "unknown"),
                "joined": a in live,
                **({"score": scores[a].to_data()} if a in scores else {}),
            }
            for a in ids[:MAX_SHOWN]
        ]
        return out
