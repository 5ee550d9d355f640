"""Point-to-point messages, ACKs, requests and broadcasts between real agent processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.protocol.errors import AckTimeout, RemoteError, Unroutable

pytestmark = pytest.mark.broker


@pytest.fixture
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as c:
        yield c


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def app_env(out_dir: Path) -> dict[str, str]:
    return {"SAMPLE_OUT": str(out_dir)}


async def test_send_with_ack_returns_the_receivers_signed_ack(spawn, client: Client) -> None:
    """Given a worker, when a client sends with requires_ack,
    expect the call to return the ACK signed by that worker's certified identity."""
    await spawn("worker", "w-ack")
    opened = await client.send("w-ack", "ping", {"n": 1}, requires_ack=True, timeout=10)
    assert opened is not None
    assert opened.envelope.sender == "w-ack"
    assert opened.certificate.role == "worker"
    assert opened.envelope.type == "ack"
    assert opened.envelope.payload["ok"] is True


async def test_request_returns_the_handlers_result(spawn, client: Client, out_dir: Path) -> None:
    """Given an agent with the sample app, when a client requests 'echo',
    expect the handler's return value, computed on the decrypted payload."""
    await spawn("specialist", "s-echo", "--app", "apps.sample_app", env=app_env(out_dir))
    reply = await client.request("s-echo", "echo", {"secret": [1, 2, 3]})
    assert reply == {"echo": {"secret": [1, 2, 3]}, "by": "s-echo", "from": client.agent.id}


async def test_handler_errors_come_back_as_data(spawn, client: Client, out_dir: Path) -> None:
    """Given a handler that raises ValueError, when a client sends with an ACK,
    expect a RemoteError naming the type and message instead of a timeout."""
    await spawn("worker", "w-fail", "--app", "apps.sample_app", env=app_env(out_dir))
    with pytest.raises(RemoteError) as info:
        await client.send("w-fail", "fail", "boom", requires_ack=True, timeout=10)
    assert info.value.type == "ValueError"
    assert "boom" in str(info.value)


async def test_retry_hands_the_message_back_until_it_succeeds(
    spawn, client: Client, out_dir: Path
) -> None:
    """Given a handler that raises Retry twice, expect the third delivery to answer."""
    await spawn("worker", "w-flaky", "--app", "apps.sample_app", env=app_env(out_dir))
    assert await client.request("w-flaky", "flaky", None, timeout=10) == "done after 3 attempts"


async def test_ack_times_out_when_the_receiver_is_paused(spawn, client: Client) -> None:
    """Given a paused (SIGSTOP) worker, expect AckTimeout, and the message to be
    handled once the worker resumes (it waited in the durable queue)."""
    proc = await spawn("worker", "w-paused")
    proc.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(AckTimeout):
            await client.send("w-paused", "ping", None, requires_ack=True, timeout=1.0)
        assert time.monotonic() - started < 5
    finally:
        proc.signal(signal.SIGCONT)
    opened = await client.send("w-paused", "ping", None, requires_ack=True, timeout=10)
    assert opened is not None


async def test_unknown_receiver_is_unroutable(client: Client, keys_dir: Path) -> None:
    """Given a certified agent id with no queue, expect Unroutable, not a silent drop."""
    from robeing.agents.keystore import Keystore

    Keystore(keys_dir).issue("nobody-home", "worker")
    with pytest.raises(Unroutable):
        await client.send("nobody-home", "ping", None)


async def test_broadcast_reaches_every_live_agent_except_the_sender(
    spawn, client: Client, out_dir: Path
) -> None:
    """Given three agents, when one broadcasts, expect the two others to handle it
    and the sender not to."""
    env = app_env(out_dir)
    for agent_id in ("b-1", "b-2", "b-3"):
        await spawn("worker", agent_id, "--app", "apps.sample_app", env=env)
    await client.request("b-1", "bcast", "hello-all")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {p.stem for p in out_dir.glob("b-*.log") if "hello-all" in p.read_text()}
        if got == {"b-2", "b-3"}:
            break
        await asyncio.sleep(0.1)
    assert got == {"b-2", "b-3"}
    await asyncio.sleep(0.5)
    assert not (out_dir / "b-1.log").exists()


async def test_higher_priority_messages_are_delivered_first(
    spawn, client: Client, out_dir: Path
) -> None:
    """Given a paused agent with a backlog, expect priority 9 messages to be handled
    before priority 1 messages queued earlier."""
    proc = await spawn(
        "worker", "w-prio", "--app", "apps.sample_app", "--concurrency", "1", env=app_env(out_dir)
    )
    proc.signal(signal.SIGSTOP)
    try:
        for i in range(5):
            await client.send("w-prio", "note", f"low-{i}", priority=1)
        for i in range(5):
            await client.send("w-prio", "note", f"high-{i}", priority=9)
    finally:
        proc.signal(signal.SIGCONT)
    log = out_dir / "w-prio.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) == 10:
            break
        await asyncio.sleep(0.1)
    order = [line.split()[-1] for line in log.read_text().splitlines()]
    assert len(order) == 10
    # At most one message was already in flight when the agent paused.
    assert order[1:6] == [f"high-{i}" for i in range(5)] or order[:5] == [
        f"high-{i}" for i in range(5)
    ], order
