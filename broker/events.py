"""The broker's connection events: instant crash detection.

RabbitMQ's event exchange plugin publishes ``connection.closed`` to
``amq.rabbitmq.event`` (in ``rabbitmq_event_exchange.vhost``, ``/`` by
default) the moment a client's TCP connection ends — a SIGKILLed agent
included. Each robeing connection is named
``robeing <role> <id> [<specs>] cluster=<c> vhost=<v> inst=<instance>``, so the
event names the agent, its vhost and its incarnation; the watcher reports
closes of agents in our vhost and leaves deciding to the caller (who ignores
the close of an incarnation it no longer tracks).

Hung or cut-off agents keep their TCP connection open; they are caught by
missed heartbeats instead (:mod:`robeing.protocol.failure_detector`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from .amqp import AmqpTransport
from .base import Delivery
from .management import vhost_of, with_vhost
from .topology import QueueSpec

log = logging.getLogger(__name__)

EVENT_EXCHANGE = "amq.rabbitmq.event"
_NAME = re.compile(r'connection_name">>,longstr,<<"(.*?)">>')
_ROBEING = re.compile(
    r"^robeing (?P<role>\S+) (?P<id>\S+) \[[^\]]*\] cluster=\S+ vhost=(?P<vhost>\S+)"
    r" inst=(?P<inst>\S+)$"
)


@dataclass(frozen=True, slots=True)
class ClosedConnection:
    role: str
    agent_id: str
    vhost: str
    instance: str


def parse_closed(headers: dict[str, object]) -> ClosedConnection | None:
    """Extract the robeing agent from a ``connection.closed`` event's headers."""
    props = headers.get("client_properties")
    text = " ".join(str(p) for p in props) if isinstance(props, list) else str(props or "")
    m = _NAME.search(text)
    if m is None:
        return None
    r = _ROBEING.match(m.group(1))
    if r is None:
        return None
    return ClosedConnection(r["role"], r["id"], r["vhost"], r["inst"])


class ConnectionWatcher:
    """Consumes connection events for one robeing vhost.

    Args:
        amqp_url: our broker URL (its vhost is the one we watch).
        events_vhost: where the event exchange lives.
        on_closed: called with each closed robeing connection of our vhost.
    """

    def __init__(
        self,
        amqp_url: str,
        events_vhost: str,
        name: str,
        on_closed: Callable[[ClosedConnection], None],
    ) -> None:
        self.vhost = vhost_of(amqp_url)
        self.transport = AmqpTransport(
            with_vhost(amqp_url, events_vhost), f"{name} (connection events)"
        )
        self.on_closed = on_closed
        self.events = 0

    async def start(self) -> bool:
        """Start watching; False (and a warning) if events are unavailable."""
        try:
            await self.transport.connect()
            spec = QueueSpec(
                f"robeing.connwatch.{id(self):x}",
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": 100_000},
            )
            await self.transport.consume(
                spec,
                self._on_event,
                prefetch=500,
                bindings=[(EVENT_EXCHANGE, "connection.closed")],
                no_ack=True,
            )
        except Exception as exc:
            log.warning(
                "broker connection events unavailable (%s); crashes are detected "
                "from missed heartbeats only",
                exc,
            )
            await self.stop()
            return False
        return True

    async def _on_event(self, delivery: Delivery) -> None:
        closed = parse_closed(dict(delivery.headers))
        if closed is None or closed.vhost != self.vhost:
            return
        self.events += 1
        self.on_closed(closed)

    async def stop(self) -> None:
        try:
            await self.transport.close()
        except Exception as exc:
            log.debug("closing the event connection: %s", exc)
