"""Pooled resources with real processes: leases kept across a coordinator failover,
renewed or expiring, ending with their agent holder, and contributions changed live.

One fleet for the module: an active and a standby coordinator, two workers
contributing 4 cpus and 1 GiB each (``ROBEING_RESOURCES``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from robeing.agents import Client, Settings
from robeing.agents.assembly import build_agent
from robeing.agents.clusters import ClusterRefused, InsufficientPool

pytestmark = pytest.mark.broker

FAST = ("--acceptable-pause", "0.5", "--dead-after", "0.5")


async def until(probe: Callable[[], Awaitable[Any]], want: Any, timeout: float = 10.0) -> Any:
    """Ask ``probe`` until it returns ``want`` (returns the last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got == want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.3)


async def test_leases_survive_a_failover_renew_or_expire_end_with_their_agent_and_follow_contributions(  # noqa: E501
    spawn, watcher, run_cli, amqp_url: str, keys_dir: Path
) -> None:
    """Given two coordinators (one standby) and two workers of 4 cpus each:
    Expect a short request refused in one line (exit 2) and a lease of 6 spread;
    When the active coordinator is SIGKILLed, Expect the standby to show the same leases,
    still holding their cpus, a renewed client lease alive and an unrenewed one expired;
    an agent's lease ended when the agent leaves; `pool contribute` growing one worker
    and shrinking the other below its lease without ending it (shown as shrinking)."""
    tag = uuid.uuid4().hex[:6]
    first = await spawn("coordinator", f"pa-{tag}", *FAST)
    await watcher.wait_coordinator(f"pa-{tag}")
    await spawn("coordinator", f"pb-{tag}", *FAST, "--standby")
    workers = [f"pw{i}-{tag}" for i in range(2)]
    for w in workers:
        await spawn("worker", w, env={"ROBEING_RESOURCES": "cpu=4,memory=1GiB"})

    def cli(*args: str):
        return run_cli("pool", *args, amqp_url=amqp_url, keys=keys_dir, timeout=30)

    settings = Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings) as client:

        async def free_cpu() -> float:
            return float((await client.pool.show())["free"].get("cpu", 0))

        assert await until(free_cpu, 8) == 8  # the coordinator heard both contributions
        shown = await cli("show")
        assert shown.code == 0, shown.err
        assert "free:    cpu=8,memory=2147483648" in shown.out
        assert "largest on one agent: cpu=4,memory=1073741824" in shown.out
        short = await cli("request", "cpu=16")
        assert (short.code, short.err_lines) == (
            2,
            ["robeing: error: insufficient resources: asked cpu=16; "
             "free cpu=8 (largest on one agent: 4)"],
        )  # fmt: skip

        # A CLI lease (ends after --ttl unless renewed), a renewed and an unrenewed one.
        spread = await cli("request", "cpu=6", "--ttl", "120", "--json")
        assert spread.code == 0, spread.err
        cli_lease = json.loads(spread.out)
        assert sorted(p["resources"]["cpu"] for p in cli_lease["parts"]) == [2, 4]
        renewed = await client.pool.request({"cpu": 0.5}, ttl=1.5)  # renewed every 0.5 s
        lapsing = await client.pool.request({"cpu": 0.5}, ttl=6.0, renew=False)
        assert renewed["kind"] == "client" and renewed["expires_at"] is not None

        # An agent holds a lease: no TTL; it ends when the coordinator loses the agent.
        holder = build_agent(
            Settings(role="worker", agent_id=f"ph-{tag}", amqp_url=amqp_url, keys_dir=keys_dir)
        )
        await holder.start()
        ask = holder.outbox.ask_coordinators
        answer = await ask(
            "pool.request", {"lease": f"al-{tag}", "resources": {"cpu": 1}}, timeout=10
        )
        agent_lease = answer["lease"]
        assert (agent_lease["kind"], agent_lease["expires_at"]) == ("agent", None)
        assert await free_cpu() == 0

        # The failover: the standby folds the lease records.
        first.signal(signal.SIGKILL)
        await watcher.wait_coordinator(f"pb-{tag}", timeout=20)
        view = await client.pool.show()
        assert view["leases"] == 4 and view["by_kind"] == {"client": 3, "agent": 1}
        with pytest.raises(InsufficientPool, match=r"asked cpu=0\.5; free cpu=0 "):
            await client.pool.request({"cpu": 0.5}, renew=False)
        await asyncio.sleep(max(0.0, lapsing["expires_at"] + 1.5 - time.time()))
        with pytest.raises(ClusterRefused, match="expired"):
            await client.pool.release(lapsing["lease"])
        assert (await client.pool.renew(renewed["lease"]))["lease"] == renewed["lease"]
        assert await until(free_cpu, 0.5) == 0.5

        await holder.stop()  # it leaves: the coordinator ends its lease
        assert await until(free_cpu, 1.5) == 1.5
        assert (await client.pool.show())["by_kind"] == {"client": 2, "agent": 0}

        # Contributions: grow one worker, shrink the other below what is leased on it.
        on = {p["agent"]: p["resources"]["cpu"] for p in cli_lease["parts"]}
        big, small = max(on, key=on.__getitem__), min(on, key=on.__getitem__)
        grown = await cli("contribute", "--agent", big, "cpu=8,memory=1GiB")
        assert grown.code == 0, grown.err
        shrunk = await cli("contribute", "--agent", small, "cpu=1,memory=1GiB")
        assert shrunk.code == 0 and "shrinking" in shrunk.out, shrunk.err

        async def total_cpu() -> float:
            return float((await client.pool.show())["total"].get("cpu", 0))

        assert await until(total_cpu, 9) == 9
        shown = await cli("show")
        assert f"shrinking: {small} contributes cpu=1" in shown.out, shown.out
        assert await free_cpu() == 4  # 8 - 4 leased on the big one; nothing on the small one
        for bad, why in (
            (("--agent", "nobody", "cpu=1"), "unknown agent 'nobody'"),
            (("--agent", small, "gpu=1"), "invalid resources"),
            (("--agent", small, "cpu=-1"), "invalid resources"),
        ):
            refused = await cli("contribute", *bad)
            assert refused.code == 2 and len(refused.err_lines) == 1, refused.err
            assert why in refused.err
        released = await cli("release", cli_lease["lease"])
        assert released.code == 0, released.err
        assert await until(free_cpu, 8.5) == 8.5  # 8 + 1 less the renewed 0.5
        assert "shrinking" not in (await cli("show")).out
        await client.pool.release(renewed["lease"])
