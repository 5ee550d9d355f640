"""An agent's heartbeats: built from its settings, load and every role's section; sent on time.

Every agent that takes work publishes a signed :class:`~robeing.protocol.heartbeat.Heartbeat`
on ``heartbeat.<role>.<id>`` every ``heartbeat_interval`` seconds (and a last
one saying ``leaving`` when it stops). They are transient and expire after
three intervals: a heartbeat nobody read in time is worthless.

A member of a named cluster publishes on ``member.<cluster>.<role>.<id>``
instead, which only its cluster's leader consumes (the coordinator hears the
members through the leader's summaries). Such a beat is ``mandatory``: when
no leader's queue takes it (between terms, before the first leader) the
broker returns it and the same beat goes out at once on
``heartbeat.<role>.<id>``, so the coordinator always hears every agent
(wire contract: :mod:`robeing.protocol.clusters.summary`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...broker import topology as topo
from ...protocol.clusters.names import DEFAULT_CLUSTER
from ...protocol.envelope import Envelope
from ...protocol.errors import BrokerError, Unroutable
from ...protocol.heartbeat import Heartbeat

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger(__name__)


class Heartbeats:
    """Builds and sends one agent's heartbeats.

    Attributes:
        extras: callables adding a section each (e.g. ``{"guardian": {...}}``);
            one that raises is logged and left out of that beat.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.extras: list[Callable[[], Mapping[str, Any]]] = []
        self.lag = 0.0  # how late the last beat went out (a busy or paused event loop)
        self.unrouted = 0  # member beats no leader took, in a row (0: a leader hears us)
        self.refused = False  # the broker refused a member beat (logged once)

    def build(self, state: str | None = None) -> Heartbeat:
        """Our heartbeat now: who we are, our load, and every role's extra section."""
        agent = self.agent
        sections: dict[str, Any] = {}
        for extra in self.extras:
            try:
                sections.update(extra())
            except Exception:
                log.exception("heartbeat extra %r failed", extra)
        st = agent.settings
        return Heartbeat(
            role=st.role,
            state=state or agent.state,
            specializations=st.specializations,
            cluster_id=agent.cluster_id,
            priority=agent.role.priority,
            standby=st.standby,
            backup_for=st.backup_for,
            resources=st.resources,
            load=agent.load,
            capacity=st.concurrency,
            started_at=agent.started_at,
            incarnation=agent.incarnation,
            stats=agent.stats.as_dict(),
            extras=sections,
            # What it runs: a coordinator knows task types (to split and merge) but runs none.
            tasks=tuple(sorted(agent.task_defs)) if st.role != "coordinator" else (),
            proficiency=dict(st.proficiency),
        )

    async def send(self, state: str | None = None) -> None:
        """Publish one heartbeat (unconfirmed delivery is fine: the next one follows).

        Raises:
            BrokerError: the broker did not take it.
        """
        agent = self.agent
        beat = self.build(state)
        body = agent.codec.seal(Envelope("heartbeat", beat.to_data(), priority=9), agent.clock())
        interval = agent.settings.heartbeat_interval
        role, cluster = agent.settings.role, agent.cluster_id
        options: dict[str, Any] = {
            "persistent": False,
            "expiration_s": max(3 * interval, 1.0),
            "timeout": max(interval * 5, 2.0),
        }
        if cluster and cluster != DEFAULT_CLUSTER and role != "coordinator":
            key = topo.member_routing_key(cluster, role, agent.id)
            try:
                await agent.transport.publish(
                    topo.EVENTS_EXCHANGE, key, body, mandatory=True, **options
                )
                self.unrouted = 0
                return
            except Unroutable:
                self.unrouted += 1  # no leader: the coordinator hears us directly
            except BrokerError as exc:  # refused (a broker user without the member key)
                if not self.refused:
                    log.warning("heartbeats to the leader of %s refused: %s", cluster, exc)
                self.refused = True
        await agent.transport.publish(
            topo.EVENTS_EXCHANGE,
            topo.heartbeat_routing_key(role, agent.id),
            body,
            mandatory=False,
            **options,
        )

    async def loop(self) -> None:
        """Beat every interval until cancelled; after a pause, resume without a burst."""
        interval = self.agent.settings.heartbeat_interval
        next_at = time.monotonic()
        while True:
            try:
                await self.send()
            except Exception as exc:  # keep beating through broker trouble
                log.warning("heartbeat failed: %s", exc)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.lag = max(0.0, time.monotonic() - next_at)
            if time.monotonic() - next_at > interval:  # we were paused; do not burst
                next_at = time.monotonic()
