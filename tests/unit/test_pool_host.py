"""Specification of the coordinator's pool host: leases answered only once recorded,
and rebuilt from the records by the next active coordinator (no broker: a fake stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any, cast

from robeing.agents.context import AgentContext, Message
from robeing.agents.roles.coordinator.pool import PoolHost
from robeing.protocol.coordinator import (
    BecameActive,
    CoordinatorConfig,
    CoordinatorState,
    HeartbeatReceived,
)
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources


class FakeStream:
    """Stands in for the leases stream: keeps appended payloads; can refuse writes."""

    def __init__(self, stored: list[Any]) -> None:
        self.stored = stored
        self.refuse = False
        self.invalid = 0

    async def append(self, data: Any) -> None:
        if self.refuse:
            raise ConnectionError("broker refused")
        self.stored.append(data)

    async def load(self, apply: Callable[[Any], None], offset: Any = "first") -> int:
        for payload in self.stored:
            apply(payload)
        return len(self.stored)


def coordinator(epoch: int, now: float) -> CoordinatorState:
    """A machine that became active and heard workers w1 and w2 (4 cpus each)."""
    m = CoordinatorState(CoordinatorConfig(f"c{epoch}"))
    m.handle(BecameActive(epoch), now)
    for w in ("w1", "w2"):
        beat = Heartbeat("worker", "alive", ("a",), resources=Resources(cpu=4), started_at=1.0)
        m.handle(HeartbeatReceived(w, "worker", beat), now)
    return m


async def host(stored: list[Any], epoch: int, now: float) -> tuple[PoolHost, FakeStream]:
    tasks: list[asyncio.Task[None]] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.ensure_future(coro))

    h = PoolHost(cast(AgentContext, SimpleNamespace()), lambda _: {"w1", "w2"}, spawn)
    stream = FakeStream(stored)
    h.records = stream  # type: ignore[assignment]
    await h.load(coordinator(epoch, now))
    return h, stream


def ask(payload: dict[str, Any], sender: str = "me", role: str = "client") -> Message:
    return cast(Message, SimpleNamespace(payload=payload, sender=sender, sender_role=role))


def free_cpu(h: PoolHost) -> float:
    assert h.book is not None
    return h.book.ledger.available().cpu


async def test_a_grant_is_answered_only_once_recorded_and_undone_if_it_cannot_be() -> None:
    """Given a stream that refuses writes, When a lease is asked for, Expect a refusal and
    the cpus free again; When it accepts, Expect the lease, and its grant stored."""
    h, stream = await host([], epoch=1, now=0.0)
    stream.refuse = True
    refused = await h.on_request(ask({"lease": "l1", "resources": {"cpu": 3}}))
    assert "could not record" in refused["error"] and free_cpu(h) == 8
    stream.refuse = False
    granted = await h.on_request(ask({"lease": "l1", "resources": {"cpu": 3}}))
    assert granted["lease"]["lease"] == "l1" and free_cpu(h) == 5
    assert [(r["op"], r["lease"]) for r in stream.stored] == [("grant", "l1")]


async def test_the_next_coordinator_holds_every_live_lease_from_the_records() -> None:
    """Given a client lease renewed, one released and an agent's lease recorded by epoch 1,
    When epoch 2 loads the records, Expect the two live leases held on the same agents,
    their cpus not free, and the released one refused a release as released."""
    stored: list[Any] = []
    first, _ = await host(stored, epoch=1, now=0.0)
    await first.on_request(ask({"lease": "kept", "resources": {"cpu": 6}, "ttl": 600}))
    await first.on_request(ask({"lease": "gone", "resources": {"cpu": 1}}))
    await first.on_request(ask({"lease": "ag", "resources": {"cpu": 1}}, "w9", "worker"))
    assert "lease" in await first.on_renew(ask({"lease": "kept"}))
    assert await first.on_release(ask({"lease": "gone"})) == {"released": "gone"}
    assert [r["op"] for r in stored] == ["grant", "grant", "grant", "renew", "end"]

    second, _ = await host(stored, epoch=2, now=1.0)
    assert second.book is not None and first.book is not None
    assert sorted(second.book.leases) == ["ag", "kept"]
    assert second.book.leases["ag"].kind == "agent"
    for lease_id in ("ag", "kept"):
        assert (
            second.book.leases[lease_id].allocation.parts
            == first.book.leases[lease_id].allocation.parts
        )
    assert free_cpu(second) == 1
    again = await second.on_release(ask({"lease": "gone"}))
    assert again == {"released": "gone"}  # told again: it was released
    shown = second.on_show(ask({}))
    assert shown["leases"] == 2 and shown["by_kind"] == {"client": 1, "agent": 1}


async def test_bad_contribution_orders_are_refused_in_one_line_with_nothing_sent() -> None:
    h, _ = await host([], epoch=1, now=0.0)
    unknown = await h.on_contribute(ask({"agent": "nobody", "resources": {"cpu": 1}}))
    assert unknown["error"] == "unknown agent 'nobody'; live agents: w1, w2"
    bad = await h.on_contribute(ask({"agent": "w1", "resources": {"gpu": 1}}))
    assert bad["error"].startswith("invalid resources: unknown resource gpu")
    negative = await h.on_contribute(ask({"agent": "w1", "resources": {"cpu": -1}}))
    assert negative["error"] == "invalid resources: cpu must be >= 0, got -1"
