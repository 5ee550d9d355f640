"""Shared fixtures: a fresh vhost per session, a keys directory, real agent processes.

Broker tests skip when no RabbitMQ is reachable on a laptop, but fail when
``CI`` is set (a CI run that silently skips them would prove nothing).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agentproc import AgentProcess, HeartbeatWatcher
from clitools import RunCli, run_robeing

from robeing.agents import Client, Settings
from robeing.agents.keystore import Keystore
from robeing.broker.management import Management, ManagementSettings, with_vhost

BASE_URL = os.environ.get("ROBEING_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The base AMQP URL; skips (or fails under CI) without a broker."""
    if not _broker_reachable(BASE_URL):
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable at {BASE_URL} and CI is set")
        pytest.skip(f"RabbitMQ is not reachable at {BASE_URL}")
    return BASE_URL


@pytest.fixture(scope="session")
async def management(broker_url: str) -> AsyncIterator[Management]:
    async with Management(ManagementSettings.from_amqp_url(broker_url)) as mgmt:
        yield mgmt


@pytest.fixture(scope="session")
async def vhost(management: Management) -> AsyncIterator[str]:
    """A vhost created for this test session and deleted afterwards."""
    name = f"robeing-test-{uuid.uuid4().hex[:8]}"
    await management.create_vhost(name)
    yield name
    await management.delete_vhost(name)


@pytest.fixture(scope="session")
def amqp_url(broker_url: str, vhost: str) -> str:
    return with_vhost(broker_url, vhost)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keys directory with a fresh authority (agents auto-issue from it)."""
    root = tmp_path_factory.mktemp("keys")
    Keystore(root).init()
    return root


@pytest.fixture(scope="session")
async def watcher(amqp_url: str, keys_dir: Path) -> AsyncIterator[HeartbeatWatcher]:
    """Records every verified heartbeat in the session's vhost."""
    w = HeartbeatWatcher(amqp_url, keys_dir)
    await w.start()
    yield w
    await w.stop()


@pytest.fixture
def spawn(
    amqp_url: str, keys_dir: Path, watcher: HeartbeatWatcher, tmp_path: Path
) -> Iterator[object]:
    """Factory: start a real ``robeing agent`` process; all are stopped after the test."""
    procs: list[AgentProcess] = []

    async def start(
        role: str,
        agent_id: str,
        *args: str,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> AgentProcess:
        proc = AgentProcess(amqp_url, keys_dir, role, agent_id, list(args), tmp_path, env)
        procs.append(proc)
        await proc.start()
        if wait:
            await watcher.wait_alive(agent_id, timeout=20, process=proc)
        return proc

    yield start
    loop = asyncio.get_event_loop_policy().get_event_loop()
    for p in procs:
        p.kill_sync()
    del loop


@pytest.fixture
def run_cli() -> RunCli:
    """Factory: run the ``robeing`` command as a user would (see :func:`clitools.run_robeing`)."""
    return run_robeing


@pytest.fixture
def unique_id() -> Callable[[str], str]:
    """Factory: an agent id no other test in the session's vhost uses."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
async def client_named(
    amqp_url: str, keys_dir: Path
) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """Factory: a started client with the given identity; all are stopped after the test."""
    clients: list[Client] = []

    async def make(agent_id: str) -> Client:
        settings = Settings(role="client", agent_id=agent_id, amqp_url=amqp_url, keys_dir=keys_dir)
        client = Client(settings)
        await client.__aenter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.__aexit__(None, None, None)
