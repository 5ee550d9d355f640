"""The lock primitive (``broker/lease.py``) on a real broker: one holder, and a contender
that tried once and waits in line never keeps the lock from the one that keeps trying."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from robeing.broker.lease import Lease, contend

pytestmark = pytest.mark.broker


async def until_held(leases: dict[str, Lease], conn, name: str, timeout: float) -> float:
    """Keep trying (as a standby does) until held; returns how long it took."""
    started = time.monotonic()
    while not await contend(leases, conn, name, lambda: None):
        assert time.monotonic() - started < timeout, f"{name} not held within {timeout}s"
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def test_an_idle_contender_in_line_does_not_keep_the_lock_from_a_trying_one(
    amqp_url: str,
) -> None:
    """Given A holding a lock and C that tried once and waits in line, When A leaves and B
    keeps trying, Expect B to hold it within seconds (C, made active while idle, leaves the
    line) and never two holders."""
    name = f"robeing.test.lock.{uuid.uuid4().hex[:6]}"
    conns = [await aio_pika.connect_robust(amqp_url) for _ in range(3)]
    a, b, c = ({}, {}, {})  # type: ignore[var-annotated]
    try:
        assert await until_held(a, conns[0], name, 5) < 5
        assert not await contend(c, conns[2], name, lambda: None)  # C waits in line, idle
        assert not await contend(b, conns[1], name, lambda: None)  # B behind C
        await a[name].close()  # A gives the lock up: the majority activates C, not B
        took = await until_held(b, conns[1], name, 10)
        assert b[name].held and not (c.get(name) and c[name].held)
        print(f"\nB held the lock {took:.2f} s after A left, past the idle C")
    finally:
        for leases in (a, b, c):
            for lease in leases.values():
                await lease.close()
        for conn in conns:
            await conn.close()
