"""The attacker: a plain aio-pika client with a stolen broker login, never robeing's code.

It opens one AMQP connection (named as it likes), runs each attempt on a
channel of its own, and reports what the broker did with it: ``allowed``
(and what it got) or refused, with the broker's reply code and text. It
reads what it obtains as raw bytes and, where that is msgpack, decodes it —
everything a real attacker can do without robeing's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import msgpack

Channel = aio_pika.abc.AbstractChannel
SIGNATURE = 64  # bytes before a robeing envelope's msgpack body


@dataclass
class Outcome:
    """What the broker did with one attempt."""

    allowed: bool
    refusal: str = ""  # e.g. "ACCESS_REFUSED - access to queue ... refused for user ..."
    value: Any = None

    @property
    def by_permission(self) -> bool:
        """Refused by the user's permissions (not by an exclusive owner or a lock)."""
        return "ACCESS_REFUSED" in self.refusal and "refused for user" in self.refusal

    def __str__(self) -> str:
        return "allowed" if self.allowed else f"refused: {self.refusal}"


@dataclass
class Loot:
    """Messages the attacker took from a queue (and acknowledged: they are gone)."""

    bodies: list[bytes] = field(default_factory=list)
    routing_keys: list[str] = field(default_factory=list)

    def envelopes(self) -> list[dict[str, Any]]:
        """The envelope fields readable without any key (sender, type, payload if clear)."""
        return [f for b in self.bodies if (f := envelope_fields(b)) is not None]

    def contains(self, secret: bytes) -> bool:
        return any(secret in b for b in self.bodies)


def envelope_fields(body: bytes) -> dict[str, Any] | None:
    """The msgpack map after the signature, as anyone can read it; None if it is not one."""
    with contextlib.suppress(Exception):
        fields = msgpack.unpackb(body[SIGNATURE:], raw=False, strict_map_key=False)
        if isinstance(fields, dict):
            return fields
    return None


class Attacker:
    """One AMQP connection with a stolen login.

    Args:
        url: the AMQP URL, login and vhost included.
        name: the connection name it claims (anyone may claim any).
    """

    def __init__(self, url: str, name: str = "mallory") -> None:
        self.url = url
        self.name = name
        self.conn: aio_pika.abc.AbstractConnection | None = None
        self._held: list[Channel] = []

    async def __aenter__(self) -> Attacker:
        self.conn = await aio_pika.connect(
            self.url, client_properties={"connection_name": self.name}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None

    async def attempt(
        self, action: Callable[[Channel], Awaitable[Any]], keep: bool = False
    ) -> Outcome:
        """Run ``action`` on a fresh channel; the channel stays open when ``keep``."""
        assert self.conn is not None
        channel = await self.conn.channel()
        try:
            value = await action(channel)
        except aiormq.exceptions.AMQPError as exc:
            with contextlib.suppress(Exception):
                await channel.close()
            return Outcome(False, _refusal(exc))
        if keep:
            self._held.append(channel)
        else:
            with contextlib.suppress(Exception):
                await channel.close()
        return Outcome(True, value=value)

    # -- the attacks' building blocks ---------------------------------------------------

    async def consume(self, queue: str, loot: Loot, exclusive: bool = False) -> Outcome:
        """Attach a consumer that takes and acknowledges whatever ``queue`` hands it."""

        async def take(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            loot.bodies.append(msg.body)
            loot.routing_keys.append(msg.routing_key or "")
            await msg.ack()

        async def go(ch: Channel) -> str:
            q = await ch.get_queue(queue, ensure=False)
            return await q.consume(take, exclusive=exclusive)

        return await self.attempt(go, keep=True)

    async def get_all(self, queue: str, loot: Loot, limit: int = 1000) -> Outcome:
        """basic.get and acknowledge what is ready in ``queue``."""

        async def go(ch: Channel) -> int:
            q = await ch.get_queue(queue, ensure=False)
            n = 0
            while n < limit and (msg := await q.get(no_ack=False, fail=False)) is not None:
                loot.bodies.append(msg.body)
                await msg.ack()
                n += 1
            return n

        return await self.attempt(go)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        mandatory: bool = False,
    ) -> Outcome:
        """Publish ``body`` (``exchange`` "" is the default exchange), waiting for the confirm."""

        async def go(ch: Channel) -> None:
            ex = (
                ch.default_exchange
                if not exchange
                else await ch.get_exchange(exchange, ensure=False)
            )
            msg = aio_pika.Message(body, headers=headers or {})
            await ex.publish(msg, routing_key=routing_key, mandatory=mandatory)

        return await self.attempt(go)

    async def purge(self, queue: str) -> Outcome:
        async def go(ch: Channel) -> None:
            await (await ch.get_queue(queue, ensure=False)).purge()

        return await self.attempt(go)

    async def delete_queue(self, queue: str) -> Outcome:
        return await self.attempt(lambda ch: ch.queue_delete(queue))

    async def declare_exclusive(self, queue: str) -> Outcome:
        """Declare ``queue`` exclusive (owned by this connection while it lives)."""

        async def go(ch: Channel) -> None:
            await ch.declare_queue(queue, durable=False, exclusive=True, auto_delete=True)

        return await self.attempt(go, keep=True)

    async def bind_copy(self, queue: str, exchange: str, key: str, loot: Loot) -> Outcome:
        """Declare ``queue`` of its own, bind it to ``exchange`` under ``key``, consume copies."""

        async def go(ch: Channel) -> None:
            q = await ch.declare_queue(queue, durable=False, exclusive=True, auto_delete=True)
            await q.bind(exchange, routing_key=key)

        bound = await self.attempt(go, keep=True)
        if not bound.allowed:
            return bound
        return await self.consume(queue, loot)

    async def read_stream(self, stream: str, loot: Loot, idle: float = 1.0) -> Outcome:
        """Read a stream queue from its first record until it stays idle."""

        async def go(ch: Channel) -> int:
            await ch.set_qos(prefetch_count=100)
            q = await ch.get_queue(stream, ensure=False)
            got = asyncio.Event()

            async def take(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                loot.bodies.append(msg.body)
                got.set()
                await msg.ack()

            tag = await q.consume(take, arguments={"x-stream-offset": "first"})
            while True:
                got.clear()
                try:
                    await asyncio.wait_for(got.wait(), idle)
                except TimeoutError:
                    break
            await q.cancel(tag)
            return len(loot.bodies)

        return await self.attempt(go)


async def open_and_close(url: str, name: str, times: int) -> int:
    """Open and close ``times`` connections named ``name``; returns how many opened."""
    opened = 0
    for _ in range(times):
        conn = await aio_pika.connect(url, client_properties={"connection_name": name})
        opened += 1
        await conn.close()
    return opened


def queue_name(prefix: str) -> str:
    return f"{prefix}.{os.urandom(3).hex()}"


def _refusal(exc: BaseException) -> str:
    """``CODE - text`` of an AMQP refusal."""
    args = getattr(exc, "args", ())
    frame = args[0] if args else None
    code = getattr(frame, "reply_text", None) if frame is not None else None
    return str(code or exc)
