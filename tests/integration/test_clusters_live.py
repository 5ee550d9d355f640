"""Clusters with real processes: formed on demand, named by CLUSTER_ID, kept on the broker.

A coordinator and workers run as users start them; clusters are formed,
shown and dissolved with the ``robeing`` command; tasks for a cluster run on
its members only; bad requests are one line with exit 2 and move nobody; the
definitions outlive the coordinator that wrote them.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import pytest
from agentproc import eventually

from robeing.agents import Client, Settings
from robeing.agents.clusters import ClusterRefused
from robeing.protocol.taskmsgs import TaskRequest

pytestmark = pytest.mark.broker

FAST = ("--acceptable-pause", "0.5", "--dead-after", "0.5")


async def wait_cluster(watcher, agent_id: str, cluster: str, timeout: float = 15.0) -> None:
    """Until ``agent_id``'s heartbeats announce ``cluster``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = watcher.latest.get(agent_id)
        if st is not None and st.cluster_id == cluster:
            return
        await asyncio.sleep(0.1)
    st = watcher.latest.get(agent_id)
    raise AssertionError(f"{agent_id} announces {st.cluster_id if st else None}, not {cluster}")


def ran_on(out: Path, task_id: str) -> list[str]:
    return sorted(
        p.stem
        for p in out.glob("*.tasks")
        for line in p.read_text().splitlines()
        if line.split()[:2] == ["add", task_id]
    )


async def test_a_cluster_formed_on_demand_takes_its_tasks_and_outlives_its_coordinator(
    spawn, watcher, run_cli, amqp_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given a coordinator, three math workers, an analysis worker and a worker
    started with CLUSTER_ID, When a cluster of two math agents is formed,
    Expect the two best to move, tasks for it to run only on them, bad requests refused in
    one line with nobody moved, the definition to survive a coordinator failover, and a
    dissolve to bring the members home."""
    out = tmp_path / "out"
    out.mkdir()
    env = {"SAMPLE_OUT": str(out)}
    tag = uuid.uuid4().hex[:6]
    name, static = f"etl-{tag}", f"static-{tag}"
    coord = await spawn("coordinator", f"cc-{tag}", "--app", "apps.sample_app", *FAST, env=env)
    await watcher.wait_coordinator(f"cc-{tag}")
    app = ("--app", "apps.sample_app")
    dp = [f"dp{i}-{tag}" for i in range(3)]
    procs = {w: await spawn("worker", w, *app, "--specialization", "math", env=env) for w in dp}
    await spawn("worker", f"an-{tag}", *app, "--specialization", "analysis", env=env)
    await spawn("worker", f"st-{tag}", *app, "--specialization", "math",
                env={**env, "CLUSTER_ID": static})  # fmt: skip
    await asyncio.sleep(1.2)  # the coordinator has seen their heartbeats

    def cli(*args: str):
        return run_cli(*args, amqp_url=amqp_url, keys=keys_dir, timeout=30)

    formed = await cli("cluster", "form", name, "--purpose", "nightly etl",
                       "--skills", "math", "--size", "2")  # fmt: skip
    assert formed.code == 0, formed.err
    members = formed.out.split(":", 1)[1].strip().split(", ")
    assert len(members) == 2 and set(members) <= set(dp), formed.out
    (stayed,) = set(dp) - set(members)
    for m in members:
        await wait_cluster(watcher, m, name)

    # Bad input: one line naming what is available, exit 2, nobody moved.
    unknown = await cli("cluster", "form", f"x-{tag}", "--skills", "gpu", "--size", "1")
    assert unknown.code == 2
    assert unknown.err.strip().count("\n") == 0
    assert "has skill(s) gpu; available skills: analysis (1), math (1)" in (
        unknown.err
    )
    too_many = await cli("cluster", "form", f"x-{tag}", "--skills", "math",
                         "--size", "5")  # fmt: skip
    assert too_many.code == 2
    assert f"asked for 5 agents with skills math; 1 available in the default " \
           f"cluster: {stayed}" in too_many.err  # fmt: skip
    taken = await cli("cluster", "form", name, "--size", "1")
    assert taken.code == 2 and f"cluster {name!r} exists" in taken.err
    static_taken = await cli("cluster", "form", static, "--size", "1")
    assert static_taken.code == 2 and "CLUSTER_ID" in static_taken.err
    await asyncio.sleep(1.0)
    assert watcher.latest[stayed].cluster_id == "default"
    assert watcher.latest[f"an-{tag}"].cluster_id == "default"

    settings = Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings) as client:
        # Tasks for the cluster run on its members; tasks without one stay in default.
        reqs = [TaskRequest(f"c-{tag}-{i}", "add", {"a": i, "b": 1}, cluster=name)
                for i in range(6)]  # fmt: skip
        reqs += [TaskRequest(f"d-{tag}-{i}", "add", {"a": i, "b": 1}) for i in range(4)]
        reqs.append(TaskRequest(f"s-{tag}", "add", {"a": 1, "b": 1}, cluster=static))
        finals = [await h.result(30) for h in await client.submit_many(reqs)]
        assert all(f.ok for f in finals), finals
        for i in range(6):
            assert set(ran_on(out, f"c-{tag}-{i}")) <= set(members)
        for i in range(4):
            assert set(ran_on(out, f"d-{tag}-{i}")) <= {stayed}
        assert ran_on(out, f"s-{tag}") == [f"st-{tag}"]
        # A split task to the cluster: merged over its members.
        wc = await client.submit("wordcount", ["a b", "b c", "c d", "d e"], agents=2,
                                 cluster=name, skills=["math"])  # fmt: skip
        final = await wc.result(30)
        assert final.ok and final.result["words"] == 8, final

        shown = await client.clusters.show(name)
        assert shown["kind"] == "formed" and shown["purpose"] == "nightly etl"
        assert {m["id"] for m in shown["member_list"]} == set(members)
        listed = {c["name"]: c for c in await client.clusters.list()}
        assert listed[name]["live"] == 2 and listed[static]["kind"] == "static"
        with pytest.raises(ClusterRefused, match="no cluster named 'nope-"):
            await client.clusters.show(f"nope-{tag}")

    # The leader is the best scored member; `cluster show` prints why.
    shown_cli = await cli("cluster", "show", name)
    assert shown_cli.code == 0, shown_cli.err
    for word in ("experience", "reliability", "resources", "availability", "(leader)"):
        assert word in shown_cli.out, shown_cli.out
    leader = shown["leader"]
    assert leader in members
    assert all(set(m["score"]) >= {"experience", "total"} for m in shown["member_list"])
    # Killed, the leader is replaced by the other member once the coordinator sees it dead.
    procs[leader].signal(signal.SIGKILL)
    (other,) = set(members) - {leader}

    async def next_leader() -> bool:
        async with Client(settings) as c:
            return (await c.clusters.show(name))["leader"] == other

    assert await eventually(next_leader, timeout=10), "the leader was not replaced"
    members = [other, leader]

    # The definition outlives its coordinator: a new one reads it from the broker.
    await coord.terminate(20)
    await spawn("coordinator", f"cc2-{tag}", "--app", "apps.sample_app", *FAST, env=env)
    await watcher.wait_coordinator(f"cc2-{tag}")
    listed_after = await cli("cluster", "list", "--json")
    assert listed_after.code == 0, listed_after.err
    assert name in listed_after.out

    left = await cli("cluster", "leave", "--agent", other)
    assert left.code == 0, left.err
    await wait_cluster(watcher, other, "default")
    not_in = await cli("cluster", "leave", "--agent", stayed)
    assert not_in.code == 2 and "in no named cluster" in not_in.err

    dissolved = await cli("cluster", "dissolve", name)
    assert dissolved.code == 0, dissolved.err
    assert dissolved.out.strip().endswith(f"back in the default cluster: {leader}")
    gone = await cli("cluster", "show", name)
    assert gone.code == 2 and f"no cluster named {name!r}" in gone.err
