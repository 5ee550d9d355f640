"""A fleet on a three-node cluster keeps completing tasks while a node is killed or cut off.

Needs ``deploy/local-cluster.sh up`` (skips otherwise, saying so). Every
process gets all three addresses. One test kills -9 the node the worker is
connected to, and expects the worker to fail over and the tasks submitted
before, during and after to finish exactly once. The other pauses the node
the active coordinator is connected to past net_ticktime (a partition as its
peers see it) and checks the lead's hand-over (broker/lease.py): never two
coordinators acting at once, every epoch one coordinator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from agentproc import AgentProcess, HeartbeatWatcher
from localcluster import cluster, cluster_vhost, heal, node_of_connection, recover
from supervisor import Supervisor

from robeing.agents import Client, Settings

pytestmark = [pytest.mark.broker, pytest.mark.cluster]

FAST = ("--acceptable-pause", "1", "--dead-after", "2")


@pytest.fixture
async def cluster_url() -> AsyncIterator[str]:
    async with cluster_vhost() as url:
        yield url


async def test_a_fleet_fails_over_when_its_node_is_killed(
    cluster_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given a coordinator and a worker started with the three nodes' URLs, When the
    worker's node is killed -9 while tasks flow, Expect every task to finish exactly
    once and the worker to be back (on another node) within seconds."""
    watcher = HeartbeatWatcher(cluster_url, keys_dir)
    await watcher.start()
    procs: list[AgentProcess] = []
    killed: int | None = None
    try:
        tag = uuid.uuid4().hex[:6]
        coord = AgentProcess(
            cluster_url, keys_dir, "coordinator", f"coord-{tag}",
            ["--app", "apps.sample_app", *FAST], tmp_path,
        )  # fmt: skip
        procs.append(coord)
        await coord.start()
        await watcher.wait_coordinator(coord.agent_id, timeout=30)
        worker = AgentProcess(
            cluster_url, keys_dir, "worker", f"w-{tag}",
            ["--app", "apps.sample_app", "--specialization", "math"], tmp_path,
        )  # fmt: skip
        procs.append(worker)
        await worker.start()
        await watcher.wait_alive(worker.agent_id, timeout=30, process=worker)

        settings = Settings(role="client", amqp_url=cluster_url, keys_dir=keys_dir)
        async with Client(settings) as client:
            before = [await client.submit("add", {"a": i, "b": 1}) for i in range(5)]
            for h in before:
                assert (await h.result(30)).result is not None

            killed = await node_of_connection(f"worker {worker.agent_id} ")
            await cluster("kill", str(killed))
            t0 = time.monotonic()
            during = [await client.submit("add", {"a": i, "b": 2}) for i in range(10)]
            results = [await h.result(60) for h in during]
            stall = time.monotonic() - t0

            assert [r.state for r in results] == ["succeeded"] * 10, results
            assert [r.result for r in results] == [i + 2 for i in range(10)]
            moved = await node_of_connection(f"worker {worker.agent_id} ")
            assert moved != killed
            assert stall < 45, f"tasks took {stall:.1f}s after the node died"
            await watcher.wait_alive(worker.agent_id, timeout=20, process=worker)
    finally:
        for p in procs:
            p.kill_sync()
        await watcher.stop()
        if killed is not None:
            await cluster("restart", str(killed))


PAUSE_S = 15.0  # past net_ticktime (10 s on the local cluster): the majority declares it down
_STAMP = re.compile(r"^(\S+Z) ")


def _when(line: str) -> float:
    """The wall-clock time of an agent's log line."""
    stamp = _STAMP.match(line)
    assert stamp, line
    return datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00")).timestamp()


def _lines(proc: AgentProcess, *needles: str) -> list[tuple[float, str]]:
    return [(_when(ln), ln) for ln in proc.log().splitlines() if any(n in ln for n in needles)]


async def test_a_coordinator_cut_off_with_its_node_hands_over_without_overlap(
    cluster_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given an active and a standby coordinator and a worker on the three nodes (restarted
    when they exit, as any deployment does), When the node the active one is connected to
    is paused past net_ticktime while tasks flow, Expect the lead to move once the majority
    declared the node down, the deposed coordinator to stop acting before the new one
    starts, every epoch to belong to one coordinator, no worker to run an assignment older
    than one it has seen, and every task to finish exactly once."""
    out = tmp_path / "out"
    out.mkdir()
    procs: dict[str, AgentProcess] = {}

    async def spawn(role: str, agent_id: str, *args: str, env=None, wait=False) -> AgentProcess:
        proc = AgentProcess(cluster_url, keys_dir, role, agent_id, list(args), tmp_path, env)
        procs.setdefault(agent_id, proc)  # a restart appends to the same log
        await proc.start()
        return proc

    watcher = HeartbeatWatcher(cluster_url, keys_dir)
    await watcher.start()
    sup = Supervisor(spawn, {"SAMPLE_OUT": str(out)})
    tag = uuid.uuid4().hex[:6]
    app = ("--app", "apps.sample_app")
    lead, standby, worker = f"lead-{tag}", f"stby-{tag}", f"lw-{tag}"
    paused: int | None = None
    try:
        await sup.add("coordinator", lead, *app, *FAST)
        await watcher.wait_coordinator(lead, timeout=30)
        await sup.add("coordinator", standby, *app, *FAST, "--standby")
        await sup.add("worker", worker, *app, "--specialization", "math")
        await watcher.wait_alive(worker, timeout=30)
        sup.start()
        settings = Settings(role="client", amqp_url=cluster_url, keys_dir=keys_dir)
        async with Client(settings) as client:
            handles = [await client.submit("add", {"a": i, "b": 1}) for i in range(3)]
            for h in handles:
                assert (await h.result(30)).ok
            paused = await node_of_connection(f"coordinator {lead} ")
            await cluster("pause", str(paused))
            t_pause = time.time()
            try:
                while time.time() - t_pause < PAUSE_S:
                    with contextlib.suppress(Exception):
                        handles.append(await client.submit("add", {"a": len(handles), "b": 1}))
                    await asyncio.sleep(0.5)
            finally:
                await cluster("resume", str(paused))
            await recover(paused)
            finals = [await h.result(90) for h in handles]
            assert [f.result for f in finals] == [i + 1 for i in range(len(handles))]
            assert client.duplicates == 0
    finally:
        await sup.stop()
        for p in procs.values():
            p.kill_sync()
        for _, _, p in sup.members.values():
            p.kill_sync()
        await watcher.stop()
        if paused is not None:
            await heal()

    leads = sorted(
        (t, procs[c].agent_id, int(ln.rsplit(" ", 1)[1]))
        for c in (lead, standby)
        for t, ln in _lines(procs[c], "active with epoch")
    )
    assert len({epoch for _, _, epoch in leads}) == len(leads), leads  # one coordinator each
    after = [x for x in leads if x[0] > t_pause]
    assert after, f"no coordinator took the lead after the pause: {leads}"
    new_at = after[0][0]
    stopped = [t for t, _ in _lines(procs[lead], "lost its broker connection", "giving it up")]
    stopped = [t for t in stopped if t > t_pause]
    assert stopped and stopped[0] <= new_at, (stopped, after)
    ran = [ln.split() for p in out.glob("*.tasks") for ln in p.read_text().splitlines()]
    epochs = [int(r[3]) for r in ran if r[0] == "add"]
    assert epochs == sorted(epochs), "a worker ran an assignment older than one it had seen"
    assert set(epochs) <= {epoch for _, _, epoch in leads}
    print(
        f"paused c{paused}: the lead stopped acting after {stopped[0] - t_pause:.1f}s, "
        f"{after[0][1]} took over after {new_at - t_pause:.1f}s"
    )
