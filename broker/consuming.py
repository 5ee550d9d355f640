"""Consuming over aio-pika: deliveries, and consumers that survive reconnects.

aio-pika restores channels, queues and bindings after a reconnect; consumers
started on the underlying aiormq channel (to skip aio-pika's per-message
wrapper) are ours to restore, which :class:`ConsumerSet` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from .failover import confirmed
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


def transient(exc: BaseException) -> bool:
    """Worth retrying: the connection is (temporarily) gone, nothing was refused."""
    return isinstance(exc, RETRYABLE) and not isinstance(exc, REFUSED)


DeadLetterPublish = Callable[[bytes, str, str, str, Mapping[str, Any]], Awaitable[None]]
"""``(body, source queue, reason, detail, headers)``: publish to the dead-letter exchange."""


class AckBatcher:
    """Acknowledges the deliveries of one channel in runs: one ``basic.ack(multiple)`` each.

    Acks made in one turn of the event loop (or within ``delay`` seconds) go
    out together when the loop comes back to us: one ``basic.ack`` with
    ``multiple=True`` for the longest run of settled deliveries above the
    last one acknowledged on the wire. An ack costs a frame, a socket write
    and the broker's work per frame; under load this turns one per message
    into one per batch.

    Invariant: an ack never covers an unsettled delivery. The multiple ack
    names tag T only when every tag <= T delivered on this channel was
    settled: acknowledged by its handler (waiting here), or rejected or
    requeued, which go out individually at once and count as settled only
    once written (so a multiple ack cannot overtake them). A delivery still
    in the hands of its handler breaks the run; the acks above it are then
    sent one by one at the same flush, so none waits on a long-held delivery
    (and the prefetch window never fills with finished work).

    A batch not yet written when the connection drops is redelivered by the
    broker: at-least-once, as for an ack lost on the wire (DESIGN §4); a
    transport that closes on purpose drains its batchers first. Tags belong
    to one channel: a renewed channel gets a new batcher.

    Args:
        channel: the aiormq channel the deliveries came on.
        delay: seconds to gather acks before a flush (0: the end of this loop turn).
    """

    __slots__ = ("__weakref__", "_floor", "_handle", "_settled", "channel", "delay", "frames")

    def __init__(self, channel: aiormq.abc.AbstractChannel, delay: float = 0.0) -> None:
        self.channel = channel
        self.delay = delay
        self._floor = 0  # every tag <= floor is settled on the wire
        # Tags above the floor: True = acked by its handler, unsent; False = settled on the wire.
        self._settled: dict[int, bool] = {}
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self.frames = 0  # basic.ack frames sent (for tests and benchmarks)

    def ack(self, tag: int) -> None:
        """Acknowledge ``tag`` at the next flush."""
        self._settled[tag] = True
        if self._handle is None:
            loop = asyncio.get_running_loop()
            if self.delay > 0:
                self._handle = loop.call_later(self.delay, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)

    async def settle(self, tag: int, op: Awaitable[Any]) -> None:
        """Send a reject or requeue of ``tag`` (``op``) now; it counts as settled once written."""
        await op
        if tag > self._floor:
            self._settled[tag] = False

    async def drain(self) -> None:
        """Send what is pending now and wait for those writes (before closing the channel)."""
        if self._handle is not None:
            self._handle.cancel()
            self._flush()
        await asyncio.gather(*list(_WRITES), return_exceptions=True)

    def _flush(self) -> None:
        self._handle = None
        tag, last_ack = self._floor + 1, 0
        while tag in self._settled:
            if self._settled.pop(tag):
                last_ack = tag
            tag += 1
        self._floor = tag - 1
        if last_ack:
            self._send(last_ack, True)
        for above, pending in self._settled.items():
            if pending:  # behind a delivery still being handled: alone, now
                self._settled[above] = False
                self._send(above, False)

    def _send(self, tag: int, multiple: bool) -> None:
        self.frames += 1
        task = asyncio.ensure_future(self._write(tag, multiple))
        _WRITES.add(task)
        task.add_done_callback(_WRITES.discard)

    async def _write(self, tag: int, multiple: bool) -> None:
        try:
            await self.channel.basic_ack(tag, multiple=multiple)
        except (aiormq.exceptions.AMQPError, *RETRYABLE) as exc:
            # The channel died with the tags: the broker will redeliver.
            log.debug("could not acknowledge up to %d (%s); it will be redelivered", tag, exc)


_WRITES: set[asyncio.Future[None]] = set()  # ack writes in flight (kept from the GC)


class AmqpDelivery:
    """A received message; AMQP stays inside this module.

    Built straight from aiormq's frame: aio-pika's IncomingMessage costs
    ~24 µs per message (measured) and adds nothing we use.
    """

    __slots__ = (
        "_acks",
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
        acks: AckBatcher | None = None,
    ) -> None:
        delivery = msg.delivery
        assert isinstance(delivery, Basic.Deliver)  # consumers only ever get Deliver frames
        props = msg.header.properties
        self._channel = msg.channel
        self._tag: int = delivery.delivery_tag or 0
        self._no_ack = no_ack
        self._acks = acks  # None: each ack is sent alone, at once
        self._dead_letter = dead_letter
        self.body = msg.body
        self.redelivered = bool(getattr(delivery, "redelivered", False))
        self.routing_key = delivery.routing_key or ""
        self.reply_to = props.reply_to
        self.headers: Mapping[str, Any] = props.headers or {}
        self.queue = queue

    async def ack(self) -> None:
        if self._no_ack:
            return
        if self._acks is not None:
            self._acks.ack(self._tag)
        else:
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
        if self._acks is not None:
            op = self._acks.settle(self._tag, op)
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
        underlay.on_consumer_cancel_callbacks.add(functools.partial(self._cancelled, sub))

    def _cancelled(self, sub: Subscription, frame: Any) -> None:
        """The broker cancelled ``sub`` (its queue was deleted: it was on a node that went down).

        Attach it again: the attempt fails while the queue is missing, which
        closes the channel; aio-pika reopens it and declares the queue again
        (on the node we are on), and the next attempt consumes it. Left
        alone, an agent would keep running without its inbox or work queue.
        """
        if getattr(frame, "consumer_tag", None) != sub.tag or self._subs.get(sub.tag) is not sub:
            return
        log.warning("the broker cancelled our consumer of %s: restoring it", sub.queue)
        sub.underlay = None
        self._consumers_restored.set()

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
                # A connection dying under us cancels the call: that is no
                # cancellation of our task (see confirmed), and must not end a
                # stop; nor may a node that never answers hold the stop up.
                cancel = confirmed(sub.underlay.basic_cancel(consumer.tag))
                await asyncio.wait_for(cancel, self.timeout)
        except (*RETRYABLE, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
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
