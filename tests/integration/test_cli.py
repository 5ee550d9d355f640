"""The ``robeing`` command run as a user runs it: a subprocess, configured by environment.

Expect wrong usage and broker trouble to be one clear line with a meaningful exit code and
never a traceback, and the messaging, status, probe and keys commands to work against real
agent processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from clitools import RunCli

pytestmark = pytest.mark.broker

UNREACHABLE_URL = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
async def worker(spawn, unique_id: Callable[[str], str]) -> str:
    """A live worker process offering the 'cli_skill' specialization; returns its id."""
    agent_id = unique_id("cli-worker")
    await spawn("worker", agent_id, "--specialization", "cli_skill")
    return agent_id


# -- (a) wrong usage ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["agent"], "Missing option '--role'"),
        (["agent", "--role", "wizard"], "Invalid value for '--role'"),
        (["send", "--to", "w1", "--type", "ping", "--payload", "{bad"], "not valid JSON"),
        (["broadcast", "--type", "note", "--payload", "[1,"], "not valid JSON"),
        (
            ["send", "--to", "w1", "--type", "ping", "--payload", "@/nonexistent/payload.json"],
            "cannot read payload file '/nonexistent/payload.json'",
        ),
        (["agent", "--role", "worker", "--id", "bad id!"], "invalid agent id 'bad id!'"),
        (["send", "--to", "w1"], "Missing option '--type'"),
    ],
    ids=[
        "missing-role",
        "unknown-role",
        "bad-json",
        "bad-json-broadcast",
        "missing-payload-file",
        "invalid-agent-id",
        "missing-type",
    ],
)
async def test_wrong_usage_is_one_clear_line(
    run_cli: RunCli, keys_dir: Path, args: list[str], problem: str
) -> None:
    """Given wrong usage, When the command runs, Expect exit code 2, one error line naming the
    problem, and no traceback (nothing is sent: the broker URL is unreachable anyway)."""
    result = await run_cli(*args, amqp_url=UNREACHABLE_URL, keys=keys_dir)

    assert result.code == 2, result.describe()
    assert "Traceback" not in result.out + result.err, result.describe()
    error_lines = [line for line in result.err_lines if problem in line]
    assert len(error_lines) == 1, result.describe()
    assert error_lines[0].startswith(("robeing: error:", "Error:")), result.describe()


async def test_keys_issue_without_an_authority(run_cli: RunCli, tmp_path: Path) -> None:
    """Given an empty keys directory, When `keys issue` runs, Expect exit code 2 and one line
    saying there is no authority and to run `robeing keys init`."""
    result = await run_cli(
        "keys", "issue", "--id", "w1", "--role", "worker", amqp_url=UNREACHABLE_URL, keys=tmp_path
    )

    assert result.code == 2, result.describe()
    assert "Traceback" not in result.out + result.err
    assert len(result.err_lines) == 1, result.describe()
    assert "no authority key" in result.err and "robeing keys init" in result.err
    assert not (tmp_path / "agents").exists()


async def test_keys_init_refuses_to_overwrite(run_cli: RunCli, tmp_path: Path) -> None:
    """Given `keys init` ran once, When it runs again without --force, Expect exit code 2 and
    one line pointing at --force."""
    first = await run_cli("keys", "init", amqp_url=UNREACHABLE_URL, keys=tmp_path)
    again = await run_cli("keys", "init", amqp_url=UNREACHABLE_URL, keys=tmp_path)

    assert first.code == 0, first.describe()
    assert again.code == 2, again.describe()
    assert len(again.err_lines) == 1 and "--force" in again.err, again.describe()


# -- (b) broker trouble --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["send", "--to", "w1", "--type", "ping"],
        ["broadcast", "--type", "note"],
    ],
    ids=["status", "send", "broadcast"],
)
async def test_unreachable_broker_is_one_line_and_exit_3(
    run_cli: RunCli, keys_dir: Path, args: list[str]
) -> None:
    """Given nothing listening at the broker URL, When a command needs the broker, Expect within
    a reasonable time exit code 3 and exactly one line on stderr saying the broker cannot be
    reached (no traceback, no library log noise)."""
    result = await run_cli(*args, amqp_url=UNREACHABLE_URL, keys=keys_dir, timeout=60)

    assert result.code == 3, result.describe()
    assert "Traceback" not in result.out + result.err, result.describe()
    assert result.seconds < 30, result.describe()
    assert len(result.err_lines) == 1, result.describe()
    assert "cannot reach the broker" in result.err_lines[0], result.describe()
    assert "127.0.0.1:1" in result.err_lines[0]


# -- (c) against a live worker ------------------------------------------------------------


async def test_send_with_ack(run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str) -> None:
    """Given a live worker, When `send --ack` pings it, Expect 'acknowledged by <id>'."""
    result = await run_cli(
        "send", "--to", worker, "--type", "ping", "--ack", amqp_url=amqp_url, keys=keys_dir
    )

    assert result.code == 0, result.describe()
    assert f"acknowledged by {worker}" in result.out, result.describe()


async def test_send_without_ack_reports_the_broker_confirm(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str
) -> None:
    """Given a live worker, When `send` pings it without --ack, Expect the broker confirm
    reported."""
    result = await run_cli(
        "send", "--to", worker, "--type", "ping", amqp_url=amqp_url, keys=keys_dir
    )

    assert result.code == 0, result.describe()
    assert f"sent to {worker}" in result.out, result.describe()


async def test_request_prints_the_reply_as_json(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str
) -> None:
    """Given a live worker, When `send --request --json` pings it with a payload, Expect JSON
    naming the receiver, with the worker's pong echoing the payload, and a round-trip time."""
    result = await run_cli(
        "send",
        "--to",
        worker,
        "--type",
        "ping",
        "--request",
        "--json",
        "--payload",
        '{"n": 7}',
        amqp_url=amqp_url,
        keys=keys_dir,
    )

    assert result.code == 0, result.describe()
    out = json.loads(result.out)
    assert out["to"] == worker
    assert out["reply"]["pong"] == worker
    assert out["reply"]["role"] == "worker"
    assert out["reply"]["echo"] == {"n": 7}
    assert out["rtt_ms"] > 0


async def test_request_with_payload_from_a_file(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str, tmp_path: Path
) -> None:
    """Given a JSON file, When `send --request --payload @file` pings the worker, Expect the
    file's content echoed in the reply."""
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file", "items": [1, 2]}')

    result = await run_cli(
        "send",
        "--to",
        worker,
        "--type",
        "ping",
        "--request",
        "--payload",
        f"@{payload}",
        amqp_url=amqp_url,
        keys=keys_dir,
    )

    assert result.code == 0, result.describe()
    assert json.loads(result.out)["echo"] == {"from": "file", "items": [1, 2]}


async def test_status_lists_the_worker(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str
) -> None:
    """Given a live worker, When `status --json --listen 1.5` runs, Expect the worker listed
    with its role, specializations, load and capacity."""
    result = await run_cli("status", "--json", "--listen", "1.5", amqp_url=amqp_url, keys=keys_dir)

    assert result.code == 0, result.describe()
    agents = {a["id"]: a for a in json.loads(result.out)["agents"]}
    assert worker in agents, result.describe()
    entry = agents[worker]
    assert entry["role"] == "worker"
    assert entry["specializations"] == ["cli_skill"]
    assert isinstance(entry["load"], int) and entry["load"] >= 0
    assert entry["capacity"] >= 1
    assert entry["state"] == "alive"


async def test_broadcast_succeeds(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str
) -> None:
    """Given a live worker, When `broadcast --type note` runs, Expect exit 0 and the id of the
    broadcast printed."""
    result = await run_cli(
        "broadcast",
        "--type",
        "note",
        "--payload",
        '{"text": "hi"}',
        amqp_url=amqp_url,
        keys=keys_dir,
    )

    assert result.code == 0, result.describe()
    assert result.out.startswith("broadcast "), result.describe()
    assert len(result.out.split()[1]) == 32


async def test_agent_check_probes_a_live_agent(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, worker: str
) -> None:
    """Given a live worker, When `agent --check --id <worker>` runs, Expect exit 0 and 'alive'."""
    result = await run_cli(
        "agent", "--role", "worker", "--check", "--id", worker, amqp_url=amqp_url, keys=keys_dir
    )

    assert result.code == 0, result.describe()
    assert f"{worker}: alive" in result.out


async def test_agent_check_of_an_unknown_id_fails(
    run_cli: RunCli, amqp_url: str, keys_dir: Path, unique_id: Callable[[str], str]
) -> None:
    """Given no agent with some id, When `agent --check --id <id>` runs, Expect exit 1 and
    'not seen'."""
    ghost = unique_id("ghost")

    result = await run_cli(
        "agent", "--role", "worker", "--check", "--id", ghost, amqp_url=amqp_url, keys=keys_dir
    )

    assert result.code == 1, result.describe()
    assert f"{ghost}: not seen" in result.out
    assert "Traceback" not in result.err


async def test_keys_list_shows_issued_ids(
    run_cli: RunCli,
    amqp_url: str,
    keys_dir: Path,
    worker: str,
    unique_id: Callable[[str], str],
) -> None:
    """Given a worker that issued its identity on start and one issued with `keys issue`,
    When `keys list` runs, Expect both ids with their roles."""
    issued = unique_id("cli-spec")
    made = await run_cli(
        "keys", "issue", "--id", issued, "--role", "specialist", amqp_url=amqp_url, keys=keys_dir
    )
    assert made.code == 0 and f"issued specialist identity '{issued}'" in made.out, made.describe()

    result = await run_cli("keys", "list", amqp_url=amqp_url, keys=keys_dir)

    assert result.code == 0, result.describe()
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in result.out.splitlines()}
    assert rows.get(worker) == "worker", result.describe()
    assert rows.get(issued) == "specialist", result.describe()
