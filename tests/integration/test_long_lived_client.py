"""A long-lived client must run for days: listening to heartbeats again and again leaks nothing.

``robeing status --watch`` and probes listen to heartbeats through a temporary queue on a
channel of its own; each listen must give that channel back (it once stayed open, and a client
died at listen 2,045 with ``number of channels opened (2047) has reached the negotiated
channel_max``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.broker.management import Management

pytestmark = pytest.mark.broker

LISTENS = 5_000


async def channels_of(management: Management, vhost: str, connection_name: str) -> int:
    """The broker's count of the connection's channels (its statistics lag ~5 s)."""
    await asyncio.sleep(6)
    for conn in await management.connections(vhost):
        if conn.get("client_properties", {}).get("connection_name") == connection_name:
            return int(conn.get("channels", -1))
    raise AssertionError(f"no connection named {connection_name!r}")


def open_channels(client: Client) -> tuple[int, int]:
    """The client's own count: channels open on the AMQP connection, and those the robust
    connection would reopen after a reconnect."""
    gc.collect()  # the robust connection holds its channels weakly
    conn = client.agent.transport._conn  # type: ignore[attr-defined]
    return len(conn.transport.connection.channels), len(conn._RobustConnection__channels)


@pytest.mark.timeout(900)
async def test_five_thousand_heartbeat_listens_keep_the_channel_count_flat(
    amqp_url: str, keys_dir: Path, vhost: str, management: Management
) -> None:
    """Given a client, When it listens to heartbeats 5,000 times (as `status --watch` does),
    Expect the same channels open on its connection after 100, 2,500 and 5,000 listens (by the
    client's count and, within the lag of its statistics, by the broker's), and the client
    to keep working."""
    settings = Settings(role="client", agent_id="long-lived", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings, listen_only=True) as client:
        name = client.agent.transport_name  # type: ignore[attr-defined]
        ours: list[tuple[int, int]] = []
        broker: list[int] = []
        started = time.monotonic()
        for i in range(1, LISTENS + 1):
            await client.live_agents(0.01)
            if i in (100, LISTENS // 2, LISTENS):
                ours.append(open_channels(client))
                broker.append(await channels_of(management, vhost, name))
        seconds = time.monotonic() - started
        print(
            f"\nafter 100 / {LISTENS // 2} / {LISTENS} listens in {seconds:.0f} s: channels open "
            f"(client) {[o for o, _ in ours]}, robust {[r for _, r in ours]}, broker {broker}"
        )
        assert ours[0] == ours[1] == ours[2], ours
        assert max(broker) <= min(broker) + 1 and max(broker) < 10, broker
        assert isinstance(await client.live_agents(0.2), dict)
