"""The aio-pika implementation of :class:`~robeing.broker.base.Transport`.

Promises:
    * One robust connection per agent, named for the management UI
      (``connection_name`` client property). After a broker restart or a
      dropped connection aio-pika restores channels, queues, bindings and
      consumers; :meth:`AmqpTransport.consumers` lists what must come back,
      and the integration tests compare it with the broker's own count.
    * Given a cluster's addresses it fails over to a node that answers when
      its own is lost; aio-pika restores everything there (:mod:`.failover`).
    * Every publish goes through a confirm channel with ``mandatory`` (unless
      asked otherwise) and a timeout: it returns only once the broker has
      confirmed it, raises ``Unroutable`` if no queue took it, and never
      waits forever. Connection-level failures are retried with jittered
      exponential backoff (tenacity) inside a bounded window; a confirm that
      times out is not retried blindly (the message may have arrived) but
      raised as ``PublishTimeout``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.abc
import aiormq.exceptions
from pamqp.commands import Basic
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ..protocol.errors import BrokerError, PublishTimeout, Unroutable
from ..protocol.rejections import stored_copy
from . import queues
from . import topology as topo
from .addresses import amqp_urls, safe
from .base import Consumer, DeliveryHandler
from .consuming import (
    REFUSED,
    RETRYABLE,
    AckBatcher,
    AmqpDelivery,
    ConsumerSet,
    Subscription,
    read_stream,
    transient,
)
from .failover import Bindings, Nodes, confirmed, robust
from .lease import Lease, contend, release
from .management import vhost_of
from .topology import QueueSpec, TopologySettings

log = logging.getLogger(__name__)

Properties = Basic.Properties


@functools.lru_cache(maxsize=64)
def _properties(persistent: bool, priority: int | None) -> Properties:
    """Shared, immutable-by-convention properties for the common publishes."""
    return Properties(delivery_mode=2 if persistent else 1, priority=priority)


class AmqpTransport:
    """A robust aio-pika connection with confirmed publishing.

    Args:
        url: AMQP URL including the vhost, or several (comma-separated) for
            the nodes of one cluster.
        connection_name: shown in the management UI.
        topology: tunable topology settings.
        publish_timeout: seconds to wait for a publisher confirm.
        retry_window: total seconds a publish may spend retrying while the
            connection recovers.
        connect_attempts: rounds over the addresses for the first connection.
        seed: seeds our order of the addresses (default: pid and name: fleets spread).

    Raises:
        ConfigError: ``url`` is not a valid list of broker URLs.
    """

    def __init__(
        self,
        url: str,
        connection_name: str,
        topology: TopologySettings | None = None,
        publish_timeout: float = 10.0,
        retry_window: float = 30.0,
        connect_attempts: int = 3,
        seed: str | int | None = None,
    ) -> None:
        self.url = url
        self.nodes = Nodes(
            amqp_urls(url), seed if seed is not None else f"{os.getpid()}:{connection_name}"
        )
        self.connection_name = connection_name
        self.topology = topology or TopologySettings()
        self.publish_timeout = publish_timeout
        self.retry_window = retry_window
        self.connect_attempts = connect_attempts
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None
        self._pub: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._fast: aio_pika.abc.AbstractChannel | None = None
        self._underlay: dict[bool, aiormq.abc.AbstractChannel] = {}
        self._return_listeners: list[Callable[[str, str], None]] = []
        self._leases: dict[str, Lease] = {}
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._consumers = ConsumerSet(publish_timeout)
        self._batchers: weakref.WeakSet[AckBatcher] = weakref.WeakSet()
        self._bound = Bindings()
        self.reconnects = 0

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed and self._conn.connected.is_set()

    async def connect(self) -> None:
        """Open the connection and the confirm channel.

        Raises:
            BrokerError: the broker is unreachable or refused us (one line,
                suitable for the CLI).
        """
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((*RETRYABLE, OSError, asyncio.TimeoutError)),
                stop=stop_after_attempt(self.connect_attempts),
                wait=wait_random_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    conn = await self.nodes.connect(robust(self.connection_name))
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            refused = f"broker at {safe(self.nodes.address)} refused the credentials"
            raise BrokerError(refused) from exc
        except aiormq.exceptions.InvalidFrameError as exc:
            # The broker closed the connection instead of opening the vhost.
            raise BrokerError(
                f"broker at {safe(self.nodes.address)} refused vhost {vhost_of(self.url)!r}: "
                "it does not exist, or this user may not use it"
            ) from exc
        except Exception as exc:
            raise BrokerError(f"cannot reach the broker at {safe(self.url)}: {exc}") from exc
        self._conn = conn
        conn.reconnect_callbacks.add(self._on_reconnect)
        self.nodes.watch(conn)
        self._pub = await conn.channel(publisher_confirms=True, on_return_raises=True)
        # Unconfirmed channel for publishes whose delivery is proven otherwise
        # (a request whose ACK we await) or worthless to confirm (a reply).
        self._fast = await conn.channel(publisher_confirms=False)
        self._fast.return_callbacks.add(self._on_fast_return)

    @property
    def failovers(self) -> int:
        """How often the connection moved to another broker node."""
        return self.nodes.failovers

    def add_return_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(message_id, routing_key)`` when an unconfirmed
        mandatory publish comes back unroutable."""
        self._return_listeners.append(listener)

    def _on_fast_return(self, _channel: Any, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        for listener in self._return_listeners:
            try:
                listener(message.message_id or "", message.routing_key or "")
            except Exception:
                log.exception("return listener failed")

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every reconnect (consumers are restored by then)."""
        self._reconnect_listeners.append(listener)

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        self._consumers.reconnected()
        self._bound.after_reconnect(self.nodes.failovers, self.bind)
        log.info("reconnected to the broker at %s (%d)", safe(self.nodes.address), self.reconnects)
        self._tell_reconnect_listeners()

    def _tell_reconnect_listeners(self) -> None:
        for listener in self._reconnect_listeners:
            try:
                listener()
            except Exception:
                log.exception("reconnect listener failed")

    async def close(self) -> None:
        await self.nodes.close()
        await release(self._leases)  # given up on purpose: no holder is told it lost one
        if self._conn is not None and not self._conn.is_closed:
            # Acks still gathering (a loop turn, or ack_delay) go out first: else they come back.
            for batcher in list(self._batchers):
                await batcher.drain()
            await self._conn.close()
        self._consumers.close()
        self._exchanges.clear()

    def _connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._conn is None:
            raise BrokerError("not connected")
        return self._conn

    def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._pub is None:
            raise BrokerError("not connected")
        return self._pub

    async def declare_topology(self, owner: bool = False) -> None:
        """Declare the shared topology (``owner``), or only what any process may.

        See :func:`robeing.broker.queues.declare_topology`.

        Raises:
            BrokerError: the topology is missing and we may not declare it.
        """
        await queues.declare_topology(self._connection(), self.topology, owner, safe(self.url))

    async def declare_queue(self, spec: QueueSpec) -> None:
        """Declare ``spec`` (idempotent).

        Raises:
            BrokerError: the queue exists with other arguments, or we may not.
        """
        await queues.on_own_channel(self._connection(), lambda ch: queues.declare(ch, spec))

    async def bind(self, queue: str, exchange: str, routing_key: str = "") -> None:
        """Bind ``queue`` (kept in mind: bound again on the node we fail over to)."""
        await queues.on_own_channel(
            self._connection(), lambda ch: queues.bind(ch, queue, exchange, routing_key)
        )
        self._bound.remember(queue, exchange, routing_key)

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
    ) -> None:
        """Publish and wait for the broker's confirm.

        With ``confirm=False`` the message goes out on an unconfirmed channel
        and this returns once it is written; an unroutable mandatory publish
        is then reported to the return listeners with ``message_id``.

        Raises:
            Unroutable: ``mandatory`` and no queue is bound for the key.
            PublishTimeout: no confirm within ``timeout``.
            BrokerError: nacked, or the connection did not recover in time.
        """
        if headers or expiration_s is not None or message_id is not None:
            props = Properties(
                message_id=message_id,
                delivery_mode=2 if persistent else 1,
                priority=priority,
                expiration=str(int(expiration_s * 1000)) if expiration_s is not None else None,
                headers=dict(headers) if headers else None,
            )
        else:
            props = _properties(persistent, priority)
        timeout = timeout or self.publish_timeout
        try:
            try:
                await self._publish_once(
                    exchange, routing_key, body, props, mandatory, timeout, confirm
                )
                return
            except REFUSED:
                raise
            except RETRYABLE:
                if not retry:
                    raise
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(transient),
                stop=stop_after_delay(self.retry_window) | stop_after_attempt(50),
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                reraise=True,
            ):
                with attempt:
                    await self._publish_once(
                        exchange, routing_key, body, props, mandatory, timeout, confirm
                    )
        except aio_pika.exceptions.PublishError as exc:
            raise Unroutable(f"no queue for {exchange or '(default)'}/{routing_key}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerError(f"broker refused the message for {routing_key}: {exc}") from exc
        except TimeoutError as exc:
            raise PublishTimeout(f"no confirm for {routing_key} within {timeout}s") from exc
        except REFUSED as exc:
            # A refusal (bad expiration, no permission, unknown exchange) would
            # be refused again: report it, the channel reopens by itself.
            raise BrokerError(
                f"broker refused the publish to {exchange or '(default)'}/{routing_key}: "
                f"{exc.args[0] if exc.args else exc}"
            ) from exc
        except RETRYABLE as exc:
            raise BrokerError(f"publish to {routing_key} failed: {exc}") from exc

    async def _publish_once(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: Properties,
        mandatory: bool,
        timeout: float,
        confirm: bool = True,
    ) -> None:
        # Straight to aiormq: aio-pika's Message and Exchange wrappers cost
        # ~25 µs per publish on the hot path and add nothing we use. The
        # underlying channel changes after a reconnect, so it is re-fetched
        # (waiting at most ``timeout`` for the connection) when closed.
        channel = self._underlay.get(confirm)
        if channel is None or channel.is_closed:
            wrapper = self._channel() if confirm else self._fast
            if wrapper is None:
                raise BrokerError("not connected")
            channel = await asyncio.wait_for(wrapper.get_underlay_channel(), timeout)
            self._underlay[confirm] = channel
        await confirmed(
            channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=props,
                mandatory=mandatory, timeout=timeout,
            )
        )  # fmt: skip

    async def consume(
        self,
        spec: QueueSpec,
        handler: DeliveryHandler,
        prefetch: int = 32,
        bindings: Sequence[tuple[str, str]] = (),
        no_ack: bool = False,
        exclusive: bool = False,
        ack_delay: float | None = 0.0,
    ) -> Consumer:
        """Declare ``spec`` on its own channel (own prefetch), bind it, consume it.

        The channel, queue, ``bindings`` (exchange, routing key) and consumer
        are robust: aio-pika restores all of them after a reconnect, which
        matters for exclusive queues that a broker restart deletes. With
        ``no_ack`` the broker forgets a message once sent (for replies, which
        are worthless after a crash anyway); settling is then a no-op. An
        ``exclusive`` consumer is the queue's only one: the broker refuses it
        while another consumes, and any other while it does. Acks are batched
        per channel (:class:`~.consuming.AckBatcher`): sent at the end of the
        loop turn, or after ``ack_delay`` seconds; ``None`` sends each at once.
        """
        if self._conn is None:
            raise BrokerError("not connected")
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=prefetch)
        with queues.explain_mismatch(spec.name):
            queue = await channel.declare_queue(
                spec.name,
                durable=spec.durable,
                exclusive=spec.exclusive,
                auto_delete=spec.auto_delete,
                arguments=spec.arguments,
            )
        for exchange, routing_key in bindings:
            await queue.bind(exchange, routing_key=routing_key)
        name = spec.name
        batcher: AckBatcher | None = None

        async def on_message(msg: aiormq.abc.DeliveredMessage) -> None:
            nonlocal batcher
            acks = None
            if ack_delay is not None and not no_ack:
                # Tags are per channel: a renewed channel (reconnect) gets a new batcher.
                if batcher is None or batcher.channel is not msg.channel:
                    batcher = AckBatcher(msg.channel, ack_delay)
                    self._batchers.add(batcher)
                acks = batcher
            await handler(AmqpDelivery(msg, name, self._dead_letter_once, no_ack, acks))

        return await self._consumers.add(Subscription(name, channel, on_message, no_ack, exclusive))

    async def _dead_letter_once(
        self, body: bytes, source: str, reason: str, detail: str, headers: Mapping[str, Any]
    ) -> None:
        # A delivery's dead letter is not retried: if it cannot be confirmed,
        # the delivery is rejected to its queue's own DLX instead.
        await self.dead_letter(body, source, reason, detail, headers, retry=False)

    async def cancel(self, consumer: Consumer, close_channel: bool = False) -> None:
        """Stop ``consumer``; with ``close_channel`` also close its channel.

        By default only basic.cancel: the channel stays open so in-flight
        deliveries can still be acknowledged (closing it would also cancel
        their handler tasks); it closes with the connection. A temporary
        consumer (a status listener) closes it, or every use would leak a
        channel until ``channel_max`` is reached.
        """
        await self._consumers.cancel(consumer, close_channel)

    def consumers(self) -> list[Consumer]:
        return self._consumers.consumers()

    async def dead_letter(
        self,
        body: bytes,
        source: str,
        reason: str,
        detail: str,
        headers: Mapping[str, Any] | None = None,
        *,
        retry: bool = True,
    ) -> None:
        """Publish ``body`` to the dead-letter exchange, the reason in its headers.

        The one way robeing dead-letters anything: rejected deliveries and
        tasks that used up their attempts alike. A body over
        :data:`~robeing.protocol.rejections.MAX_STORED` is stored truncated,
        its original size in ``x-robeing-size``.

        Raises:
            BrokerError: the broker did not confirm it.
        """
        stored = stored_copy(body)
        merged = dict(headers or {})
        merged.update(
            {
                topo.REASON_HEADER: reason,
                topo.DETAIL_HEADER: detail[:500],
                topo.SOURCE_HEADER: source,
                topo.AT_HEADER: time.time(),
            }
        )
        if len(stored) < len(body):
            merged[topo.SIZE_HEADER] = len(body)
        await self.publish(
            topo.DEAD_EXCHANGE, source, stored, headers=merged, mandatory=False, retry=retry
        )

    async def try_exclusive(self, spec: QueueSpec) -> bool:
        """Hold the lock ``spec.name`` (:func:`.lease.contend`)? Its loss is told as a reconnect.

        Raises:
            BrokerError: the broker refuses the lock queue for good.
        """
        return await contend(self._leases, self._conn, spec.name, self._tell_reconnect_listeners)

    async def delete_if_empty(self, queue: str) -> bool:
        """Delete ``queue`` unless it holds messages; True if it is gone."""
        if self._conn is None:
            return False
        return await queues.delete_if_empty(self._conn, queue)

    async def peek(self, queue: str) -> bytes | None:
        """The first message of ``queue``, left in place (None if empty)."""
        return await confirmed(queues.peek(self._connection(), queue))

    async def consumer_count(self, queue: str) -> int:
        """How many consumers ``queue`` has."""
        return await queues.consumer_count(self._connection(), queue)

    async def purge(self, queue: str) -> int:
        """Drop every ready message of ``queue``; returns how many."""
        return await queues.purge(self._connection(), queue)

    async def hold(self, queue: str, limit: int) -> queues.Held:
        """Take up to ``limit`` messages of ``queue`` unsettled (see :class:`.queues.Held`)."""
        return await queues.hold(self._connection(), queue, limit)

    async def read_stream(
        self,
        spec: QueueSpec,
        offset: Any,
        handler: Callable[[bytes], None],
        idle: float = 0.5,
        limit: float = 60.0,
    ) -> int:
        """Read a stream queue from ``offset`` until it stays idle (see :func:`read_stream`)."""
        return await read_stream(self._connection(), spec, offset, handler, idle, limit)
