"""Listening to heartbeats: who is alive, as their own signed heartbeats say.

Every agent that takes work heartbeats on ``heartbeat.<role>.<id>`` (see
:class:`~robeing.protocol.heartbeat.Heartbeat`). :func:`listen_heartbeats`
binds a temporary queue to that topic for a while and returns the latest
status of each agent heard: what ``robeing status``, the voters of a
proposal and liveness probes are built on.

Members of a named cluster heartbeat to their leader, not on
``heartbeat.#``; observers list them from the leader's signed summaries
(``summary.#``, one per cluster per second), which carry each member's
heartbeat as the leader heard it. Observers deliberately do not bind the
members' own keys: a member's beat that no leader takes must come back
unroutable, which is how members fall back to ``heartbeat.#`` between terms
(wire contract: :mod:`robeing.protocol.clusters.summary`). A member's status
from a summary is the leader's report (its ``via`` says which leader), not
the member's own signature.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..broker import topology as topo
from ..broker.base import Consumer
from ..protocol.clusters.summary import SUMMARY_TYPE, ClusterSummary
from ..protocol.errors import DecodeError
from ..protocol.heartbeat import Heartbeat
from ..protocol.roles import ROLES
from .context import AgentContext, Message

__all__ = [
    "AgentStatus",
    "follow_heartbeats",
    "listen_heartbeats",
    "status_from_heartbeat",
    "statuses_from_summary",
]


@dataclass
class AgentStatus:
    """What the last heartbeat of an agent said."""

    id: str
    role: str
    specializations: list[str]
    cluster_id: str
    state: str
    load: int
    capacity: int
    last_seen: float
    started_at: float
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "specializations": self.specializations,
            "cluster_id": self.cluster_id,
            "state": self.state,
            "load": self.load,
            "capacity": self.capacity,
            "last_seen_s": round(now - self.last_seen, 3),
            "uptime_s": round(now - self.started_at, 1) if self.started_at else None,
            "stats": self.stats,
            **self.extra,
        }


def status_from_heartbeat(sender: str, role: str, beat: Heartbeat, now: float) -> AgentStatus:
    """An agent's status from its heartbeat; ``role`` is the *certified* one, not the claimed."""
    extra: dict[str, Any] = {
        **beat.extras,
        "standby": beat.standby,
        "backup_for": beat.backup_for,
        "resources": beat.resources.to_mapping() if beat.resources is not None else {},
        # The certified role's priority, and what it says it can run.
        "priority": ROLES[role].priority if role in ROLES else None,
        "task_types": None if beat.tasks is None else list(beat.tasks),
        "proficiency": dict(beat.proficiency),
    }
    return AgentStatus(
        id=sender,
        role=role,
        specializations=list(beat.specializations),
        cluster_id=beat.cluster_id,
        state=beat.state,
        load=beat.load,
        capacity=beat.capacity,
        last_seen=now,
        started_at=beat.started_at,
        stats=dict(beat.stats),
        extra=extra,
    )


def statuses_from_summary(msg: Message, now: float) -> list[AgentStatus]:
    """The members a leader's ``cluster.summary`` lists (none if it is malformed)."""
    try:
        summary = ClusterSummary.from_data(msg.payload)
    except DecodeError:
        return []
    out = []
    for entry in summary.members:
        status = status_from_heartbeat(entry.agent_id, entry.role, entry.beat, now)
        status.extra["via"] = msg.sender
        out.append(status)
    return out


async def follow_heartbeats(
    agent: AgentContext, on_status: Callable[[AgentStatus], None], tag: str = ""
) -> Consumer:
    """Call ``on_status`` with every verified heartbeat until the consumer is cancelled.

    The queue is exclusive and bounded, an *observer*: what fails the checks
    is counted and dropped (the coordinator, who owns heartbeats, refuses it).

    Raises:
        BrokerError: the broker is unreachable.
    """
    spec = topo.QueueSpec(
        topo.listen_queue(agent.id, tag or os.urandom(3).hex()),
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": 100_000},
    )

    def on_heartbeat(msg: Message) -> None:
        try:
            beat = Heartbeat.from_data(msg.payload)
        except DecodeError:
            return
        on_status(status_from_heartbeat(msg.sender, msg.sender_role, beat, agent.clock()))

    def on_summary(msg: Message) -> None:
        for status in statuses_from_summary(msg, agent.clock()):
            on_status(status)

    return await agent.consume(
        spec,
        {"heartbeat": on_heartbeat, SUMMARY_TYPE: on_summary},
        prefetch=1000,
        bindings=[
            (topo.EVENTS_EXCHANGE, topo.HEARTBEAT_BINDING),
            (topo.EVENTS_EXCHANGE, topo.SUMMARY_BINDING),
        ],
        work=False,
        load=False,
        observer=True,
    )


async def listen_heartbeats(agent: AgentContext, seconds: float) -> dict[str, AgentStatus]:
    """The agents whose heartbeats ``agent`` hears within ``seconds``, by id.

    Heartbeats are verified like any message (forged ones are counted and
    dropped); agents whose last heartbeat said ``leaving`` are left out. The
    listening queue is exclusive, and its channel is closed afterwards, so a
    long-lived client can listen as often as it likes.

    Raises:
        BrokerError: the broker is unreachable.
    """
    seen: dict[str, AgentStatus] = {}

    def on_status(status: AgentStatus) -> None:
        seen[status.id] = status

    consumer = await follow_heartbeats(agent, on_status)
    try:
        await asyncio.sleep(seconds)
    finally:
        await agent.cancel(consumer)
    return {k: v for k, v in sorted(seen.items()) if v.state != "leaving"}
