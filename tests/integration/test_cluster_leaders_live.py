"""Leaders of named clusters with real processes: one leader per term, summaries upward.

One fleet for the module: a coordinator and a cluster of three workers started
with CLUSTER_ID. The elected member holds the cluster's lock and shows its term;
the coordinator hears the members through the leader's summaries, not their own
heartbeats; a task for the cluster runs; the leader killed with SIGKILL is
replaced by another member with a higher term within seconds, and a task in
flight meanwhile still finishes, once; while a leader is paused, the
coordinator still hears the members.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from agentproc import eventually

from robeing.agents import Client, Settings
from robeing.broker import topology as topo
from robeing.protocol.taskmsgs import TaskRequest

pytestmark = pytest.mark.broker

FAST = ("--acceptable-pause", "0.5", "--dead-after", "0.5")


async def test_a_named_cluster_has_one_leader_per_term_that_summarises_and_is_replaced(
    spawn, watcher, run_cli, amqp_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given a coordinator and three workers with CLUSTER_ID, Expect one of them to lead
    with a term shown by `cluster show`, the coordinator to fold summaries instead of
    member heartbeats, a --cluster task to succeed, and after SIGKILL of the leader a
    new leader of a higher term within seconds with the task in flight finished once."""
    tag = uuid.uuid4().hex[:6]
    name, coord = f"lc-{tag}", f"lcc-{tag}"
    app = ("--app", "apps.sample_app")
    await spawn("coordinator", coord, *app, *FAST)
    await watcher.wait_coordinator(coord)
    ids = [f"lw{i}-{tag}" for i in range(3)]
    procs = {
        w: await spawn("worker", w, *app, "--specialization", "math", "--cluster-id", name)
        for w in ids
    }
    settings = Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings) as client:

        async def led() -> dict[str, Any] | None:
            shown = await client.clusters.show(name)
            return shown if shown.get("leader") and shown.get("term") else None

        shown = await eventually(led, timeout=15)
        leader, term = shown["leader"], shown["term"]
        assert leader in ids and shown["candidate"] in ids
        assert {m["id"] for m in shown["member_list"]} == set(ids)
        shown_cli = await run_cli("cluster", "show", name, amqp_url=amqp_url, keys=keys_dir)
        assert shown_cli.code == 0, shown_cli.err
        assert f"leader: {leader} (term {term})" in shown_cli.out, shown_cli.out
        # The leader holds the cluster's lock: nobody else can take it.
        assert not await watcher.agent.broker.try_exclusive(topo.cluster_lock_spec(name))
        # Observers still list every member (from the summaries), the leader with its term.
        await eventually(
            lambda: _true(watcher.latest[leader].extra.get("leader", {}).get("term") == term)
        )

        # What `robeing status` and the gateway list: every member, from the summaries.
        live = await client.live_agents(1.5)
        assert set(ids) <= set(live), sorted(live)
        assert {live[w].extra.get("via") for w in ids} == {leader}

        # The coordinator hears the members only through summaries now.
        def report() -> dict[str, Any]:
            return dict(watcher.latest[coord].extra["coordinator"])

        before = report()
        await asyncio.sleep(2.5)
        after = report()
        assert after.get("summaries", 0) - before.get("summaries", 0) >= 2, after
        assert after.get("member_heartbeats_direct", 0) == before.get(
            "member_heartbeats_direct", 0
        ), (before, after)

        final = await (await client.submit("add", {"a": 2, "b": 3}, cluster=name)).result(20)
        assert final.ok and final.result == 5, final

        # A task in flight on a member that is not the leader, then the leader dies.
        others = [w for w in ids if w != leader]
        slow = [
            TaskRequest(f"slow-{tag}-{i}", "sleepy", {"seconds": 2.0}, cluster=name)
            for i in range(2)
        ]
        handles = await client.submit_many(slow)
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        procs[leader].signal(signal.SIGKILL)

        async def replaced() -> dict[str, Any] | None:
            s = await client.clusters.show(name)
            return s if s.get("leader") in others and (s.get("term") or 0) > term else None

        new = await eventually(replaced, timeout=10, every=0.1)
        took = time.monotonic() - killed_at
        assert took < 5.0, f"a new leader after {took:.1f} s"
        finals = [await h.result(30) for h in handles]
        assert all(f.ok for f in finals), finals
        # The survivors are still listed; the dead leader is not live.
        shown = await client.clusters.show(name)
        live = {m["id"] for m in shown["member_list"] if m["joined"]}
        assert live == set(others), shown

        # The new leader paused with its connection open: its queue keeps taking the
        # members' beats, but the coordinator hears them itself (its stand-in feed).
        paused = new["leader"]
        (member,) = set(others) - {paused}
        procs[paused].signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(4.0)  # > acceptable pause + dead-after: a silent agent is dead
            shown = await client.clusters.show(name)
            health = {m["id"]: m["health"] for m in shown["member_list"]}
            assert health[member] == "alive", shown
            assert shown["leader"] is None, shown  # no summaries: no live leader
        finally:
            procs[paused].signal(signal.SIGCONT)

        async def resumed() -> dict[str, Any] | None:
            s = await client.clusters.show(name)
            return s if s.get("leader") and (s.get("term") or 0) >= new["term"] else None

        await eventually(resumed, timeout=10)
        final = await (await client.submit("add", {"a": 1, "b": 1}, cluster=name)).result(20)
        assert final.ok, final


async def _true(value: bool) -> bool:
    return value
