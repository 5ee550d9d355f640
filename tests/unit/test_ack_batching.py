"""AckBatcher (broker/consuming.py): acks in runs, never one that covers an unsettled delivery.

Given deliveries on one channel settled in any order — acked, requeued or
rejected, some held by their handler past a flush — with flushes at any
point, expect on the simulated wire:

* every ``basic.ack`` names an outstanding tag, and a multiple ack covers
  only tags whose handler acknowledged them (never one still being handled,
  never one requeued or rejected);
* once every delivery is settled and the last flush ran, nothing is
  outstanding and each acknowledged delivery was acknowledged exactly once;
* acks of one loop turn go out as one frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.broker.consuming import AckBatcher


class Wire:
    """A channel as the broker sees it: which tags are outstanding."""

    def __init__(self) -> None:
        self.outstanding: set[int] = set()
        self.acked_by_handler: set[int] = set()
        self.acked_on_wire: list[int] = []
        self.frames: list[tuple[str, int, bool]] = []
        self.violations: list[str] = []  # what the broker would refuse, or a lost message

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        if tag not in self.outstanding:
            self.violations.append(f"ack of unknown tag {tag}")  # the broker closes the channel
            return
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        unsettled = covered - self.acked_by_handler
        if unsettled:
            self.violations.append(f"ack up to {tag} covers unsettled {sorted(unsettled)}")
        self.outstanding -= covered
        self.acked_on_wire += sorted(covered)
        self.frames.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        assert tag in self.outstanding
        self.outstanding.discard(tag)
        self.frames.append(("nack", tag, False))

    async def basic_reject(self, tag: int, requeue: bool = False) -> None:
        assert tag in self.outstanding
        self.outstanding.discard(tag)
        self.frames.append(("reject", tag, False))


async def _settle_all(wire: Wire, batcher: AckBatcher, plan: list[tuple[int, str, bool]]) -> None:
    held: list[tuple[int, str]] = []
    for tag, _, _ in plan:
        wire.outstanding.add(tag)  # delivered
    for tag, how, hold in plan:
        if hold:  # its handler keeps it past at least one flush
            held.append((tag, how))
            continue
        await _settle(wire, batcher, tag, how)
        if tag % 3 == 0:
            await asyncio.sleep(0)  # a flush may run here
    await asyncio.sleep(0)
    for tag, how in held:
        await _settle(wire, batcher, tag, how)
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)  # the last flush and its writes


async def _settle(wire: Wire, batcher: AckBatcher, tag: int, how: str) -> None:
    if how == "ack":
        wire.acked_by_handler.add(tag)
        batcher.ack(tag)
    elif how == "requeue":
        await batcher.settle(tag, wire.basic_nack(tag, requeue=True))
    else:
        await batcher.settle(tag, wire.basic_reject(tag, requeue=False))


def _plans() -> Any:
    outcome = st.tuples(st.sampled_from(["ack", "ack", "ack", "requeue", "reject"]), st.booleans())
    return st.lists(outcome, min_size=1, max_size=40).flatmap(
        lambda outs: st.permutations(range(1, len(outs) + 1)).map(
            lambda order: [(tag, outs[tag - 1][0], outs[tag - 1][1]) for tag in order]
        )
    )


@settings(max_examples=300, deadline=None)
@given(_plans())
def test_no_ack_covers_an_unsettled_delivery_and_every_ack_arrives(
    plan: list[tuple[int, str, bool]],
) -> None:
    wire = Wire()

    async def go() -> None:
        await _settle_all(wire, AckBatcher(wire), plan)  # type: ignore[arg-type]

    asyncio.run(go())
    assert wire.violations == []
    assert wire.outstanding == set()
    assert sorted(wire.acked_on_wire) == sorted(wire.acked_by_handler)


def test_acks_of_one_loop_turn_go_out_as_one_frame() -> None:
    """Given 100 deliveries acked in one turn, expect one multiple ack for all of them."""
    wire = Wire()

    async def go() -> None:
        batcher = AckBatcher(wire)  # type: ignore[arg-type]
        for tag in range(1, 101):
            wire.outstanding.add(tag)
        for tag in range(1, 101):
            wire.acked_by_handler.add(tag)
            batcher.ack(tag)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert wire.frames == [("ack", 100, True)]


def test_acks_behind_a_held_delivery_go_out_alone_and_do_not_wait() -> None:
    """Given tag 1 still being handled, expect 2 and 3 acked one by one, not held back."""
    wire = Wire()

    async def go() -> None:
        batcher = AckBatcher(wire)  # type: ignore[arg-type]
        wire.outstanding |= {1, 2, 3}
        for tag in (2, 3):
            wire.acked_by_handler.add(tag)
            batcher.ack(tag)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert wire.frames == [("ack", 2, False), ("ack", 3, False)]
        wire.acked_by_handler.add(1)
        batcher.ack(1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert wire.frames[-1] == ("ack", 1, True)
    assert wire.outstanding == set()


def test_a_delay_gathers_acks_of_several_turns() -> None:
    wire = Wire()

    async def go() -> None:
        batcher = AckBatcher(wire, delay=0.05)  # type: ignore[arg-type]
        wire.outstanding |= set(range(1, 11))
        for tag in range(1, 11):
            wire.acked_by_handler.add(tag)
            batcher.ack(tag)
            await asyncio.sleep(0)
        assert wire.frames == []
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert wire.frames == [("ack", 10, True)]


def test_drain_sends_what_is_gathering_at_once() -> None:
    """Given acks waiting out a delay, when the batcher is drained (the transport
    closes), expect them on the wire before drain returns, and no later flush."""
    wire = Wire()

    async def go() -> None:
        batcher = AckBatcher(wire, delay=30.0)  # type: ignore[arg-type]
        wire.outstanding |= {1, 2, 3}
        for tag in (1, 2, 3):
            wire.acked_by_handler.add(tag)
            batcher.ack(tag)
        await batcher.drain()
        assert wire.frames == [("ack", 3, True)]
        await batcher.drain()  # nothing pending: nothing sent

    asyncio.run(go())
    assert wire.frames == [("ack", 3, True)] and wire.violations == []
