"""The small interface agents use to talk to the broker.

Agents depend on :class:`Transport` and :class:`Delivery`, never on aio-pika
types, so the runtime stays thin and the AMQP details live in
:mod:`robeing.broker.amqp` alone.

Delivery outcomes:
    * ``ack()`` — done; the broker forgets the message.
    * ``requeue()`` — hand it back for another consumer (graceful shutdown).
    * ``dead_letter(reason, detail, report)`` — publish it to the dead-letter
      exchange with the reason (and the refusing agent's signed report) in
      headers, then acknowledge; if that publish cannot be
      confirmed, reject without requeue so the queue's own DLX still keeps it.
      Nothing is ever silently dropped.

If the connection was lost between delivery and settlement, settling is a
no-op: the broker redelivers the message (``redelivered=True``) and the
receiver's duplicate detection absorbs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol.errors import BrokerError
from .topology import QueueSpec


class QueueMismatch(BrokerError):
    """A queue exists with other arguments than the declaration's (RabbitMQ refuses it)."""


class Delivery(Protocol):
    """One message received from a queue."""

    @property
    def body(self) -> bytes: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def reply_to(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def queue(self) -> str: ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...

    async def dead_letter(self, reason: str, detail: str, report: bytes | None = None) -> None:
        """Dead-letter with ``reason`` (and the refusing agent's signed ``report``), then ack."""
        ...


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A message taken from a queue and not settled yet (see :class:`Held`)."""

    body: bytes
    headers: Mapping[str, Any]
    tag: int


class Held(Protocol):
    """Messages taken from a queue without settling them (``BrokerOps.hold``).

    ``remove`` acknowledges one (it leaves the queue); ``close`` (or leaving
    the ``async with``) hands every other back to its place in the queue.
    Nothing is lost if the process dies in between.
    """

    messages: list[HeldMessage]

    async def remove(self, message: HeldMessage) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Held: ...

    async def __aexit__(self, *exc: object) -> None: ...


@dataclass(frozen=True, slots=True)
class Consumer:
    """A registered consumer, as reported by :meth:`Transport.consumers`."""

    queue: str
    tag: str


class BrokerOps(Protocol):
    """Broker operations beyond consuming: what roles may do through their context.

    Consuming is not here: every delivery goes through the agent's one
    inbound path (``AgentContext.consume``).
    """

    async def declare_queue(self, spec: QueueSpec) -> None: ...

    async def bind(self, queue: str, exchange: str, routing_key: str = "") -> None: ...

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        priority: int | None = None,
        mandatory: bool = True,
        persistent: bool = True,
        expiration_s: float | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool = True,
        confirm: bool = True,
        message_id: str | None = None,
    ) -> None: ...

    async def dead_letter(
        self,
        body: bytes,
        source: str,
        reason: str,
        detail: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish ``body`` to the dead-letter exchange with the reason in headers.

        Raises:
            BrokerError: the broker did not confirm it.
        """
        ...

    async def try_exclusive(self, spec: QueueSpec) -> bool: ...

    async def peek(self, queue: str) -> bytes | None: ...

    async def delete_if_empty(self, queue: str) -> bool: ...

    async def purge(self, queue: str) -> int: ...

    async def hold(self, queue: str, limit: int) -> Held:
        """Take up to ``limit`` messages of ``queue``, oldest first, unsettled.

        Raises:
            BrokerError: the queue does not exist or may not be read.
        """
        ...

    async def consumer_count(self, queue: str) -> int: ...

    async def read_stream(
        self,
        spec: QueueSpec,
        offset: Any,
        handler: Callable[[bytes], None],
        idle: float = 0.5,
        limit: float = 60.0,
    ) -> int: ...


class Transport(BrokerOps, Protocol):
    """What an agent's runtime needs from a broker connection."""

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def declare_topology(self, owner: bool = False) -> None: ...

    def add_return_listener(self, listener: Callable[[str, str], None]) -> None: ...

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None: ...

    async def consume(
        self,
        spec: QueueSpec,
        handler: DeliveryHandler,
        prefetch: int = 32,
        bindings: Sequence[tuple[str, str]] = (),
        no_ack: bool = False,
        exclusive: bool = False,
        ack_delay: float | None = 0.0,
    ) -> Consumer: ...

    async def cancel(self, consumer: Consumer, close_channel: bool = False) -> None:
        """Stop ``consumer``; ``close_channel`` also frees its channel (a temporary consumer).

        Keeping the channel lets in-flight deliveries still be acknowledged
        (graceful shutdown); it then closes with the connection.
        """
        ...

    def consumers(self) -> list[Consumer]: ...
