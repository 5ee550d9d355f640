"""Pooled resources with real processes: show, lease, the one-line shortfall, TTL."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.agents.clusters import ClusterRefused, InsufficientPool

pytestmark = pytest.mark.broker


async def test_leases_are_placed_whole_or_spread_refused_in_one_line_and_end_on_ttl(
    spawn, watcher, run_cli, amqp_url: str, keys_dir: Path
) -> None:
    """Given two workers contributing 4 cpus each, Expect the pool to show 8/8 free with
    at most 4 on one agent, a lease of 16 refused in one line with exit 2, a lease of 6
    spread over both, a release and a TTL giving the cpus back, and --wait to give up."""
    tag = uuid.uuid4().hex[:6]
    await spawn("coordinator", f"pc-{tag}", "--acceptable-pause", "0.5", "--dead-after", "0.5")
    await watcher.wait_coordinator(f"pc-{tag}")
    for i in range(2):
        await spawn("worker", f"pw{i}-{tag}", "--resources", "cpu=4,memory=1GiB")
    await asyncio.sleep(1.2)  # the coordinator has seen their contributions

    def cli(*args: str):
        return run_cli("pool", *args, amqp_url=amqp_url, keys=keys_dir, timeout=30)

    async def free_cpu() -> float:
        shown = await cli("show", "--json")
        assert shown.code == 0, shown.err
        return float(json.loads(shown.out)["free"].get("cpu", 0))

    shown = await cli("show")
    assert shown.code == 0, shown.err
    assert "free:    cpu=8,memory=2147483648" in shown.out
    assert "largest on one agent: cpu=4,memory=1073741824" in shown.out

    short = await cli("request", "cpu=16")
    assert short.code == 2
    assert short.err_lines == [
        "robeing: error: insufficient resources: asked cpu=16; free cpu=8 (largest on one agent: 4)"
    ]
    assert await free_cpu() == 8  # nothing held by the refusal

    spread = await cli("request", "cpu=6", "--json")
    assert spread.code == 0, spread.err
    lease = json.loads(spread.out)
    assert sorted(p["resources"]["cpu"] for p in lease["parts"]) == [2, 4]
    assert await free_cpu() == 2
    waited = await cli("request", "cpu=4", "--wait", "--timeout", "2")
    assert waited.code == 4 and "insufficient resources" in waited.err
    released = await cli("release", lease["lease"])
    assert released.code == 0, released.err
    again = await cli("release", lease["lease"])  # idempotent
    assert again.code == 0, again.err
    assert await free_cpu() == 8

    settings = Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings) as client:
        short_lived = await client.pool.request({"cpu": 3}, ttl=1.0)
        assert len(short_lived["parts"]) == 1
        assert (await client.pool.show())["free"]["cpu"] == 5
        with pytest.raises(InsufficientPool, match="asked cpu=9; free cpu=5"):
            await client.pool.request({"cpu": 9})
        await asyncio.sleep(2.5)  # past its TTL: the coordinator ends it
        assert (await client.pool.show())["free"]["cpu"] == 8
        with pytest.raises(ClusterRefused, match="expired"):
            await client.pool.release(short_lived["lease"])
