"""Attacks 12-13: bytes on the wire that must be refused, and refused cheaply.

Every agent may publish to ``robeing.direct`` and ``robeing.broadcast`` in
both setups, so the broker lets these through; the receivers' checks
(DESIGN §2) and the bounds of the dead-letter queue are what must hold.
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any

import pytest

from robeing.broker import topology as topo
from robeing.protocol.rejections import MAX_STORED

from . import forge
from .attacker import Attacker
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]

MIB = 1 << 20


async def _letters(seen: list, match: Any, count: int, timeout: float = 15) -> list:
    for _ in range(int(timeout / 0.1)):
        found = [m for m in seen if match(m)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    return [m for m in seen if match(m)]


async def test_a_nan_timestamp_is_refused_now_and_later(fleet: Fleet, finding) -> None:
    """Given an identity issued in the keys directory (the compromised worker, mallory),
    When it sends w1 a correctly signed envelope whose timestamp is NaN, and the very same
    bytes again two seconds later,
    Expect both dead-lettered with reason 'decode' (NaN passes every comparison of the
    time window, so it is refused before it), counted in w1's heartbeat, and w1 serving."""
    own = fleet.keys.load_identity(fleet.ids["mallory"], "worker")
    w1 = fleet.ids["w1"]
    wire = forge.with_timestamp(own, w1, math.nan)
    before = fleet.stats("w1").get("rejected", {}).get("decode", 0)
    async with fleet.tap(topo.DEAD_EXCHANGE) as seen, Attacker(fleet.login("mallory")) as mallory:
        first = await mallory.publish(topo.DIRECT_EXCHANGE, w1, wire)
        await _letters(seen, lambda m: m.body == wire, 1)
        await asyncio.sleep(2.0)
        second = await mallory.publish(topo.DIRECT_EXCHANGE, w1, wire)
        letters = await _letters(seen, lambda m: m.body == wire, 2)
    async with fleet.client("alice") as alice:
        echo = await alice.request(w1, "echo", "still there?", timeout=10)
    for _ in range(30):  # its next heartbeat carries the counts
        if fleet.stats("w1").get("rejected", {}).get("decode", 0) >= before + 2:
            break
        await asyncio.sleep(0.1)
    counted = fleet.stats("w1").get("rejected", {}).get("decode", 0) - before

    reasons = [m.headers.get(topo.REASON_HEADER) for m in letters]
    finding(
        "12 NaN timestamp",
        "receiver (decode check)",
        f"sent twice ({first}, {second}); dead letters {reasons}, w1 counted +{counted} "
        f"decode refusals and still answers",
    )
    assert first.allowed and second.allowed
    assert reasons == ["decode", "decode"], reasons
    assert all(m.headers.get(topo.SOURCE_HEADER) == topo.agent_queue(w1) for m in letters)
    assert all(m.headers.get(topo.REPORT_HEADER) for m in letters)
    assert counted == 2
    assert echo["echo"] == "still there?"


async def test_a_4_mib_broadcast_costs_the_dead_letters_64_kib_per_agent(
    fleet: Fleet, finding
) -> None:
    """Given every agent's broadcast queue, and an attacker with a worker's login or guest,
    When it broadcasts 4 MiB of garbage once,
    Expect each agent to refuse it ('too_large') and dead-letter at most 64 KiB of it
    (its original size in a header), robeing.dead-letters to grow by at most that per
    agent, and the queue to be bounded (x-max-length, x-max-length-bytes, drop-head)."""
    queues = await fleet.management.queues(fleet.vhost)
    feeds = {q["name"] for q in queues if q["name"].startswith("robeing.broadcast.")}
    garbage = os.urandom(4 * MIB)
    await asyncio.sleep(5.5)  # fresh counts from the management API
    before = await fleet.queue(topo.DEAD_LETTER_QUEUE)
    async with fleet.tap(topo.DEAD_EXCHANGE) as seen, Attacker(fleet.login("mallory")) as mallory:
        sent = await mallory.publish(topo.BROADCAST_EXCHANGE, "", garbage)
        letters = await _letters(
            seen, lambda m: m.headers.get(topo.SOURCE_HEADER) in feeds, len(feeds)
        )
    for _ in range(60):  # until the management API's counts include them (messages and bytes)
        after = await fleet.queue(topo.DEAD_LETTER_QUEUE)
        if (after.get("messages") or 0) >= (before.get("messages") or 0) + len(letters) and (
            after.get("message_bytes") or 0
        ) > (before.get("message_bytes") or 0):
            break
        await asyncio.sleep(0.5)
    grown = (after.get("message_bytes") or 0) - (before.get("message_bytes") or 0)
    args = after.get("arguments", {})

    finding(
        "13 4 MiB broadcast",
        "receivers (size check) + bounded dead-letter queue",
        f"publish {sent}; {len(letters)}/{len(feeds)} agents dead-lettered it "
        f"({sorted({m.headers.get(topo.REASON_HEADER) for m in letters})}), stored "
        f"{sorted({len(m.body) for m in letters})} bytes each; dead-letter queue "
        f"+{grown} bytes; arguments {args}",
    )
    assert sent.allowed
    assert len(letters) == len(feeds) >= 4, (len(letters), feeds)
    for m in letters:
        assert m.headers.get(topo.REASON_HEADER) == "too_large"
        assert len(m.body) <= MAX_STORED and m.headers.get(topo.SIZE_HEADER) == len(garbage)
    assert 0 < grown <= len(feeds) * (MAX_STORED + 4096), grown
    assert args.get("x-max-length") == topo.DEAD_LETTERS_MAX_LENGTH
    assert args.get("x-max-length-bytes") == topo.DEAD_LETTERS_MAX_BYTES
    assert args.get("x-overflow") == "drop-head"
