"""Coalescer: one send per flush, no timer, errors reach every waiter of a batch."""

from __future__ import annotations

import asyncio

from robeing.agents.batching import Coalescer


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on = fail_on

    async def send(self, key: str, items: list[int]) -> None:
        await self.gate.wait()
        self.sent.append((key, items))
        if self.fail_on is not None and self.fail_on in items:
            raise ConnectionError("broker said no")


async def test_an_idle_coalescer_sends_at_once() -> None:
    """Given nothing in flight, When one item is put, Expect it sent alone and put to return."""
    rec = Recorder()
    c = Coalescer(rec.send)
    await asyncio.wait_for(c.put("k", [1]), 1)
    assert rec.sent == [("k", [1])]


async def test_items_arriving_during_a_flush_form_the_next_batch() -> None:
    """Given a flush in flight, When more items arrive, Expect them in one following send."""
    rec = Recorder()
    rec.gate.clear()
    c = Coalescer(rec.send)
    first = asyncio.create_task(c.put("k", [1]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(c.put("k", [n])) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    rec.gate.set()
    await asyncio.gather(first, *rest)
    assert rec.sent == [("k", [1]), ("k", [2, 3, 4])]
    assert c.flushes == 2


async def test_a_failed_send_fails_every_waiter_of_its_batch_only() -> None:
    """Given a send that fails for one batch, Expect its waiters to raise and the others not."""
    rec = Recorder(fail_on=2)
    rec.gate.clear()
    c = Coalescer(rec.send, max_batch=2)
    first = asyncio.create_task(c.put("k", [0]))  # idle: sent at once, held at the gate
    await asyncio.sleep(0)
    puts = [asyncio.create_task(c.put("k", [n])) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    rec.gate.set()
    results = await asyncio.gather(first, *puts, return_exceptions=True)
    assert [isinstance(r, ConnectionError) for r in results] == [False, True, True, False]
    assert rec.sent == [("k", [0]), ("k", [1, 2]), ("k", [3])]


async def test_a_failed_idle_send_raises_to_its_caller_and_the_key_recovers() -> None:
    rec = Recorder(fail_on=1)
    c = Coalescer(rec.send)
    try:
        await c.put("k", [1])
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failed send did not reach its caller")
    await c.put("k", [2])
    assert rec.sent == [("k", [1]), ("k", [2])]


def test_an_idle_put_costs_no_turn_of_the_event_loop() -> None:
    """Given a send that completes without waiting, Expect put to finish in one step
    (no flusher task to schedule: the send runs in the caller's task)."""
    sent: list[list[int]] = []

    async def send(key: str, items: list[int]) -> None:
        sent.append(items)

    put = Coalescer(send).put("k", [7])
    try:
        put.send(None)
    except StopIteration:
        pass
    else:
        put.close()
        raise AssertionError("put suspended: the send did not run inline")
    assert sent == [[7]]


async def test_keys_are_independent() -> None:
    rec = Recorder()
    c = Coalescer(rec.send)
    await asyncio.gather(c.put("a", [1]), c.put("b", [2]))
    assert sorted(rec.sent) == [("a", [1]), ("b", [2])]


async def test_putting_nothing_returns_at_once() -> None:
    rec = Recorder()
    await asyncio.wait_for(Coalescer(rec.send).put("k", []), 1)
    assert rec.sent == []
