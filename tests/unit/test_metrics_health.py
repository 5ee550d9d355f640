"""``GET /healthz`` of the metrics server: the readiness and startup probe of deploy/k8s,
and the image's health check (deploy/healthcheck.py) that asks it.

Expect 200 only while the agent has started and is connected to the broker, 503 with
its state otherwise, and 404 where no health is given; ``/metrics`` is unchanged. The
health check exits 0 or 1 accordingly, and passes when no metrics port is set.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from prometheus_client.core import CollectorRegistry

from robeing.agents.metrics import MetricsServer, health_of

HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


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


async def healthcheck(port: str | None) -> tuple[int, str]:
    """Run deploy/healthcheck.py as the image does (the server must keep answering)."""
    env = {k: v for k, v in os.environ.items() if k != "ROBEING_METRICS_PORT"}
    if port is not None:
        env["ROBEING_METRICS_PORT"] = port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HEALTHCHECK), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()


async def test_the_image_health_check_follows_healthz() -> None:
    agent = FakeAgent(state="starting")
    server = MetricsServer(CollectorRegistry(), 0, "127.0.0.1", lambda: health_of(cast(Any, agent)))
    await server.start()
    port = str(server.port)
    try:
        code, line = await healthcheck(port)
        assert code == 1 and line.endswith("/healthz: 503 starting"), line
        agent.state = "alive"
        assert await healthcheck(port) == (0, "alive")
    finally:
        await server.stop()
    code, line = await healthcheck(port)  # nothing listens any more
    assert code == 1 and "Connection refused" in line, line
    assert (await healthcheck(None))[0] == 0
    assert (await healthcheck("0"))[0] == 0
