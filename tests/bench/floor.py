"""The design floor: robeing's task path over the broker, with no work at any hop.

A robeing task crosses four broker hops, which its design requires (DESIGN
§3-§4): the submission into the durable quorum task queue, confirmed;
coordinator → worker; worker → coordinator, where stale attempts are fenced;
coordinator → submitter. This module sends a message along the same queues
with nothing else: no signatures, no encryption, no scheduling, no
bookkeeping, straight on aiormq (the layer robeing's hot path uses). Its
round trip is the least any implementation of that design can achieve on
this broker and machine, so :mod:`bench_tasks` reports it beside robeing and
Celery (which crosses two hops).

Processes: one *relay* (the coordinator's place) and two *echo* servers (the
workers' places), started by ``bench_tasks.py`` with ``--floor-relay`` and
``--floor-echo``; the client side is :func:`floor_client`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

TASKS = "bench.floor.tasks"  # quorum, like robeing.coordinator.tasks
INBOX = "bench.floor.inbox"  # the relay's inbox for results
WORKERS = 2


def work_queue(index: int) -> str:
    return f"bench.floor.work.{index}"


async def _channel(url: str, prefetch: int = 0) -> tuple[Any, Any]:
    import aiormq

    conn = await aiormq.connect(url)
    channel = await conn.channel()
    if prefetch:
        await channel.basic_qos(prefetch_count=prefetch)
    return conn, channel


async def relay_main(url: str, prefetch: int) -> None:
    """Take submissions from the quorum queue, hand them to the echo servers in
    turn, and pass each result back to its submitter; ack the submission then."""
    import aiormq
    from pamqp.commands import Basic

    _conn, ch = await _channel(url, prefetch)
    await ch.queue_declare(TASKS, durable=True, arguments={"x-queue-type": "quorum"})
    await ch.queue_declare(INBOX)
    for i in range(WORKERS):
        await ch.queue_declare(work_queue(i))
    turn = itertools.cycle(range(WORKERS))
    pending: dict[str, tuple[str, int]] = {}  # correlation id -> (reply queue, delivery tag)

    async def on_submission(msg: aiormq.abc.DeliveredMessage) -> None:
        props = msg.header.properties
        cid = props.correlation_id or ""
        pending[cid] = (props.reply_to or "", msg.delivery.delivery_tag or 0)
        await ch.basic_publish(
            msg.body,
            routing_key=work_queue(next(turn)),
            properties=Basic.Properties(correlation_id=cid),
        )

    async def on_result(msg: aiormq.abc.DeliveredMessage) -> None:
        cid = msg.header.properties.correlation_id or ""
        reply_to, tag = pending.pop(cid)
        await ch.basic_publish(
            msg.body, routing_key=reply_to, properties=Basic.Properties(correlation_id=cid)
        )
        await ch.basic_ack(tag)

    await ch.basic_consume(TASKS, on_submission)
    await ch.basic_consume(INBOX, on_result, no_ack=True)
    print("ready", flush=True)
    await asyncio.Future()


async def echo_main(url: str, index: int, prefetch: int) -> None:
    """Hash the text of each message and send the digest to the relay."""
    import aiormq
    import msgpack
    from pamqp.commands import Basic

    _conn, ch = await _channel(url, prefetch)
    queue = work_queue(index)
    await ch.queue_declare(queue)

    async def on_message(msg: aiormq.abc.DeliveredMessage) -> None:
        digest = hashlib.sha256(msgpack.unpackb(msg.body).encode()).hexdigest()
        await ch.basic_publish(
            msgpack.packb(digest),
            routing_key=INBOX,
            properties=Basic.Properties(correlation_id=msg.header.properties.correlation_id),
        )
        await ch.basic_ack(msg.delivery.delivery_tag)

    await ch.basic_consume(queue, on_message)
    print("ready", flush=True)
    await asyncio.Future()


async def floor_client(
    url: str, text: str, check: Callable[[Any], None]
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """A ``call()`` that sends one task along the floor path and checks its
    result, and a ``close()``. Submissions are persistent and confirmed."""
    import aiormq
    import msgpack
    from pamqp.commands import Basic

    conn = await aiormq.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    reply = (await ch.queue_declare("", exclusive=True, auto_delete=True)).queue
    futures: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(msg: aiormq.abc.DeliveredMessage) -> None:
        fut = futures.pop(msg.header.properties.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg.body)

    await ch.basic_consume(reply, on_reply, no_ack=True)
    body = msgpack.packb(text)
    loop = asyncio.get_running_loop()

    async def call() -> None:
        cid = uuid.uuid4().hex
        fut = futures[cid] = loop.create_future()
        props = Basic.Properties(correlation_id=cid, reply_to=reply, delivery_mode=2)
        await ch.basic_publish(body, routing_key=TASKS, properties=props)
        check(msgpack.unpackb(await asyncio.wait_for(fut, 120.0)))

    return call, conn.close
