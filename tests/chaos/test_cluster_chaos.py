"""Cluster chaos: a fleet on the local three-node cluster while its nodes fail.

While a client submits a steady stream of tasks to a fleet (an active and a
standby coordinator, three workers, every process given all three nodes'
addresses), the nemesis works through the faults a cluster sees, one node at
a time, each followed by the node's return:

* ``kill``: ``kill -9`` of a node, restarted after a few seconds;
* ``pause``: SIGSTOP of a node for longer than ``net_ticktime`` (10 s on the
  local cluster), so its peers see a partition, then SIGCONT (and, when
  autoheal has not healed the partition within 45 s, a restart of the node:
  the report says so);
* ``restart``: one node stopped cleanly and started again;
* ``rolling``: every node restarted in turn (a rolling upgrade); only with
  ``ROBEING_CLUSTER_CHAOS_ROLLING=1`` or in a long run (see ``ROLLING``).

Then the checker waits for every accepted task and asserts lost = duplicated
= unexpected = 0, as the single-broker suite does, and reports for each kind
of fault the longest time in which no task completed (the stall).

Needs ``deploy/local-cluster.sh up``; runs under ``tests/run.sh`` in CI (which
starts the cluster and sets ``ROBEING_REQUIRE_CLUSTER``) or with
``ROBEING_CLUSTER_CHAOS=1``, and skips, saying so, otherwise. The default
(CI) run does kill, pause and restart once each (about 70 s);
``ROBEING_CLUSTER_CHAOS_SECONDS=600`` repeats the cycle, with the rolling
restart, until that many seconds have passed; ``ROBEING_CHAOS_SEED`` picks the
nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentproc import AgentProcess, HeartbeatWatcher
from localcluster import NODES, cluster, cluster_vhost, heal, recover
from supervisor import Supervisor, judge, stream_tasks

from robeing.agents import Client, Settings

pytestmark = [pytest.mark.broker, pytest.mark.chaos, pytest.mark.cluster]

SECONDS = float(os.environ.get("ROBEING_CLUSTER_CHAOS_SECONDS", "0"))  # 0: one cycle
# The rolling restart (three node restarts, about 45 s) is left out of the
# short (CI) run, which restarts one node; on by default in long runs.
ROLLING = os.environ.get("ROBEING_CLUSTER_CHAOS_ROLLING", "1" if SECONDS else "0") == "1"
SEED = int(os.environ.get("ROBEING_CHAOS_SEED", "1"))
SETTLE_BOUND_S = 120.0
PAUSE_S = 15.0  # past net_ticktime (10 s): the peers declare the node down
DOWN_S = 5.0  # how long a killed node stays down
FAST = ("--acceptable-pause", "1.0", "--dead-after", "2.0")


@pytest.fixture
async def cluster_url() -> AsyncIterator[str]:
    if os.environ.get("ROBEING_CLUSTER_CHAOS") != "1" and not os.environ.get(
        "ROBEING_REQUIRE_CLUSTER"
    ):
        pytest.skip("cluster chaos runs under tests/run.sh in CI, or with ROBEING_CLUSTER_CHAOS=1")
    async with cluster_vhost("robeing-chaos") as url:
        yield url


async def nemesis(rng: random.Random, until: float, log: list[tuple[str, float, float]]) -> None:
    """One cycle of kill, pause, restart (and rolling restart), repeated until ``until``.

    Appends ``(fault, start, end)`` for each, the end being when the node was back.
    """
    while True:
        node = rng.choice(NODES)
        start = time.monotonic()
        await cluster("kill", str(node))
        await asyncio.sleep(DOWN_S)
        await cluster("restart", str(node))
        log.append((f"kill c{node}", start, time.monotonic()))
        await asyncio.sleep(3)

        node = rng.choice(NODES)
        start = time.monotonic()
        await cluster("pause", str(node))
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            await cluster("resume", str(node))
        restarted = await recover(node)
        log.append((f"pause c{node}{' +restart' if restarted else ''}", start, time.monotonic()))
        await asyncio.sleep(3)

        node = rng.choice(NODES)
        start = time.monotonic()
        await cluster("restart", str(node))
        log.append((f"restart c{node}", start, time.monotonic()))
        await asyncio.sleep(3)

        if ROLLING:
            start = time.monotonic()
            for n in NODES:
                await cluster("restart", str(n))
            log.append(("rolling restart", start, time.monotonic()))
        if time.monotonic() >= until:
            return
        await asyncio.sleep(3)


def longest_stall(done: list[float], start: float, end: float) -> float:
    """The longest time within ``[start, end]`` in which no task completed."""
    inside = [t for t in sorted(done) if start <= t <= end]
    edges = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(edges))


@pytest.mark.timeout(1800)
async def test_a_fleet_on_a_cluster_loses_nothing_while_nodes_fail(
    cluster_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given a fleet with the three nodes' addresses and a stream of tasks, When nodes are
    killed, paused past the tick time and restarted one by one, Expect every accepted task
    to finish exactly once with the right result."""
    rng = random.Random(SEED)
    out = tmp_path / "out"
    out.mkdir()

    spawned: list[AgentProcess] = []  # the supervisor's restarts too: each has a log open

    async def spawn(role: str, agent_id: str, *args: str, env=None, wait=False):
        proc = AgentProcess(cluster_url, keys_dir, role, agent_id, list(args), tmp_path, env)
        spawned.append(proc)
        await proc.start()
        return proc

    watcher = HeartbeatWatcher(cluster_url, keys_dir)
    await watcher.start()
    sup = Supervisor(spawn, {"SAMPLE_OUT": str(out)})
    app = ("--app", "apps.sample_app")
    accepted: dict[str, object] = {}
    expected: dict[str, float] = {}
    done: list[float] = []
    faults: list[tuple[str, float, float]] = []
    try:
        await sup.add("coordinator", "cchaos-c1", *app, *FAST)
        await watcher.wait_coordinator("cchaos-c1", timeout=30)
        await sup.add("coordinator", "cchaos-c2", *app, *FAST, "--standby")
        for i in range(3):
            await sup.add("worker", f"cchaos-w{i}", *app, "--specialization", "math")
        for i in range(3):
            await watcher.wait_alive(f"cchaos-w{i}", timeout=30)
        sup.start()

        settings = Settings(
            role="client", agent_id="cchaos-client", amqp_url=cluster_url, keys_dir=keys_dir
        )
        async with Client(settings) as client:
            t0 = time.monotonic()
            until = t0 + SECONDS
            stop = asyncio.Event()
            waiters: list[asyncio.Task[object]] = []

            async def wait_for(handle) -> object:
                final = await handle.result(SECONDS + SETTLE_BOUND_S + 900)
                done.append(time.monotonic())
                return final

            streaming = asyncio.create_task(
                stream_tasks(
                    client,
                    f"cchaos-{SEED}",
                    accepted,
                    expected,
                    lambda: not stop.is_set(),
                    lambda handle: waiters.append(asyncio.create_task(wait_for(handle))),
                )
            )
            await asyncio.sleep(3)
            await nemesis(rng, until, faults)
            await asyncio.sleep(3)
            stop.set()
            await streaming
            end = time.monotonic()
            finished, pending = await asyncio.wait(waiters, timeout=SETTLE_BOUND_S)
            for task in pending:
                task.cancel()
            results = {}
            for task_id, task in zip(accepted, waiters, strict=True):
                if task in finished and task.exception() is None:
                    results[task_id] = task.result()
            duplicated = sum(n - 1 for n in client.delivered.values() if n > 1)
    finally:
        await sup.stop()
        for proc in spawned:
            with contextlib.suppress(Exception):
                proc.kill_sync()
        await watcher.stop()
        await heal()

    completed = sum(1 for t, f in results.items() if f.ok and f.result == expected[t])
    unexpected = len(results) - completed
    lost = len(accepted) - len(results)
    stalls: dict[str, float] = {}
    for name, start, stop_at in faults:
        kind = name.split()[0]
        stalls[kind] = max(stalls.get(kind, 0.0), longest_stall(done, start, stop_at + 1.0))
    report = {
        "seed": SEED,
        "seconds": round(end - t0, 1),
        "accepted": len(accepted),
        "completed": completed,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "longest_stall_s": {k: round(v, 2) for k, v in stalls.items()},
        "faults": [(n, round(s - t0, 1), round(e - t0, 1)) for n, s, e in faults],
        "restarts": sup.restarts,
    }
    judge(f"cluster-chaos-{SEED}", report)
