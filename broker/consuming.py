"""Consuming over aio-pika: deliveries, and consumers that survive reconnects.

aio-pika restores channels, queues and bindings after a reconnect; consumers
started on the underlying aiormq channel (to skip aio-pika's per-message
wrapper) are ours to restore, which :class:`ConsumerSet` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika.abc
import aio_pika.exceptions
import aiormq.abc
import aiormq.exceptions
from pamqp.commands import Basic

from . import topology as topo
from .base import Consumer
from .topology import QueueSpec

log = logging.getLogger(__name__)

# Failures that mean "the connection is (temporarily) gone": retry after backoff.
RETRYABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
)

# The broker refused the operation itself: retrying changes nothing.
REFUSED = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.ChannelPreconditionFailed,
)

DeadLetterPublish = Callable[[bytes, str, str, str, Mapping[str, Any]], Awaitable[None]]
"""``(body, source queue, reason, detail, headers)``: publish to the dead-letter exchange."""


class AmqpDelivery:
    """A received message; AMQP stays inside this module.

    Built straight from aiormq's frame: aio-pika's IncomingMessage costs
    ~24 µs per message (measured) and adds nothing we use.
    """

    __slots__ = (
        "_channel",
        "_dead_letter",
        "_no_ack",
        "_tag",
        "body",
        "headers",
        "queue",
        "redelivered",
        "reply_to",
        "routing_key",
    )

    def __init__(
        self,
        msg: aiormq.abc.DeliveredMessage,
        queue: str,
        dead_letter: DeadLetterPublish,
        no_ack: bool = False,
    ) -> None:
        delivery = msg.delivery
        assert isinstance(delivery, Basic.Deliver)  # consumers only ever get Deliver frames
        props = msg.header.properties
        self._channel = msg.channel
        self._tag: int = delivery.delivery_tag or 0
        self._no_ack = no_ack
        self._dead_letter = dead_letter
        self.body = msg.body
        self.redelivered = bool(getattr(delivery, "redelivered", False))
        self.routing_key = delivery.routing_key or ""
        self.reply_to = props.reply_to
        self.headers: Mapping[str, Any] = props.headers or {}
        self.queue = queue

    async def ack(self) -> None:
        if not self._no_ack:
            await self._settle(self._channel.basic_ack(self._tag))

    async def requeue(self) -> None:
        if not self._no_ack:
            await self._settle(self._channel.basic_nack(self._tag, requeue=True))

    async def dead_letter(self, reason: str, detail: str, report: bytes | None = None) -> None:
        headers = dict(self.headers)
        if report is not None:
            headers[topo.REPORT_HEADER] = bytearray(report)  # AMQP byte array (pamqp: bytearray)
        try:
            await self._dead_letter(self.body, self.queue, reason, detail, headers)
        except Exception as exc:  # the queue's own DLX still catches a rejected message
            log.warning("dead-letter publish failed (%s); rejecting to the queue's DLX", exc)
            if not self._no_ack:
                await self._settle(self._channel.basic_reject(self._tag, requeue=False))
            return
        await self.ack()

    async def _settle(self, op: Any) -> None:
        try:
            await op
        except (aiormq.exceptions.AMQPError, *RETRYABLE) as exc:
            # Delivery tag belongs to a dead channel: the broker will redeliver.
            log.debug("could not settle delivery (%s); it will be redelivered", exc)


@dataclass(eq=False)
class Subscription:
    """A consumer we own: re-attached whenever its robust channel is renewed."""

    queue: str
    channel: aio_pika.abc.AbstractChannel
    callback: Callable[[aiormq.abc.DeliveredMessage], Coroutine[Any, Any, None]]
    no_ack: bool
    exclusive: bool = False
    tag: str = ""
    underlay: aiormq.abc.AbstractChannel | None = None


class ConsumerSet:
    """The consumers of one connection, re-attached whenever their channel is renewed.

    Args:
        timeout: seconds an attempt to re-attach one consumer may take.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._subs: dict[str, Subscription] = {}
        self._consumers_restored = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def add(self, sub: Subscription) -> Consumer:
        """Start consuming for ``sub`` and keep it consuming across reconnects."""
        await self._attach(sub)
        self._subs[sub.tag] = sub
        self._ensure_watchdog()
        return Consumer(sub.queue, sub.tag)

    def reconnected(self) -> None:
        """Wake the watchdog: the connection was restored."""
        self._consumers_restored.set()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._subs.clear()

    async def _attach(self, sub: Subscription) -> None:
        underlay = await sub.channel.get_underlay_channel()
        ok = await underlay.basic_consume(
            sub.queue,
            sub.callback,
            no_ack=sub.no_ack,
            exclusive=sub.exclusive,
            consumer_tag=sub.tag or None,
        )
        sub.tag = ok.consumer_tag or sub.tag
        sub.underlay = underlay

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_consumers())

    async def _watch_consumers(self) -> None:
        """Re-attach consumers whose channel aio-pika renewed (reconnect or reopen).

        aio-pika restores channels, queues and bindings; consumers started on
        the underlying aiormq channel are ours to restore.
        """
        while True:
            # Woken at once by a reconnect; the periodic check also covers a
            # channel reopened after a channel-level error.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._consumers_restored.wait(), 2.0)
            self._consumers_restored.clear()
            await self._reattach_all()

    async def _reattach_all(self) -> None:
        for sub in list(self._subs.values()):
            underlay = sub.underlay
            if underlay is not None and not underlay.is_closed:
                continue
            if sub.channel.is_closed:
                continue
            try:
                await asyncio.wait_for(self._attach(sub), self.timeout)
                log.info("consumer of %s restored", sub.queue)
            except Exception as exc:
                log.warning("could not restore the consumer of %s yet: %s", sub.queue, exc)
                self._retry_reattach()

    def _retry_reattach(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, self._consumers_restored.set)

    async def cancel(self, consumer: Consumer, close_channel: bool = False) -> None:
        """Stop ``consumer`` (see :meth:`AmqpTransport.cancel`)."""
        sub = self._subs.pop(consumer.tag, None)
        if sub is None:
            return
        try:
            if sub.underlay is not None:
                await sub.underlay.basic_cancel(consumer.tag)
        except (*RETRYABLE, aio_pika.exceptions.AMQPError) as exc:
            log.debug("cancel of %s failed: %s", consumer.tag, exc)
        if close_channel:
            with contextlib.suppress(Exception):
                await sub.channel.close()

    def consumers(self) -> list[Consumer]:
        return [Consumer(sub.queue, tag) for tag, sub in self._subs.items()]


async def read_stream(
    connection: aio_pika.abc.AbstractRobustConnection,
    spec: QueueSpec,
    offset: Any,
    handler: Callable[[bytes], None],
    idle: float = 0.5,
    limit: float = 60.0,
) -> int:
    """Read a stream queue from ``offset`` until it stays idle for ``idle`` s.

    Args:
        connection: the connection to open a channel on.
        spec: the stream queue.
        offset: ``"first"``, ``"last"``, ``"next"``, an int offset, or a
            ``datetime`` (messages since then).
        handler: called with each message body, in stream order.
        idle: stop once no message arrived for this long.
        limit: stop after this many seconds in any case.

    Returns:
        The number of messages read.
    """
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=1000)
        try:
            # Passive: the stream is its coordinator's; readers only check it exists.
            queue = await channel.declare_queue(spec.name, passive=True, robust=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0  # no coordinator has stored anything yet
        seen = 0
        last = asyncio.get_running_loop().time()

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen, last
            seen += 1
            last = asyncio.get_running_loop().time()
            try:
                handler(msg.body)
            finally:
                await msg.ack()

        tag = await queue.consume(on_message, arguments={"x-stream-offset": offset}, robust=False)
        started = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(idle / 4)
            now = asyncio.get_running_loop().time()
            if now - last >= idle or now - started >= limit:
                break
        await queue.cancel(tag)
        return seen
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
