"""The local three-node cluster of ``deploy/local-cluster.sh``, for tests.

Cluster tests skip, saying how to start it, when the cluster is not up;
``ROBEING_REQUIRE_CLUSTER`` (set by ``tests/run.sh`` when it started the
cluster) turns that into a failure so a CI run cannot pass by skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from robeing.broker.management import Management, ManagementSettings, with_vhost

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "local-cluster.sh"
NODES = (1, 2, 3)
AMQP_URLS = tuple(f"amqp://guest:guest@127.0.0.1:{5680 + n}/" for n in NODES)
MANAGEMENT_URLS = tuple(f"http://127.0.0.1:{15680 + n}" for n in NODES)
AMQP_URL = ",".join(AMQP_URLS)
MANAGEMENT_URL = ",".join(MANAGEMENT_URLS)


def _up() -> str | None:
    """None when all three nodes answer, else why not."""
    for n in NODES:
        try:
            with socket.create_connection(("127.0.0.1", 5680 + n), 2):
                pass
        except OSError:
            return f"node c{n} is not listening on {5680 + n}"
    try:
        nodes = httpx.get(
            f"{MANAGEMENT_URLS[0]}/api/nodes", auth=("guest", "guest"), timeout=5
        ).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"the management API of c1 does not answer: {exc}"
    running = sum(1 for node in nodes if node.get("running"))
    return None if running == len(NODES) else f"{running} of {len(NODES)} nodes run"


def require_cluster() -> None:
    """Skip (or fail under ``ROBEING_REQUIRE_CLUSTER``) unless the cluster is up."""
    why = _up()
    if why is None:
        return
    message = f"the local RabbitMQ cluster is not up ({why}): run deploy/local-cluster.sh up"
    if os.environ.get("ROBEING_REQUIRE_CLUSTER"):
        pytest.fail(message)
    pytest.skip(message)


async def cluster(*args: str, timeout: float = 180) -> str:
    """Run ``deploy/local-cluster.sh *args``; its output (raises on failure)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(SCRIPT),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"local-cluster.sh {' '.join(args)} failed:\n{text}")
    return text


async def wait_running(timeout: float = 90.0) -> bool:
    """Until every node runs and answers, not partitioned; False if not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await cluster("status")
        if sum(1 for line in status.splitlines() if line.endswith(" running")) == len(NODES):
            return True
        await asyncio.sleep(1)
    return False


async def recover(node: int, timeout: float = 45.0) -> bool:
    """After ``node`` was resumed: wait for the partition to heal, else restart the node.

    RabbitMQ 3.10's autoheal was seen to restart a resumed node again and
    again, the partition never clearing; an operator restarts it, and so do
    we. Returns whether that restart was needed.
    """
    if await wait_running(timeout):
        return False
    await cluster("restart", str(node))
    if not await wait_running():
        raise AssertionError(f"the cluster did not recover:\n{await cluster('status')}")
    return True


async def heal() -> None:
    """Resume paused nodes and start stopped ones (after a failed run)."""
    for line in (await cluster("status")).splitlines():
        if line.endswith(" paused"):
            await cluster("resume", line[1])
    await cluster("up")
    for n in NODES:
        if not await wait_running(30):
            await cluster("restart", str(n))


def node_of(amqp_port: int) -> int:
    """The node number listening on ``amqp_port``."""
    return amqp_port - 5680


async def node_of_connection(name_part: str, timeout: float = 20.0) -> int:
    """The node number of the agent connection whose name contains ``name_part``.

    A coordinator's second connection, its feed of connection events, does not count.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=5) as http:
        while True:
            for base in MANAGEMENT_URLS:
                try:
                    conns = (await http.get(f"{base}/api/connections")).json()
                except (httpx.HTTPError, ValueError):
                    continue
                for c in conns:
                    name = (c.get("client_properties") or {}).get("connection_name", "")
                    if "(connection events)" in name:
                        continue
                    if name_part in name and str(c.get("node", "")).startswith("c"):
                        return int(str(c["node"])[1])
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no connection named like {name_part!r}")
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def cluster_vhost(prefix: str = "robeing-cluster") -> AsyncIterator[str]:
    """The three nodes' URLs at a fresh vhost, deleted afterwards (skips without the cluster)."""
    require_cluster()
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    where = ManagementSettings.from_amqp_url(AMQP_URL, override=MANAGEMENT_URL)
    async with Management(where) as mgmt:
        await mgmt.create_vhost(vhost)
        try:
            yield with_vhost(AMQP_URL, vhost)
        finally:
            with contextlib.suppress(Exception):
                await mgmt.delete_vhost(vhost)
