"""Seeing into tasks and stopping them, with a real coordinator and workers (issue: operations).

Expect a submitter to see what each of its tasks waits for, to cancel one (its running agent
stops it, its dependants end with a reason naming it, one final says ``cancelled``), to be
warned at once when a task cannot start, and the command line to say all of it in one line
per fact with documented exit codes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from agentproc import eventually
from clitools import RunCli

from robeing.agents import Client
from robeing.protocol.taskmsgs import TaskRequest

pytestmark = pytest.mark.broker

APP = ("--app", "apps.sample_app")


@pytest.fixture
async def client(client_named: Callable[[str], Awaitable[Client]]) -> Client:
    return await client_named("admin-client")


@pytest.fixture
async def fleet(spawn, watcher, tmp_path: Path, unique_id: Callable[[str], str]):
    """A coordinator and one 'math' worker running the sample app; the coordinator stops last."""
    out = tmp_path / "out"
    out.mkdir()
    env = {"SAMPLE_OUT": str(out)}
    coord_id = unique_id("admin-coord")
    coord = await spawn("coordinator", coord_id, *APP, env=env)
    await watcher.wait_coordinator(coord_id)
    worker_id = unique_id("admin-w")
    worker = await spawn("worker", worker_id, *APP, "--specialization", "math", env=env)
    await asyncio.sleep(1.2)  # the coordinator has seen its heartbeats
    yield {"worker": worker, "worker_id": worker_id, "out": out}
    await coord.terminate(20)


async def test_cancelling_a_running_task_stops_it_and_its_dependants(
    fleet: dict, client: Client
) -> None:
    """Given a 30 s task running on a worker and a task depending on it, When its submitter
    cancels it, Expect the answer 'cancelled', one final 'cancelled by admin-client', the
    dependant cancelled naming it, and the worker's handler stopped before it finished."""
    sleepy = TaskRequest("adm-sleepy", "sleepy", {"seconds": 30})
    after = TaskRequest("adm-after", "add", {"a": 1}, depends_on=("adm-sleepy",))
    h_sleepy, h_after = await client.submit_many([sleepy, after], check=10)
    assert h_sleepy.taken and h_sleepy.warning is None

    async def running() -> bool:
        return (await client.task("adm-sleepy"))["kind"] == "running"

    assert await eventually(running), await client.task("adm-sleepy")
    await asyncio.sleep(0.5)  # the handler has started
    answer = await client.cancel("adm-sleepy")
    assert answer == {
        "task_id": "adm-sleepy",
        "outcome": "cancelled",
        "detail": "cancelled by admin-client",
    }
    final = await h_sleepy.result(10)
    assert final.state == "cancelled" and final.error == "cancelled by admin-client", final
    dependant = await h_after.result(10)
    assert dependant.state == "cancelled"
    assert dependant.error == "dependency 'adm-sleepy' cancelled: cancelled by admin-client"
    assert (await client.cancel("adm-sleepy"))["outcome"] == "finished"

    async def stopped() -> bool:
        return "stopped 1 cancelled task attempt(s)" in fleet["worker"].log()

    assert await eventually(stopped, 10), fleet["worker"].log()[-2000:]
    lines = "".join(p.read_text() for p in fleet["out"].glob("*.tasks")).splitlines()
    assert "start adm-sleepy 1" in lines and "done adm-sleepy 1" not in lines


async def test_a_task_says_what_it_waits_for_and_submitting_warns_at_once(
    fleet: dict, client: Client
) -> None:
    """Given no live agent with skill 'nosuch' and no agent offering 64 cpus, When tasks
    needing them are submitted, Expect a warning on each handle at once, `task show` naming
    the missing skill, a task depending on a finished one run with its stored result, and a
    list holding only the asker's unfinished tasks."""
    skill, cpu = await client.submit_many(
        [
            TaskRequest("adm-skill", "sort", [2, 1], skills=("nosuch",)),
            TaskRequest("adm-cpu", "add", {"a": 1}, resources={"cpu": 64}),
        ],
        check=10,
    )
    assert skill.warning == "waiting for a skill no live agent has: nosuch"
    assert (cpu.warning or "").startswith("waiting for resources no agent offers: needs cpu=64")
    shown = await client.task("adm-skill")
    assert shown["kind"] == "skill" and shown["detail"] == skill.warning
    listed = {r["task_id"] for r in await client.tasks()}
    assert {"adm-skill", "adm-cpu"} <= listed
    first = await client.submit("add", {"a": 2, "b": 3}, task_id="adm-first", skills=["math"])
    assert (await first.result(15)).result == 5
    later = await client.submit(
        "add", {"a": 10}, task_id="adm-later", depends_on=["adm-first"], skills=["math"]
    )
    assert (await later.result(15)).result == 15
    for task_id in ("adm-skill", "adm-cpu"):
        assert (await client.cancel(task_id))["outcome"] == "cancelled"


async def test_the_command_line_shows_cancels_and_gives_up_with_documented_codes(
    fleet: dict, run_cli: RunCli, amqp_url: str, keys_dir: Path
) -> None:
    """Given a live fleet, When a task needing a skill nobody has is submitted with --wait and a
    deadline, Expect the warning at once and the final saying why it never ran (exit 1); with
    --timeout, one line and exit 4; `task show`, `task list --json` and `cancel` as documented;
    and `result` finding the submitter's own result."""
    cli = {"amqp_url": amqp_url, "keys": keys_dir}
    as_me = ("--as", "admin-cli")
    expired = await run_cli(
        "submit", "sort", "--payload", "[2,1]", "--skills", "nosuch", "--deadline", "2", "--wait",
        *as_me, **cli,
    )  # fmt: skip
    assert expired.code == 1, expired.describe()
    assert "robeing: warning: task" in expired.err and "no live agent has: nosuch" in expired.err
    assert "expired: deadline passed; it never ran: waiting for a skill" in expired.err

    gave_up = await run_cli(
        "submit", "sort", "--payload", "[2,1]", "--id", "adm-cli", "--skills", "nosuch", "--wait",
        "--timeout", "2", *as_me, **cli,
    )  # fmt: skip
    assert gave_up.code == 4, gave_up.describe()
    assert "Traceback" not in gave_up.err
    assert [line for line in gave_up.err_lines if line.startswith("robeing: error:")] == [
        "robeing: error: task adm-cli not finished within 2 s; it goes on "
        "(robeing task show adm-cli)"
    ], gave_up.describe()

    shown = await run_cli("task", "show", "adm-cli", *as_me, **cli)
    assert shown.code == 0 and "waiting for a skill no live agent has: nosuch" in shown.out
    other = await run_cli("task", "show", "adm-cli", "--as", "someone-else", **cli)
    assert other.code == 1 and "belongs to another submitter" in other.err, other.describe()
    listed = await run_cli("task", "list", "--json", "--state", "skill", *as_me, **cli)
    assert [r["task_id"] for r in json.loads(listed.out)] == ["adm-cli"], listed.describe()

    cancelled = await run_cli("cancel", "adm-cli", *as_me, **cli)
    assert cancelled.code == 0 and "task adm-cli cancelled by admin-cli" in cancelled.out
    again = await run_cli("cancel", "adm-cli", *as_me, **cli)
    assert again.code == 1 and "already ended: cancelled" in again.err, again.describe()
    unknown = await run_cli("task", "show", "adm-nosuch", *as_me, **cli)
    assert unknown.code == 1 and len(unknown.err_lines) == 1, unknown.describe()

    done = await run_cli(
        "submit", "add", "--payload", '{"a": 4}', "--skills", "math", "--id", "adm-sum",
        "--wait", *as_me, **cli,
    )  # fmt: skip
    assert (done.code == 0 and done.out.strip() == "4.0") or done.out.strip() == "4", (
        done.describe()
    )
    fetched = await run_cli("result", "adm-sum", "--json", *as_me, **cli)
    assert fetched.code == 0 and json.loads(fetched.out)["result"] == 4, fetched.describe()
