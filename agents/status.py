"""``robeing status``: live agents from heartbeats, plus queue health."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from ..broker import topology as topo
from ..broker.management import Management, ManagementSettings, vhost_of
from ..protocol.errors import BrokerError
from .client import AgentStatus, Client
from .settings import Settings


async def queue_health(settings: Settings) -> dict[str, Any]:
    """Dead-letter count and the coordinator queues' depths (management API).

    Returns an ``error`` entry instead of raising when the API is unreachable.
    """
    vhost = vhost_of(settings.amqp_url)
    try:
        async with Management(
            ManagementSettings.from_amqp_url(settings.amqp_url), timeout=3
        ) as mgmt:
            out: dict[str, Any] = {}
            for name in (topo.DEAD_LETTER_QUEUE, topo.TASK_QUEUE):
                q = await mgmt.queue(vhost, name)
                out[name] = {"messages": q.get("messages", 0), "consumers": q.get("consumers", 0)}
            return out
    except BrokerError as exc:
        return {"error": str(exc)}


def render(agents: dict[str, AgentStatus], health: dict[str, Any], now: float) -> Table:
    table = Table(title=f"robeing — {len(agents)} live agent(s)", title_justify="left")
    for col in (
        "id",
        "role",
        "specializations",
        "cluster",
        "state",
        "load",
        "last seen",
        "rejected",
    ):
        table.add_column(col, justify="right" if col in ("load", "last seen") else "left")
    for a in agents.values():
        rejected = sum(a.stats.get("rejected", {}).values())
        table.add_row(
            a.id,
            a.role,
            ", ".join(a.specializations) or "-",
            a.cluster_id,
            a.state,
            f"{a.load}/{a.capacity}",
            f"{now - a.last_seen:.1f}s ago",
            str(rejected),
        )
    dl = health.get(topo.DEAD_LETTER_QUEUE)
    if dl is not None:
        table.caption = f"dead letters: {dl['messages']}"
    return table


async def show_status(settings: Settings, as_json: bool, watch: bool, listen: float) -> None:
    console = Console()
    async with Client(settings, listen_only=True) as client:
        while True:
            agents, health = await asyncio.gather(
                client.live_agents(listen), queue_health(settings)
            )
            now = time.time()
            if as_json:
                print(
                    json.dumps(
                        {"agents": [a.as_dict(now) for a in agents.values()], "queues": health},
                        indent=2,
                        sort_keys=True,
                        default=str,
                    ),
                    flush=True,
                )
            else:
                if watch:
                    console.clear()
                console.print(render(agents, health, now))
            if not watch:
                return
