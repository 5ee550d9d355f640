"""Declaring robeing's topology and operating on queues, each on a channel of its own.

A refused AMQP operation closes the channel it ran on. Running each one on a
short-lived channel of its own keeps a refusal (a least-privilege user that
may not declare an exchange, a queue that is not empty) from closing the
channel the agent publishes on.

Who declares what (DESIGN §8: processes declare what they own and check the
rest): a coordinator declares the shared topology — exchanges, the
dead-letter queue, its own queues, the results stream. Any other process
declares only the exchanges and the dead-letter queue, and when its user may
not (least privilege) it checks passively that the exchanges exist; it never
touches the coordinator's queues.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import aio_pika.abc
import aiormq.exceptions

from ..protocol.errors import BrokerError
from . import topology as topo
from .base import HeldMessage, QueueMismatch
from .topology import QueueSpec, TopologySettings

Connection = aio_pika.abc.AbstractRobustConnection
Channel = aio_pika.abc.AbstractChannel


async def on_own_channel(conn: Connection, work: Callable[[Channel], Awaitable[object]]) -> None:
    """Run ``work`` on a channel of its own, closed afterwards."""
    channel = await conn.channel()
    try:
        await work(channel)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def declare_topology(
    conn: Connection, topology: TopologySettings, owner: bool, where: str
) -> None:
    """Declare the shared topology (``owner``), or what any process may, else check it.

    Args:
        conn: the connection.
        topology: queue arguments.
        owner: a coordinator, which declares its queues and the results stream too.
        where: the broker URL without password, for messages.

    Raises:
        BrokerError: the exchanges are missing and we may not declare them, or a
            queue exists with other arguments.
    """
    try:
        await on_own_channel(conn, lambda ch: _declare_shared(ch, topology, owner))
    except aiormq.exceptions.ChannelAccessRefused as exc:
        if owner:
            raise BrokerError(f"this user may not declare robeing's topology: {exc}") from exc
        try:
            await on_own_channel(conn, _check_exchanges)
        except aiormq.exceptions.ChannelNotFoundEntity as missing:
            raise BrokerError(
                f"robeing's exchanges do not exist on {where} and this user may not declare "
                "them: start a coordinator, or run `robeing broker setup` as an administrator"
            ) from missing


async def _declare_shared(ch: Channel, topology: TopologySettings, owner: bool) -> None:
    for name, kind in topo.EXCHANGES:
        await ch.declare_exchange(name, kind, durable=True)
    specs = topo.shared_queues(topology) if owner else (topo.dead_letter_spec(topology),)
    declared = {spec.name: await declare(ch, spec) for spec in specs}
    for exchange, queue, key in topo.SHARED_BINDINGS:
        if queue in declared:
            await declared[queue].bind(exchange, routing_key=key)


async def _check_exchanges(ch: Channel) -> None:
    for name, _ in topo.EXCHANGES:
        await ch.get_exchange(name, ensure=True)  # passive: needs no permission


async def declare(ch: Channel, spec: QueueSpec) -> aio_pika.abc.AbstractQueue:
    """Declare ``spec`` on ``ch`` (idempotent).

    Raises:
        BrokerError: the queue exists with other arguments.
    """
    with explain_mismatch(spec.name):
        return await ch.declare_queue(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=spec.arguments,
        )


async def bind(ch: Channel, queue: str, exchange: str, routing_key: str = "") -> None:
    q = await ch.get_queue(queue, ensure=False)
    await q.bind(exchange, routing_key=routing_key)


async def delete_if_empty(conn: Connection, queue: str) -> bool:
    """Delete ``queue`` unless it holds messages; True if it is gone."""
    channel = await conn.channel()
    try:
        await channel.queue_delete(queue, if_empty=True)
        return True
    except aiormq.exceptions.ChannelClosed:  # PRECONDITION_FAILED: not empty
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def peek(conn: Connection, queue: str) -> bytes | None:
    """The first message of ``queue``, left in place (None if empty)."""
    found: list[bytes] = []

    async def get(ch: Channel) -> None:
        q = await ch.get_queue(queue, ensure=False)
        msg = await q.get(no_ack=False, fail=False)
        if msg is not None:
            found.append(msg.body)
            await msg.nack(requeue=True)

    await on_own_channel(conn, get)
    return found[0] if found else None


async def purge(conn: Connection, queue: str) -> int:
    """Drop every ready message of ``queue``; returns how many."""
    counts: list[int] = []

    async def drop(ch: Channel) -> None:
        q = await ch.get_queue(queue, ensure=False)
        result = await q.purge()
        counts.append(int(getattr(result, "message_count", 0) or 0))

    await on_own_channel(conn, drop)
    return counts[0] if counts else 0


class Held:
    """Messages taken from a queue on a channel of their own (implements ``base.Held``).

    Closing the channel hands every message not removed back to its place.
    """

    def __init__(self, channel: Channel, messages: list[HeldMessage]) -> None:
        self._channel = channel
        self.messages = messages

    async def remove(self, message: HeldMessage) -> None:
        underlay = await self._channel.get_underlay_channel()
        await underlay.basic_ack(message.tag)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._channel.close()

    async def __aenter__(self) -> Held:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def hold(conn: Connection, queue: str, limit: int) -> Held:
    """Take up to ``limit`` messages of ``queue``, oldest first, without settling them.

    Raises:
        BrokerError: the queue does not exist or may not be read.
    """
    channel = await conn.channel()
    try:
        q = await channel.get_queue(queue, ensure=False)
        messages: list[HeldMessage] = []
        while len(messages) < limit:
            msg = await q.get(no_ack=False, fail=False)
            if msg is None:
                break
            messages.append(HeldMessage(msg.body, msg.headers or {}, msg.delivery_tag or 0))
    except aiormq.exceptions.AMQPError as exc:
        with contextlib.suppress(Exception):
            await channel.close()
        raise BrokerError(f"cannot read {queue}: {exc}") from exc
    return Held(channel, messages)


async def consumer_count(conn: Connection, queue: str) -> int:
    """How many consumers ``queue`` has (a passive declaration: no permission needed)."""
    counts: list[int] = []

    async def check(ch: Channel) -> None:
        q = await ch.declare_queue(queue, passive=True)
        result = q.declaration_result
        counts.append(int(getattr(result, "consumer_count", 0) or 0))

    await on_own_channel(conn, check)
    return counts[0] if counts else 0


@contextlib.contextmanager
def explain_mismatch(queue: str) -> Iterator[None]:
    """Turn RabbitMQ's PRECONDITION_FAILED on a declaration into a clear error."""
    try:
        yield
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise QueueMismatch(
            f"queue {queue!r} already exists with different arguments (an older robeing "
            f"made it?): {exc}; delete it (rabbitmqctl delete_queue {queue}) or use a new vhost"
        ) from exc
