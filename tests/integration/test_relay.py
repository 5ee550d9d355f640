"""Store and forward with real processes: a messenger holds a message for an agent that
is not running, through its own restart, and delivers it when the agent comes; a TTL
that passes first ends it, and the sender can tell."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.agents.keystore import Keystore

pytestmark = pytest.mark.broker


@pytest.fixture
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as c:
        yield c


async def state_of(client: Client, messenger: str, relay_id: str, want: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        state = (await client.relay_status(messenger, relay_id))["state"]
        if state == want or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.3)


async def test_a_held_message_survives_the_messengers_restart_and_reaches_its_receiver(
    spawn, watcher, client: Client, keys_dir: Path, tmp_path: Path
) -> None:
    """Given an agent that was never started (its identity issued), When a client sends it
    a note via a messenger, the messenger restarts, and the agent starts, Expect the note
    handled once by the agent, from the client (not the messenger), and the relay to say
    delivered."""
    tag = os.getpid()
    messenger, late = f"m-{tag}", f"late-{tag}"
    Keystore(keys_dir).issue(late, "worker")
    m = await spawn("messenger", messenger)
    held = await client.send_via(messenger, late, "note", "hello from afar", ttl=120)
    assert (await client.relay_status(messenger, held["id"]))["state"] == "pending"

    await m.terminate(20)
    since = time.time()
    await spawn("messenger", messenger)
    await watcher.wait_alive(messenger, since=since)
    assert (await client.relay_status(messenger, held["id"]))["state"] == "pending"

    out = tmp_path / "out"
    out.mkdir()
    await spawn("worker", late, "--app", "apps.sample_app", env={"SAMPLE_OUT": str(out)})
    assert await state_of(client, messenger, held["id"], "delivered", 20) == "delivered"
    lines = (out / f"{late}.log").read_text().splitlines()
    assert lines == [f"note {client.settings.agent_id} hello from afar"]


async def test_a_message_whose_ttl_passes_expires_and_the_sender_is_told(
    spawn, amqp_url: str, keys_dir: Path
) -> None:
    """Given a receiver that never comes, When `robeing send --via --ttl 1 --wait` runs,
    Expect it to end with 'expired' and exit code 1."""
    tag = os.getpid()
    messenger, never = f"m2-{tag}", f"never-{tag}"
    Keystore(keys_dir).issue(never, "worker")
    await spawn("messenger", messenger)
    env = {**os.environ, "AMQP_URL": amqp_url, "ROBEING_KEYS": str(keys_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "robeing.agents", "send", "--via", messenger, "--to", never,
         "--type", "note", "--payload", '"x"', "--ttl", "1", "--wait"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("expired:"), done.stdout
