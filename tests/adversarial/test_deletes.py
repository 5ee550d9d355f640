"""Attack 2: deleting the queues others depend on.

Deleting a queue needs *configure* on it. Under least privilege a worker has
it on its own queues only, so the broker refuses the dead-letter queue,
another agent's inbox and the task queue. The shared guest login configures
everything: the deletions succeed, and the test records what the fleet does
without the queue and that restarting its owner brings it back (the test
repairs the fleet that way, for the tests after it).
"""

from __future__ import annotations

import asyncio

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import pytest

from robeing.broker import topology as topo
from robeing.protocol.errors import BrokerError, RobeingError

from .attacker import Attacker
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]


async def _exists(fleet: Fleet, queue: str) -> bool:
    try:
        await fleet.queue(queue)
    except BrokerError as exc:  # the management API's 404
        if " 404 " not in str(exc):
            raise
        return False
    return True


async def _use(fleet: Fleet, victim: str) -> str:
    """What the fleet does with the victim queue now: 'works' or the error it meets."""
    if victim == "dead-letters":  # (a client starting would declare it again)
        return await _dead_letter_kept(fleet)
    try:
        async with fleet.client("alice") as alice:
            if victim == "tasks":
                handle = await alice.submit("add", {"a": 1, "b": 2})
                final = await handle.result(10)
                return "works" if final.result == 3 else f"wrong result {final}"
            if victim == "inbox":  # a confirmed send first: is it routed at all?
                await alice.send(fleet.ids["w1"], "note", "hello")
                await alice.send(fleet.ids["w1"], "note", "hello", requires_ack=True, timeout=5)
                return "works"
    except (RobeingError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:160]
    raise AssertionError(victim)


async def _dead_letter_kept(fleet: Fleet) -> str:
    """Whether a message w1 refuses now is kept in robeing.dead-letters."""

    async def count(conn: aio_pika.abc.AbstractConnection) -> int | None:
        ch = await conn.channel()
        try:
            q = await ch.declare_queue(topo.DEAD_LETTER_QUEUE, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        n = q.declaration_result.message_count
        await ch.close()
        return n

    async with await aio_pika.connect(fleet.admin_url) as conn:  # the operator looks
        before = await count(conn)
        ch = await conn.channel()
        direct = await ch.get_exchange(topo.DIRECT_EXCHANGE, ensure=False)
        await direct.publish(aio_pika.Message(b"not an envelope"), routing_key=fleet.ids["w1"])
        for _ in range(50):
            await asyncio.sleep(0.1)
            after = await count(conn)
            if after is not None and after > (before or 0):
                return "works"
    return "a dead letter of w1 was dropped: no robeing.dead-letters"


# victim -> (queue name, who redeclares it when restarted)
VICTIMS = {
    "dead-letters": (lambda ids: topo.DEAD_LETTER_QUEUE, "w2"),
    "inbox": (lambda ids: topo.agent_queue(ids["w1"]), "w1"),
    "tasks": (lambda ids: topo.TASK_QUEUE, "coordinator"),
}


@pytest.mark.parametrize("victim", list(VICTIMS))
async def test_deleting_a_queue_one_does_not_own(fleet: Fleet, victim: str, finding) -> None:
    """Given a serving fleet and an attacker with a worker's login (least privilege) or
    guest (default),
    When it deletes robeing.dead-letters, w1's inbox or robeing.coordinator.tasks,
    Expect least privilege to refuse it (configure permission) and the queue to keep
    serving; on guest the deletion succeeds, and what the fleet meets without the queue
    is recorded — submissions refused as unroutable (none accepted and lost), messages to
    w1 unacknowledged, dead letters dropped — until the queue's owner is restarted, or
    until the owner, its consumer cancelled by the broker, declares the queue again."""
    name_of, owner = VICTIMS[victim]
    queue = name_of(fleet.ids)
    async with Attacker(fleet.login("mallory")) as mallory:
        deleted = await mallory.delete_queue(queue)
    gone = not await _exists(fleet, queue)
    after = await _use(fleet, victim)
    if deleted.allowed:
        await fleet.restart(owner)  # its owner declares it again
        if owner != "coordinator":  # a new inbox is not a new agent: let it be seen again
            await fleet.healthy()
    repaired = await _use(fleet, victim)
    state = "gone" if gone else "declared again by its owner" if deleted.allowed else "kept"
    finding(
        f"2 delete {victim}",
        "broker permission (configure)" if not deleted.allowed else "nobody",
        f"delete {deleted}; queue {state}; then: {after}; "
        f"{f'after restarting {owner}' if deleted.allowed else 'later'}: {repaired}",
    )

    assert repaired == "works"
    if fleet.least_privilege:
        assert deleted.by_permission, deleted
        assert not gone and after == "works"
    else:
        assert deleted.allowed
        # Either the fleet meets the missing queue and is refused (never silently
        # accepted and lost), or the queue's owner already declared it again: an
        # agent whose consumer the broker cancels attaches it again, declaring its
        # queue, and "works" means the message was delivered (acked, answered, kept).
        assert after == "works" or gone, (after, gone)
