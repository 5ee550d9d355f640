"""The messenger's HTTP/JSON gateway driven by a real HTTP client (httpx) against real
agents: tasks, agents, messages; bad tokens, oversized and malformed bodies, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from agentproc import AgentProcess, HeartbeatWatcher, free_port

from robeing.agents.keystore import Keystore
from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.tokens import issue_token

pytestmark = pytest.mark.broker

FAST = ("--acceptable-pause", "0.5", "--dead-after", "0.5")


def token_for(keys_dir: Path, client: str, ttl: float = 600.0) -> str:
    ident = Keystore(keys_dir).load_identity(client, "client")
    return issue_token(ident.certificate.raw, ed25519_signer(ident.signing_key), time.time(), ttl)


@pytest.fixture(scope="module")
async def gateway(
    amqp_url: str,
    keys_dir: Path,
    watcher: HeartbeatWatcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict]:
    """One fleet for the module (a coordinator, a worker, a messenger serving HTTP)."""
    tag = str(time.monotonic_ns() % 10**7)
    port = free_port()
    log_dir = tmp_path_factory.mktemp("gateway-logs")
    worker = f"gw-{tag}"
    plan = {
        f"gc-{tag}": ("coordinator", ["--app", "apps.sample_app", *FAST]),
        worker: ("worker", ["--app", "apps.sample_app", "--specialization", "data_processing"]),
        f"gm-{tag}": ("messenger", ["--http", f"127.0.0.1:{port}", "--http-rate", "5"]),
    }
    procs = [
        AgentProcess(amqp_url, keys_dir, role, agent_id, args, log_dir)
        for agent_id, (role, args) in plan.items()
    ]
    base = f"http://127.0.0.1:{port}"
    alice, bob = token_for(keys_dir, f"alice-{tag}"), token_for(keys_dir, f"bob-{tag}")
    # The rate-limit test drains its client's bucket: it gets a client of its own, so the
    # module's tests pass in any order.
    carol = token_for(keys_dir, f"carol-{tag}")
    try:
        for proc in procs:
            await proc.start()
        await watcher.wait_coordinator(f"gc-{tag}")
        for proc in procs:
            await watcher.wait_alive(proc.agent_id, timeout=40, process=proc)
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            await until_listed(http, token_for(keys_dir, f"ops-{tag}"), worker)
            yield {"http": http, "alice": alice, "bob": bob, "carol": carol, "worker": worker}
    finally:
        await procs[0].terminate(20)
        for proc in procs:
            proc.kill_sync()


async def until_listed(http: httpx.AsyncClient, token: str, agent: str) -> None:
    """Wait until the gateway has heard the agent's heartbeat: a gateway knows only the
    agents it has heard since it started, which can be after a fast task has finished."""
    for _ in range(60):  # 4 requests a second stay under the gateway's rate limit
        agents = (await http.get("/agents", headers=auth(token))).json().get("agents", [])
        if any(a["id"] == agent for a in agents):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"the gateway never listed {agent}")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tasks_agents_and_messages_over_http(gateway: dict) -> None:
    """Given a token, Expect a task submitted, followed to its result; the live agents
    listed with roles and priorities; a request answered by a worker; and another
    client unable to see the task."""
    http, alice = gateway["http"], auth(gateway["alice"])
    wc = {"type": "wordcount", "payload": "a b a", "id": "wc1"}
    r = await http.post("/tasks", json=wc, headers=alice)
    assert r.status_code == 202 and r.json() == {"id": "wc1", "state": "submitted"}
    for _ in range(80):
        task = (await http.get("/tasks/wc1", headers=alice)).json()
        if task["state"] not in ("submitted", "running"):
            break
        await asyncio.sleep(0.1)
    assert task["state"] == "succeeded" and task["result"]["counts"] == {"a": 2, "b": 1}
    assert (await http.get("/tasks/wc1", headers=auth(gateway["bob"]))).status_code == 404

    agents = (await http.get("/agents", headers=alice)).json()["agents"]
    row = next(a for a in agents if a["id"] == gateway["worker"])
    assert row["role"] == "worker" and row["priority"] == 3 and "wordcount" in row["task_types"]

    echo = {"type": "echo", "payload": {"x": 1}, "request": True}
    r = await http.post(f"/messages/{gateway['worker']}", json=echo, headers=alice)
    assert r.status_code == 200 and r.json()["reply"]["echo"] == {"x": 1}


@pytest.mark.parametrize(
    "headers, status, needle",
    [
        ({}, 401, "Bearer"),
        ({"Authorization": "Bearer nonsense"}, 401, "malformed"),
        ({"Authorization": "Basic abc"}, 401, "Bearer"),
    ],
)
async def test_requests_without_a_valid_token_are_refused_as_json(
    gateway: dict, headers: dict[str, str], status: int, needle: str
) -> None:
    r = await gateway["http"].get("/agents", headers=headers)
    assert r.status_code == status and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert needle in r.json()["error"]["message"]


async def test_bad_requests_get_a_json_error_with_the_right_status(gateway: dict) -> None:
    """Expect 413 for 2 MiB, 400 for malformed JSON or a task without a type, 415 for
    text, 403 for a type reserved to the protocol, 404 for unknown routes and agents,
    405 for a wrong method, 429 with Retry-After past the rate limit."""
    http, h = gateway["http"], auth(gateway["carol"])
    json_h = {**h, "Content-Type": "application/json"}
    text_h = {**h, "Content-Type": "text/plain"}
    huge = b'{"p": "' + b"x" * (2 << 20) + b'"}'
    worker = f"/messages/{gateway['worker']}"
    cases = [
        (await http.post("/tasks", content=huge, headers=json_h), 413),
        (await http.post("/tasks", content=b"{not json", headers=json_h), 400),
        (await http.post("/tasks", json={"payload": 1}, headers=h), 400),
        (await http.post("/tasks", content=b"type=sort", headers=text_h), 415),
        (await http.post(worker, json={"type": "task.result"}, headers=h), 403),
        (await http.post("/messages/nobody-here", json={"type": "echo"}, headers=h), 404),
        (await http.get("/nowhere", headers=h), 404),
        (await http.delete("/tasks/x", headers=h), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        assert response.json()["error"]["status"] == status
    await asyncio.sleep(2.5)  # the bucket refills (5/s, burst 10)
    statuses = [(await http.get("/agents", headers=h)).status_code for _ in range(15)]
    assert statuses[:10] == [200] * 10 and 429 in statuses[10:]
    limited = await http.get("/agents", headers=h)
    assert limited.status_code == 429 and "Retry-After" in limited.headers
