"""``GET /healthz`` of the metrics server: the readiness and startup probe of deploy/k8s.

Expect 200 only while the agent has started and is connected to the broker, 503 with
its state otherwise, and 404 where no health is given; ``/metrics`` is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from prometheus_client.core import CollectorRegistry

from robeing.agents.metrics import MetricsServer, health_of


@dataclass
class FakeTransport:
    is_connected: bool = True


@dataclass
class FakeAgent:
    state: str = "alive"
    transport: FakeTransport = field(default_factory=FakeTransport)


def test_health_is_ready_only_when_alive_and_connected() -> None:
    agent = FakeAgent()
    assert health_of(cast(Any, agent)) == (True, "alive")
    agent.transport.is_connected = False
    assert health_of(cast(Any, agent)) == (False, "disconnected")
    for state in ("starting", "stopping", "stopped"):
        agent.state = state
        assert health_of(cast(Any, agent)) == (False, state)


async def test_healthz_answers_200_or_503_with_the_state() -> None:
    agent = FakeAgent(state="starting")
    server = MetricsServer(CollectorRegistry(), 0, "127.0.0.1", lambda: health_of(cast(Any, agent)))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            starting = await http.get("/healthz")
            assert (starting.status_code, starting.text) == (503, "starting\n")
            agent.state = "alive"
            alive = await http.get("/healthz")
            assert (alive.status_code, alive.text) == (200, "alive\n")
            agent.transport.is_connected = False
            lost = await http.get("/healthz")
            assert (lost.status_code, lost.text) == (503, "disconnected\n")
            assert (await http.get("/metrics")).status_code == 200
    finally:
        await server.stop()


async def test_healthz_is_404_without_a_health_callable() -> None:
    server = MetricsServer(CollectorRegistry(), 0, "127.0.0.1")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/healthz")).status_code == 404
    finally:
        await server.stop()
