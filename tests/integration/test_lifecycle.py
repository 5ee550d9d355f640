"""Graceful shutdown, connection loss and broker restarts with real agent processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.broker import topology as topo
from robeing.broker.management import Management

pytestmark = pytest.mark.broker


@pytest.fixture
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as c:
        yield c


async def test_sigterm_finishes_in_flight_work_then_exits_cleanly(
    spawn, client: Client, tmp_path: Path
) -> None:
    """Given a handler busy for 1.5 s, when the agent gets SIGTERM mid-way,
    expect the reply to arrive and the process to exit with status 0."""
    (tmp_path / "out").mkdir()
    proc = await spawn(
        "worker", "w-drain", "--app", "apps.sample_app", env={"SAMPLE_OUT": str(tmp_path / "out")}
    )
    pending = asyncio.create_task(
        client.request("w-drain", "slow", {"seconds": 1.5, "tag": "t1"}, timeout=15)
    )
    await asyncio.sleep(0.5)
    proc.signal(15)
    assert await pending == {"slept": 1.5}
    assert await proc.wait(20) == 0


async def test_work_past_the_grace_period_returns_to_the_queue(
    spawn, client: Client, tmp_path: Path
) -> None:
    """Given a grace period shorter than the running handler, when the agent is
    stopped, expect the message back in its durable queue and handled by the
    agent's next incarnation: nothing is lost."""
    out = tmp_path / "out"
    out.mkdir()
    env = {"SAMPLE_OUT": str(out)}
    proc = await spawn(
        "worker", "w-handback", "--app", "apps.sample_app", "--grace-period", "0.2", env=env
    )
    await client.send("w-handback", "slow", {"seconds": 3, "tag": "handed-back"})
    await asyncio.sleep(0.5)
    assert await proc.terminate(20) == 0
    assert not (out / "w-handback.log").exists()
    await spawn("worker", "w-handback", "--app", "apps.sample_app", env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = out / "w-handback.log"
        if log.exists() and "handed-back" in log.read_text():
            break
        await asyncio.sleep(0.2)
    assert "slow handed-back" in (out / "w-handback.log").read_text()


async def _connection_of(management: Management, vhost: str, agent_id: str) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for conn in await management.connections(vhost):
            name = conn.get("client_properties", {}).get("connection_name", "")
            if f" {agent_id} " in name:
                return conn
        await asyncio.sleep(0.3)
    raise AssertionError(f"no connection for {agent_id}")


async def _agent_consumers(management: Management, vhost: str, agent_id: str) -> set[str]:
    queues = set()
    for c in await management.consumers(vhost):
        qname = c["queue"]["name"]
        if qname in (
            topo.agent_queue(agent_id),
            topo.broadcast_queue(agent_id),
        ) or qname.startswith(f"robeing.reply.{agent_id}."):
            queues.add(qname.rsplit(".", 1)[0] if qname.startswith("robeing.reply.") else qname)
    return queues


EXPECTED = {"robeing.agent.{id}", "robeing.broadcast.{id}", "robeing.reply.{id}"}


async def _await_consumers(management: Management, vhost: str, agent_id: str) -> set[str]:
    want = {e.format(id=agent_id) for e in EXPECTED}
    deadline = time.monotonic() + 30
    got: set[str] = set()
    while time.monotonic() < deadline:
        got = await _agent_consumers(management, vhost, agent_id)
        if got == want:
            return got
        await asyncio.sleep(0.5)
    raise AssertionError(f"consumers of {agent_id}: {got}, want {want}")


async def test_agent_recovers_its_consumers_after_its_connection_is_closed(
    spawn, client: Client, management: Management, vhost: str
) -> None:
    """Given a live agent, when the broker closes its connection, expect it to
    reconnect, restore its three consumers and answer again."""
    await spawn("worker", "w-conn")
    await _await_consumers(management, vhost, "w-conn")
    conn = await _connection_of(management, vhost, "w-conn")
    await management.close_connection(conn["name"], "test closes it")
    await asyncio.sleep(1.0)
    await _await_consumers(management, vhost, "w-conn")
    assert await client.send("w-conn", "ping", None, requires_ack=True, timeout=15)


@pytest.mark.broker_restart
async def test_agent_recovers_after_a_broker_restart(
    spawn, amqp_url: str, keys_dir: Path, management: Management, vhost: str, watcher
) -> None:
    """Given a live agent, when the broker restarts, expect every consumer back
    and the agent answering; its durable inbox kept what was sent meanwhile."""
    await spawn("worker", "w-restart")
    await _await_consumers(management, vhost, "w-restart")
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    started = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    await _await_consumers(management, vhost, "w-restart")
    recovered_s = time.monotonic() - started
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as client:
        assert await client.send("w-restart", "ping", None, requires_ack=True, timeout=15)
    await watcher.wait_alive("w-restart", timeout=15, since=time.time())
    print(f"consumers back {recovered_s:.2f}s after start_app")
