"""Prometheus metrics of real agents after real traffic (``--metrics-port``).

Expect every documented series to be served with the values the traffic implies: messages by
type, rejections by reason, handler and task latencies, tasks by outcome, load, heartbeat lag,
and the coordinator's epoch, registry size, tasks waiting by kind, finals and decision times.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from agentproc import Samples, eventually, free_port, scrape_metrics
from clitools import RunCli

from robeing.agents import Client
from robeing.broker import topology as topo
from robeing.protocol.envelope import Envelope
from robeing.protocol.taskmsgs import TaskRequest

pytestmark = pytest.mark.broker

scrape = scrape_metrics


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


@pytest.fixture
async def client(client_named: Callable[[str], Awaitable[Client]]) -> Client:
    return await client_named("metrics-client")


async def test_agents_serve_the_documented_series_with_real_values(
    spawn, watcher, client: Client, unique_id: Callable[[str], str]
) -> None:
    """Given a coordinator and a worker serving metrics, When tasks succeed, fail and are
    cancelled and a tampered message reaches the worker, Expect the scraped series to count
    each of them, with latency histograms and the coordinator's gauges."""
    coord_port, worker_port = free_port(), free_port()
    coord_id, worker_id = unique_id("m-coord"), unique_id("m-w")
    app = ("--app", "apps.sample_app")
    coord = await spawn("coordinator", coord_id, *app, "--metrics-port", str(coord_port))
    await watcher.wait_coordinator(coord_id)
    await spawn(
        "worker", worker_id, *app, "--specialization", "math", "--metrics-port", str(worker_port)
    )
    try:
        ok = [TaskRequest(f"m-ok-{i}", "add", {"a": i}, skills=("math",)) for i in range(5)]
        handles = await client.submit_many(ok, check=10)
        assert [(await h.result(20)).result for h in handles] == [0, 1, 2, 3, 4]
        boom = await client.submit("boom", [1], task_id="m-boom", skills=["math"])
        assert (await boom.result(20)).state == "failed"
        waiting = await client.submit("sort", [2, 1], task_id="m-wait", skills=["nosuch"])
        body = bytearray(client.agent.seal(Envelope("ping", {"x": 1}, receiver=worker_id)))
        body[-3] ^= 0xFF  # the signature no longer matches
        await client.agent.broker.publish(topo.DIRECT_EXCHANGE, worker_id, bytes(body))

        async def worker_counted() -> Samples | None:
            samples = await scrape(worker_port)
            return (
                samples if value(samples, "robeing_rejections_total", reason="signature") else None
            )

        w = await eventually(worker_counted, 15)
        assert w, "the worker never counted the tampered message"
        assert value(w, "robeing_agent_info", id=worker_id, role="worker", cluster="default") == 1
        assert value(w, "robeing_tasks_total", type="add", outcome="succeeded") == 5
        assert value(w, "robeing_tasks_total", type="boom", outcome="failed") == 1
        assert value(w, "robeing_task_seconds_count", type="add") == 5
        assert value(w, "robeing_task_seconds_bucket", type="add", le="+Inf") == 5
        assert value(w, "robeing_messages_received_total", type="task.assign") >= 2
        assert value(w, "robeing_messages_sent_total", type="task.result") >= 2
        assert value(w, "robeing_handler_seconds_count", type="task.assign") >= 2
        assert value(w, "robeing_capacity") == 32 and value(w, "robeing_load") == 0
        assert 0 <= value(w, "robeing_heartbeat_lag_seconds") < 5
        assert value(w, "robeing_reconnects_total") == 0
        # The readiness and startup probe of deploy/k8s: a started, connected agent.
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{worker_port}/healthz", timeout=10)
        assert (health.status_code, health.text) == (200, "alive\n")

        c = await scrape(coord_port)
        assert value(c, "robeing_coordinator_active") == 1
        assert value(c, "robeing_coordinator_epoch") > 0
        assert value(c, "robeing_coordinator_agents") >= 1
        assert value(c, "robeing_coordinator_tasks_waiting", kind="skill") == 1
        assert value(c, "robeing_coordinator_finals_total", state="succeeded") >= 5
        assert value(c, "robeing_coordinator_finals_total", state="failed") >= 1
        assert value(c, "robeing_coordinator_events_total", kind="submissions") >= 3
        assert value(c, "robeing_coordinator_decision_seconds_count") > 0
        beats = value(c, "robeing_heartbeat_receive_seconds_count")
        assert beats >= 1, "the coordinator timed no heartbeat to its handler"
        assert 0 <= value(c, "robeing_heartbeat_receive_seconds_sum") / beats < 5
        assert value(c, "robeing_messages_received_total", type="task.submit") >= 3

        assert (await client.cancel("m-wait"))["outcome"] == "cancelled"
        assert (await waiting.result(10)).state == "cancelled"
        c = await scrape(coord_port)
        assert value(c, "robeing_coordinator_finals_total", state="cancelled") >= 1
        assert value(c, "robeing_coordinator_events_total", kind="cancelled") >= 1
        assert value(c, "robeing_coordinator_tasks_waiting", kind="skill") == 0
    finally:
        await coord.terminate(20)


async def test_a_metrics_port_in_use_is_one_line_and_exit_2(
    run_cli: RunCli, amqp_url: str, keys_dir: Path
) -> None:
    """Given a port already bound, When an agent is asked to serve metrics there, Expect exit 2
    and one line naming the port (no traceback)."""
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await run_cli(
            "agent", "--role", "worker", "--id", "m-busy", "--metrics-port", str(port),
            amqp_url=amqp_url, keys=keys_dir,
        )  # fmt: skip
    assert result.code == 2, result.describe()
    assert "Traceback" not in result.err
    assert f"cannot serve metrics on port {port}" in result.err, result.describe()
