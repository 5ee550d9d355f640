"""A fleet on a three-node cluster keeps completing tasks while a node is killed.

Needs ``deploy/local-cluster.sh up`` (skips otherwise, saying so). Every
process gets all three addresses; the test kills -9 the node the worker is
connected to, and expects the worker to fail over and the tasks submitted
before, during and after to finish exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentproc import AgentProcess, HeartbeatWatcher
from localcluster import cluster, cluster_vhost, node_of_connection

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
