"""The Python API for people and programs outside the fleet.

A :class:`Client` is a ``client``-role identity on its own connection: it
sends and broadcasts signed messages, asks agents for replies, and watches
heartbeats to list live agents. The CLI's ``send``, ``broadcast`` and
``status`` are thin wrappers around it::

    async with Client(Settings(role="client")) as client:
        ack = await client.send("worker-1", "greet", {"hi": 1}, requires_ack=True)
        agents = await client.live_agents()
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..broker import topology as topo
from ..broker.base import Delivery
from ..protocol.codec import Opened
from ..protocol.errors import ConfigError, ProtocolError
from .runtime import Agent
from .settings import Settings


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


_KNOWN = {
    "role",
    "specializations",
    "cluster_id",
    "state",
    "load",
    "capacity",
    "started_at",
    "incarnation",
    "stats",
    "priority",
}


def status_from_heartbeat(opened: Opened, now: float) -> AgentStatus:
    p = opened.envelope.payload if isinstance(opened.envelope.payload, dict) else {}
    return AgentStatus(
        id=opened.envelope.sender,
        role=opened.certificate.role,  # the certified role, not the claimed one
        specializations=[str(s) for s in p.get("specializations", [])],
        cluster_id=str(p.get("cluster_id", "")),
        state=str(p.get("state", "alive")),
        load=int(p.get("load", 0)),
        capacity=int(p.get("capacity", 0)),
        last_seen=now,
        started_at=float(p.get("started_at", 0.0)),
        stats=dict(p.get("stats", {})),
        extra={k: v for k, v in p.items() if k not in _KNOWN},
    )


class Client:
    """A client identity connected to the broker.

    Args:
        settings: role must be ``client`` (the default here).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings(role="client")
        if settings.role != "client":
            settings = replace(settings, role="client", agent_id="")
        self.settings = settings
        self.agent = Agent.from_settings(settings)

    async def __aenter__(self) -> Client:
        await self.agent.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.agent.stop()

    async def send(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Opened | None:
        """See :meth:`robeing.agents.outbox.Outbox.send`."""
        return await self.agent.send_message(receiver, message_type, payload, **kw)

    async def request(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Any:
        return await self.agent.request(receiver, message_type, payload, **kw)

    async def broadcast(self, message_type: str, payload: Any = None, **kw: Any) -> str:
        return await self.agent.broadcast(message_type, payload, **kw)

    async def live_agents(self, listen: float | None = None) -> dict[str, AgentStatus]:
        """Listen to heartbeats for ``listen`` seconds and return who is alive.

        Heartbeats are verified like any message; forged ones are ignored.
        Agents whose last heartbeat said ``leaving`` are left out.
        """
        wait = listen if listen is not None else max(2.5 * self.settings.heartbeat_interval, 1.5)
        seen: dict[str, AgentStatus] = {}
        spec = topo.QueueSpec(
            f"robeing.status.{self.agent.id}.{os.urandom(3).hex()}",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": 100_000},
        )

        async def on_heartbeat(delivery: Delivery) -> None:
            await delivery.ack()
            try:
                opened = self.agent.codec.open(delivery.body, time.time())
            except ProtocolError:
                return
            if opened.envelope.type == "heartbeat":
                status = status_from_heartbeat(opened, time.time())
                seen[status.id] = status

        transport = self.agent.transport
        consumer = await transport.consume(
            spec, on_heartbeat, prefetch=1000, bindings=[(topo.EVENTS_EXCHANGE, "heartbeat.#")]
        )
        try:
            await asyncio.sleep(wait)
        finally:
            await transport.cancel(consumer)
        return {k: v for k, v in sorted(seen.items()) if v.state != "leaving"}


def parse_payload(text: str | None) -> Any:
    """Parse a ``--payload`` value: JSON text, or ``@file`` holding JSON.

    Raises:
        ConfigError: unreadable file or invalid JSON (says which).
    """
    import json

    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read payload file {text[1:]!r}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not valid JSON: {exc}") from exc
