"""Leading a named cluster: one leader per term, its members' heartbeats, its summaries.

Every agent that takes work (not a coordinator) installs this. Wire contract:
:mod:`robeing.protocol.clusters.summary`.

Who tries the lock. Members hear nothing of each other (their heartbeats go
to the leader), so the one observer that can score every member between
terms is the coordinator: it computes the original weighted score
(:mod:`robeing.protocol.clusters.leaders`, the same pure function and the
same margin every observer uses) and, while a cluster has no live leader,
sends the member it elects a ``cluster.elect`` nudge (at once when the
leader's connection closes, then once a second). Only the nudged member
tries the lock; if it loses (the lock is held: the old leader lives, or
another claimant won), it yields and does nothing. The nudge grants nothing
(it only saves every member from polling the lock, which at 10,000 agents
would be thousands of refused declarations a second); the lock and the term
do the arbitration. A coordinator with a stale view can only nudge a worse
candidate, never make two leaders.

Invariants:
    * At most one leader acts per cluster at a time: acting (consuming
      ``member.<c>.#``, publishing summaries) starts only after
      :meth:`BrokerOps.try_exclusive` of ``robeing.cluster.<c>.lock``
      succeeded, and stops as soon as the connection that holds it is lost
      (the broker drops the lock with it) or the agent leaves the cluster
      (the lock is released first).
    * Each leadership has its own term from
      :func:`robeing.agents.epochs.next_epoch` on ``robeing.cluster.<c>.term``
      (taken while holding the lock), so terms of one cluster strictly grow
      with each leadership; every summary and announcement carries it, and
      the coordinator and members refuse older terms (``stale_epoch``).
    * A sitting leader is never deposed by score: a better candidate takes
      over only through the lock, i.e. once the sitting leader is gone. The
      coordinator designates a new candidate with the sitting one as
      ``sitting`` and the margin of :func:`choose_leader`, so a live leader's
      designation does not flap either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from ..broker import topology as topo
from ..broker.base import Consumer
from ..protocol.clusters.names import DEFAULT_CLUSTER
from ..protocol.clusters.summary import MAX_MEMBERS, SUMMARY_TYPE, MemberEntry, summarise
from ..protocol.coordinator.fleet import FleetView
from ..protocol.election import EpochFence, StaleEpoch
from ..protocol.envelope import Envelope
from ..protocol.errors import DecodeError, Unroutable
from ..protocol.fields import count, need, text
from ..protocol.heartbeat import Heartbeat
from ..protocol.performance import PerformanceTracker
from ..protocol.records import MAX_EPOCH
from . import epochs
from .context import AgentContext, Handler, Message

log = logging.getLogger(__name__)

__all__ = ["ELECT_TYPE", "TERM_TYPE", "Leadership", "hear_members", "install"]

ELECT_TYPE = "cluster.elect"  # the coordinator's nudge: {cluster}
TERM_TYPE = "cluster.term"  # a term record, and the leader's announcement to members
SAMPLES_PER_SUMMARY = 2


@dataclass
class Lead:
    """The leadership we hold."""

    cluster: str
    term: int
    fleet: FleetView
    members: dict[str, tuple[MemberEntry, bytes]]  # id -> (latest entry, its signed bytes)
    consumer: Consumer | None = None
    lost: list[tuple[str, str]] | None = None
    rotation: int = 0


class Leadership:
    """An agent's side of cluster leadership: claims, leads, steps down; as member, fences."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.lead: Lead | None = None
        self.fences: dict[str, EpochFence] = {}  # cluster -> highest term announced to us
        self.known: dict[str, tuple[int, str]] = {}  # cluster -> (term, leader) announced
        self.claims = 0  # locks tried
        self.won = 0  # leaderships held
        self._claiming = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    # -- as a member -----------------------------------------------------------------

    def on_term(self, msg: Message) -> dict[str, Any]:
        """A leader's announcement ``{cluster, term, leader}``: older terms are refused."""
        data = msg.payload
        cluster = text(need(data, "cluster", str), "cluster", 64)
        term = count(need(data, "term", int), "term", low=1, high=MAX_EPOCH)
        if need(data, "leader", str) != msg.sender:
            raise DecodeError("a term announced for another leader")
        fence = self.fences.setdefault(cluster, EpochFence())
        if not fence.admit(term):
            raise StaleEpoch(term, fence.highest)
        self.known[cluster] = (term, msg.sender)
        return {"term": term}

    def on_elect(self, msg: Message) -> dict[str, Any]:
        """The coordinator's nudge: try the lock of our cluster (nothing if we lead it)."""
        cluster = text(need(msg.payload, "cluster", str), "cluster", 64)
        if cluster != self.agent.cluster_id or cluster == DEFAULT_CLUSTER:
            return {"claimed": False, "why": f"in cluster {self.agent.cluster_id}"}
        if self.lead is not None or self._claiming:
            return {"claimed": False, "why": "leading or claiming already"}
        self._spawn(self.claim(cluster))
        return {"claimed": True}

    # -- claiming --------------------------------------------------------------------

    async def claim(self, cluster: str) -> bool:
        """Try the cluster's lock; on success take a term and lead. Returns whether we lead.

        A claim that fails after the lock was won (the broker refused the term
        record or the member queue) releases the lock again.
        """
        if self._claiming or self.lead is not None:
            return False
        self._claiming = True
        agent = self.agent
        try:
            self.claims += 1
            lock = topo.cluster_lock_spec(cluster)
            if not await agent.broker.try_exclusive(lock):
                log.info("cluster %s: another member holds the lead; %s yields", cluster, agent.id)
                return False
            try:
                term = await self._next_term(cluster)
                await self._start(cluster, term)
            except Exception:
                log.exception("cluster %s: could not take the lead; releasing it", cluster)
                await self._release(cluster)
                self.lead = None
                return False
            return True
        finally:
            self._claiming = False

    async def _next_term(self, cluster: str) -> int:
        claim = {"cluster": cluster, "leader": self.agent.id, "incarnation": self.agent.incarnation}
        spec = topo.cluster_term_spec(cluster, self.agent.settings.topology)
        route = (topo.EVENTS_EXCHANGE, topo.term_routing_key(cluster))
        return await epochs.next_epoch(
            self.agent, spec, TERM_TYPE, claim, lambda raw: self._read_term(cluster, raw), route
        )

    def _read_term(self, cluster: str, raw: bytes) -> int:
        """The term in a stored record of ``cluster``.

        Raises:
            ProtocolError: not a member's signed term record of this cluster.
        """
        opened = self.agent.open_stored(raw)
        data = opened.envelope.payload
        if opened.envelope.type != TERM_TYPE or not isinstance(data, dict):
            raise DecodeError(f"a {opened.envelope.type!r} is not a term record")
        if data.get("leader") != opened.envelope.sender or data.get("cluster") != cluster:
            raise DecodeError("a term record of another leader or cluster")
        return count(need(data, "epoch", int), "term", low=1, high=MAX_EPOCH)

    async def _start(self, cluster: str, term: int) -> None:
        agent = self.agent
        fleet = FleetView(agent.settings.detector(), PerformanceTracker(), load_of=lambda _a: 0)
        self.lead = Lead(cluster, term, fleet, {}, lost=[])
        self.fences.setdefault(cluster, EpochFence()).observe(term)
        self.known[cluster] = (term, agent.id)
        self.lead.consumer = await hear_members(agent, cluster, self._on_member_beat, own=True)
        self.won += 1
        self._loop = asyncio.create_task(self._summaries())
        log.warning("%s leads cluster %s with term %d", agent.id, cluster, term)

    # -- leading ---------------------------------------------------------------------

    def _on_member_beat(self, msg: Message) -> None:
        lead = self.lead
        if lead is None:
            return
        try:
            beat = Heartbeat.from_data(msg.payload)
        except DecodeError as exc:
            log.debug("ignoring heartbeat of %s: %s", msg.sender, exc)
            return
        if beat.cluster_id != lead.cluster:
            return  # a late beat of an agent that moved on
        now = time.time()
        entry = MemberEntry(
            msg.sender, msg.sender_role, msg.envelope.timestamp, beat, msg.certificate.raw
        )
        first = msg.sender not in lead.members
        lead.members[msg.sender] = (entry, msg.raw or b"")
        self._lost(lead, lead.fleet.heartbeat(msg.sender, msg.sender_role, beat, now))
        if beat.state == "leaving":
            lead.members.pop(msg.sender, None)
        if first and msg.sender != self.agent.id:
            self._spawn(self._announce(msg.sender, lead))

    def _lost(self, lead: Lead, lost: list[Any]) -> None:
        for item in lost:
            lead.fleet.forget(item.agent_id, time.time())
            lead.members.pop(item.agent_id, None)
            assert lead.lost is not None
            lead.lost.append((item.agent_id, item.reason))
            log.warning("cluster %s: member %s lost (%s)", lead.cluster, item.agent_id, item.reason)

    async def _announce(self, member: str, lead: Lead) -> None:
        payload = {"cluster": lead.cluster, "term": lead.term, "leader": self.agent.id}
        try:
            await self.agent.send(member, TERM_TYPE, payload, priority=8, persistent=False)
        except Exception as exc:  # a courtesy: the summary, not the member, needs the term
            log.debug("could not announce term %d to %s: %s", lead.term, member, exc)

    def summary(self, now: float) -> dict[str, Any] | None:
        """Our summary now (None when we lead nothing, or have not heard our own beat
        yet); reports lost members once."""
        lead = self.lead
        if lead is None:
            return None
        self._lost(lead, lead.fleet.tick(now))
        if self.agent.id not in lead.members:
            return None  # until we heard ourselves: the coordinator checks we are a member
        ids = sorted(lead.members)
        picked = [
            ids[(lead.rotation + i) % len(ids)] for i in range(min(len(ids), SAMPLES_PER_SUMMARY))
        ]
        lead.rotation += len(picked)
        samples = [lead.members[a][1] for a in picked if lead.members[a][1]]
        lost, lead.lost = lead.lost or [], []
        if len(ids) > MAX_MEMBERS:  # the rest would look dead to the coordinator
            log.error(
                "cluster %s has %d members; a summary lists %d", lead.cluster, len(ids), MAX_MEMBERS
            )
        out = summarise(
            lead.cluster,
            lead.term,
            self.agent.id,
            (e for e, _ in lead.members.values()),
            now,
            lost=lost,
            samples=samples,
        )
        return out.to_data()

    async def _summaries(self) -> None:
        try:
            await self._summarise_every_interval()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the summaries of %s stopped", self.agent.id)

    async def _summarise_every_interval(self) -> None:
        interval = self.agent.settings.heartbeat_interval
        while self.lead is not None:
            lead = self.lead
            if self.agent.cluster_id != lead.cluster:  # a membership order moved us
                await self.step_down("moved to cluster " + self.agent.cluster_id)
                return
            data = self.summary(time.time())
            if data is not None:
                env = Envelope(SUMMARY_TYPE, data, priority=9)
                try:
                    await self.agent.publish_event(
                        topo.summary_routing_key(lead.cluster), env, persistent=False
                    )
                except Unroutable:
                    log.debug("no coordinator takes summaries yet")
                except Exception as exc:
                    log.warning("summary of cluster %s failed: %s", lead.cluster, exc)
            await asyncio.sleep(interval)

    # -- stepping down -----------------------------------------------------------------

    async def step_down(self, why: str) -> None:
        """Stop acting, then release the lock (while we still hold its connection)."""
        lead, self.lead = self.lead, None
        if lead is None:
            return
        log.warning(
            "%s steps down as leader of %s (term %d): %s",
            self.agent.id,
            lead.cluster,
            lead.term,
            why,
        )
        if lead.consumer is not None:
            with contextlib.suppress(Exception):
                await self.agent.cancel(lead.consumer)
        await self._release(lead.cluster)

    async def _release(self, cluster: str) -> None:
        name = topo.cluster_lock_spec(cluster).name
        try:
            released = await self.agent.broker.delete_if_empty(name)
        except Exception as exc:
            released = False
            log.debug("releasing %s: %s", name, exc)
        if not released:
            log.error("could not release %s; it is freed when this agent's connection closes", name)

    def on_reconnect(self) -> None:
        """Our connection (and with it the lock) is gone: stop acting at once."""
        lead, self.lead = self.lead, None
        if lead is None:
            return
        log.error(
            "%s lost its broker connection and with it the lead of %s", self.agent.id, lead.cluster
        )
        if lead.consumer is not None:
            consumer = lead.consumer
            self._spawn(self._cancel(consumer))

    async def _cancel(self, consumer: Consumer) -> None:
        with contextlib.suppress(Exception):
            await self.agent.cancel(consumer)

    async def stop(self, agent: AgentContext) -> None:
        if self._loop is not None:
            self._loop.cancel()
        for task in list(self._tasks):
            task.cancel()

    def report(self) -> dict[str, Any]:
        """Our heartbeat section while we lead (signed with the heartbeat)."""
        if self.lead is None:
            return {}
        lead = self.lead
        return {
            "leader": {"cluster": lead.cluster, "term": lead.term, "members": len(lead.members)}
        }

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def hear_members(
    agent: AgentContext, cluster: str, on_beat: Handler, *, own: bool = False
) -> Consumer:
    """Consume ``cluster``'s member heartbeats on our own exclusive feed (a leader's,
    or the coordinator's stand-in); cancelled, the feed and its binding are gone.

    Raises:
        BrokerError: the broker refused the queue or the binding.
    """
    return await agent.consume(
        topo.member_queue_spec(cluster, agent.id),
        {"heartbeat": on_beat},
        prefetch=1000,
        bindings=[(topo.EVENTS_EXCHANGE, topo.member_binding(cluster))],
        work=False,
        load=False,
        exclusive=True,
        ack_delay=0.25,  # a heartbeat is worthless once read (see the coordinator's)
        own=own,  # a leader's own beat is a member's too
    )


def install(agent: AgentContext) -> Leadership:
    """Handle ``cluster.elect`` and ``cluster.term`` on ``agent``; returns the host."""
    host = Leadership(agent)
    agent.handle(ELECT_TYPE, host.on_elect)
    agent.handle(TERM_TYPE, host.on_term)
    agent.add_heartbeat_extra(host.report)
    agent.on_reconnect(host.on_reconnect)
    agent.on_stop(host.stop)
    return host
