"""The broker's connection events: instant crash detection, attributed by the broker.

RabbitMQ's event exchange plugin publishes ``connection.created`` and
``connection.closed`` to ``amq.rabbitmq.event`` (in
``rabbitmq_event_exchange.vhost``, ``/`` by default; an internal exchange no
client can publish to) the moment a client's TCP connection opens or ends —
a SIGKILLed agent included. Each robeing connection is named
``robeing <role> <id> [<specs>] cluster=<c> vhost=<v> inst=<instance>``.

A name is what the client says it is: anyone who can connect can open and
close a connection under an agent's name. So the watcher attributes a close
by the broker's own record of the connection, keyed by its Erlang pid: the
``connection.created`` event carries the vhost and the user that
authenticated. A close is reported only for connections in our vhost (by the
broker's record, not by the name), with the user the broker saw, or ``None``
when the watcher did not see that connection open (it started later); the
caller decides what that proves (a per-agent user equal to the agent's id is
proof, anything else only a hint).

Hung or cut-off agents keep their TCP connection open; they are caught by
missed heartbeats instead (:mod:`robeing.protocol.failure_detector`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .amqp import AmqpTransport
from .base import Delivery
from .management import vhost_of, with_vhost
from .topology import connection_watch_spec

log = logging.getLogger(__name__)

EVENT_EXCHANGE = "amq.rabbitmq.event"
MAX_TRACKED = 100_000  # open connections remembered; the oldest are forgotten first
_NAME = re.compile(r'connection_name">>,longstr,<<"(.*?)">>')
_ROBEING = re.compile(
    r"^robeing (?P<role>\S+) (?P<id>\S+) \[[^\]]*\] cluster=\S+ vhost=(?P<vhost>\S+)"
    r" inst=(?P<inst>\S+)$"
)


@dataclass(frozen=True, slots=True)
class ClosedConnection:
    """A closed robeing connection: its name's claims and the broker's record.

    Attributes:
        role, agent_id, instance: as the connection's name claims them.
        vhost: the vhost the broker recorded (the name's, when unrecorded).
        user: the user the broker authenticated, or None when the opening
            was not seen.
    """

    role: str
    agent_id: str
    vhost: str
    instance: str
    user: str | None = None


@dataclass(frozen=True, slots=True)
class _Opened:
    vhost: str
    user: str


def parse_closed(headers: dict[str, object]) -> ClosedConnection | None:
    """Extract the robeing agent from a connection event's headers (its name's claims)."""
    props = headers.get("client_properties")
    text = " ".join(str(p) for p in props) if isinstance(props, list) else str(props or "")
    m = _NAME.search(text)
    name = m.group(1) if m else headers.get("user_provided_name")
    r = _ROBEING.match(name) if isinstance(name, str) else None
    if r is None:
        return None
    return ClosedConnection(r["role"], r["id"], r["vhost"], r["inst"])


class ConnectionWatcher:
    """Consumes connection events for one robeing vhost.

    Args:
        amqp_url: our broker URL (its vhost is the one we watch).
        events_vhost: where the event exchange lives.
        name: our connection name (the watcher's connection is named after it).
        on_closed: called with each closed robeing connection of our vhost.
        owner: our agent id (names the watch queue, for least-privilege users).
    """

    def __init__(
        self,
        amqp_url: str,
        events_vhost: str,
        name: str,
        on_closed: Callable[[ClosedConnection], None],
        owner: str = "robeing",
    ) -> None:
        self.vhost = vhost_of(amqp_url)
        self.transport = AmqpTransport(
            with_vhost(amqp_url, events_vhost), f"{name} (connection events)"
        )
        self.on_closed = on_closed
        self.owner = owner
        self.events = 0
        self._opened: OrderedDict[str, _Opened] = OrderedDict()  # pid -> broker's record

    async def start(self) -> bool:
        """Start watching; False (and a warning) if events are unavailable."""
        try:
            await self.transport.connect()
            await self.transport.consume(
                connection_watch_spec(self.owner, os.urandom(3).hex()),
                self._on_event,
                prefetch=500,
                bindings=[
                    (EVENT_EXCHANGE, "connection.created"),
                    (EVENT_EXCHANGE, "connection.closed"),
                ],
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
        headers = dict(delivery.headers)
        pid = str(headers.get("pid", ""))
        if delivery.routing_key == "connection.created":
            if pid:
                self._opened[pid] = _Opened(str(headers.get("vhost")), str(headers.get("user")))
                while len(self._opened) > MAX_TRACKED:
                    self._opened.popitem(last=False)
            return
        record = self._opened.pop(pid, None) if pid else None
        closed = parse_closed(headers)
        if closed is None:
            return
        if record is not None:
            closed = dataclasses.replace(closed, vhost=record.vhost, user=record.user)
        if closed.vhost != self.vhost:
            return
        self.events += 1
        self.on_closed(closed)

    async def stop(self) -> None:
        try:
            await self.transport.close()
        except Exception as exc:
            log.debug("closing the event connection: %s", exc)
