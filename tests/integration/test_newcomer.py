"""What a newcomer hits on a first run, with real processes (issue: operating day to day).

Expect the original deployment's values to start a working fleet, an --app module next to
where the command runs to be found, the README's broadcast to dead-letter nothing, an agent
stopped with SIGTERM to show as left with its role, per-agent queues to survive a restart and
expire once their agent is gone for good, and bad broker URLs to be one line each.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from agentproc import AgentProcess, HeartbeatWatcher, eventually
from clitools import RunCli

from robeing.agents import Client
from robeing.broker import topology as topo
from robeing.broker.management import Management

pytestmark = pytest.mark.broker


@pytest.fixture
def procs(amqp_url: str, keys_dir: Path, tmp_path: Path):
    """Factory: a `robeing` process with any arguments and environment; all killed after."""
    started: list[AgentProcess] = []

    async def start(
        agent_id: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> AgentProcess:
        proc = AgentProcess(amqp_url, keys_dir, "worker", agent_id, [], tmp_path, env, cwd)
        proc.argv = [*proc.argv[:3], *argv]  # python -m robeing.agents, then ours
        started.append(proc)
        await proc.start()
        return proc

    yield start
    for proc in started:
        proc.kill_sync()


async def test_the_original_deployments_values_run_a_fleet_and_a_stopped_agent_left(
    procs, watcher: HeartbeatWatcher, client_named: Callable[[str], Awaitable[Client]],
    run_cli: RunCli, amqp_url: str, keys_dir: Path, unique_id: Callable[[str], str],
) -> None:  # fmt: skip
    """Given the original Compose file's variables (ROLE=COORDINATOR, AGENT_COUNT=5;
    AGENT_ROLE=WORKER, SPECIALIZATION, COORDINATOR_URL), When `robeing agent` runs with them,
    Expect a coordinator and a worker that run a task, the unused variables logged as not
    needed, and, once the worker is stopped with SIGTERM, `status` showing it 'left' with its
    role."""
    coord_id, worker_id = unique_id("orig-coord"), unique_id("orig-w")
    coord = await procs(
        coord_id,
        ["agent", "--id", coord_id, "--heartbeat-interval", "0.5"],
        {"ROLE": "COORDINATOR", "AGENT_COUNT": "5"},
    )
    await watcher.wait_coordinator(coord_id, timeout=30)
    worker = await procs(
        worker_id,
        ["agent", "--id", worker_id, "--heartbeat-interval", "0.5"],
        {
            "AGENT_ROLE": "WORKER",
            "SPECIALIZATION": "data_processing",
            "COORDINATOR_URL": "http://coordinator:8080",
        },
    )
    await watcher.wait_alive(worker_id, timeout=30, process=worker)
    try:
        assert watcher.latest[worker_id].role == "worker"
        client = await client_named("orig-client")
        handle = await client.submit("sort", [3, 1, 2], skills=["data_processing"], check=10)
        assert (await handle.result(30)).result == [1, 2, 3]
        assert "AGENT_COUNT is set but not needed" in coord.log()
        assert "COORDINATOR_URL is set but not needed" in worker.log()

        assert await worker.terminate(30) == 0

        async def shown_left() -> dict | None:
            result = await run_cli("status", "--json", amqp_url=amqp_url, keys=keys_dir)
            rows = {r["id"]: r for r in json.loads(result.out)["agents"]}
            row = rows.get(worker_id)
            return row if row is not None and row["health"] == "left" else None

        row = await eventually(shown_left, 30, every=1.0)
        assert row is not None and row["role"] == "worker", row
    finally:
        await coord.terminate(30)


async def test_an_app_next_to_the_working_directory_is_found(
    procs, watcher: HeartbeatWatcher, client_named: Callable[[str], Awaitable[Client]],
    tmp_path: Path, unique_id: Callable[[str], str],
) -> None:  # fmt: skip
    """Given myapp.py in the working directory, When `robeing agent --app myapp` runs there,
    Expect it to start and answer with the app's handler (no 'No module named myapp')."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "myapp.py").write_text(
        "from robeing.agents import App\n\napp = App()\n\n\n"
        "@app.handler('greet')\ndef greet(msg):\n    return {'hello': msg.sender}\n"
    )
    agent_id = unique_id("app-w")
    proc = await procs(
        agent_id,
        ["agent", "--role", "worker", "--id", agent_id, "--app", "myapp"],
        {"PYTHONPATH": ""},
        cwd=workdir,
    )
    await watcher.wait_alive(agent_id, timeout=30, process=proc)
    client = await client_named("app-client")
    assert await client.request(agent_id, "greet", None) == {"hello": "app-client"}


async def test_the_readme_broadcast_dead_letters_nothing(
    spawn, run_cli: RunCli, amqp_url: str, keys_dir: Path, unique_id: Callable[[str], str]
) -> None:
    """Given a live worker, When the README's `robeing broadcast --type note` runs (with
    --json), Expect exit 0, the message id, and no dead letter from the worker."""
    worker_id = unique_id("bc-w")
    await spawn("worker", worker_id)
    cli = {"amqp_url": amqp_url, "keys": keys_dir}
    sent = await run_cli(
        "broadcast", "--type", "note", "--payload", '"hello everyone"', "--json", **cli
    )
    assert sent.code == 0 and json.loads(sent.out)["broadcast"] is True, sent.describe()
    await asyncio.sleep(1.5)  # the workers have had it
    listed = await run_cli("dead-letters", "list", "--json", "--limit", "100000", **cli)
    assert not [x for x in json.loads(listed.out) if worker_id in x["source"]], listed.out
    keys = await run_cli("keys", "list", "--json", **cli)
    assert worker_id in {k["id"] for k in json.loads(keys.out)}, keys.describe()


async def queue_gone(management: Management, vhost: str, name: str) -> bool:
    try:
        await management.queue(vhost, name)
    except Exception as exc:
        return "404" in str(exc)
    return False


async def test_agent_queues_survive_a_restart_and_expire_once_their_agent_is_gone(
    spawn, client_named: Callable[[str], Awaitable[Client]], management: Management,
    vhost: str, tmp_path: Path, unique_id: Callable[[str], str],
) -> None:  # fmt: skip
    """Given a worker whose queues expire after 8 s unused, When it is killed, sent a note and
    restarted within that time, Expect the note handled; When it is killed for good, Expect its
    inbox and work queue gone soon after."""
    out = tmp_path / "out"
    out.mkdir()
    agent_id = unique_id("exp-w")
    env = {"ROBEING_QUEUE_EXPIRY": "8", "SAMPLE_OUT": str(out)}
    proc = await spawn("worker", agent_id, "--app", "apps.sample_app", env=env)
    inbox = await management.queue(vhost, topo.agent_queue(agent_id))
    assert inbox["arguments"]["x-expires"] == 8000
    client = await client_named("exp-client")

    proc.signal(signal.SIGKILL)
    await proc.wait(10)
    await client.send(agent_id, "note", {"while": "away"})
    again = await spawn("worker", agent_id, "--app", "apps.sample_app", env=env)

    async def noted() -> bool:
        log = out / f"{agent_id}.log"
        return log.exists() and "away" in log.read_text()

    assert await eventually(noted, 15), "the note sent while the agent restarted was lost"

    again.signal(signal.SIGKILL)
    await again.wait(10)

    async def gone() -> bool:
        names = (topo.agent_queue(agent_id), topo.work_queue(agent_id))
        return all([await queue_gone(management, vhost, name) for name in names])

    assert await eventually(gone, 30, every=1.0), "the queues of a gone agent stayed"


async def test_an_inbox_made_without_an_expiry_is_used_as_it_is(
    spawn, management: Management, vhost: str, unique_id: Callable[[str], str]
) -> None:
    """Given an inbox an older robeing declared without an expiry, When the agent starts,
    Expect it to start on that queue and say it will not expire (no PRECONDITION_FAILED)."""
    agent_id = unique_id("old-w")
    old = topo.inbox_spec(agent_id, topo.TopologySettings(agent_queue_expiry_s=0))
    await management.declare_queue(vhost, old)
    proc = await spawn("worker", agent_id)
    assert "was made without an expiry" in proc.log()
    assert "x-expires" not in (await management.queue(vhost, old.name))["arguments"]


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/robeing-no-such-vhost", 3, "refused vhost"),
        ("amqp://guest:guest@127.0.0.1:5672/;amqp://guest:guest@127.0.0.1:5673/", 2, "';'"),
    ],
    ids=["unknown-vhost", "semicolon-list"],
)
async def test_a_bad_broker_url_is_one_line(
    run_cli: RunCli, keys_dir: Path, url: str, code: int, says: str
) -> None:
    result = await run_cli("status", amqp_url=url, keys=keys_dir)
    assert result.code == code, result.describe()
    assert len(result.err_lines) == 1 and says in result.err, result.describe()
    assert "Connection.Close object" not in result.err


async def test_a_standby_coordinator_leaves_the_lead_then_takes_over(
    spawn, watcher: HeartbeatWatcher, unique_id: Callable[[str], str]
) -> None:
    """Given a coordinator started with --standby and, just after it, one without, Expect the
    one without to lead; When it is killed, Expect the standby to take over."""
    standby_id, primary_id = unique_id("sb-standby"), unique_id("sb-primary")
    standby = await spawn("coordinator", standby_id, "--standby", wait=False)
    primary = await spawn("coordinator", primary_id, wait=False)
    try:
        await watcher.wait_coordinator(primary_id, timeout=30)
        report = watcher.latest.get(standby_id)
        assert report is None or not report.extra.get("coordinator", {}).get("active")
        primary.signal(signal.SIGKILL)
        await watcher.wait_coordinator(standby_id, timeout=30)
    finally:
        await standby.terminate(30)
