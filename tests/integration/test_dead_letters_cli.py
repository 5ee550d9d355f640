"""``robeing dead-letters`` against real agents: list, show, replay after the fix, purge.

Expect each refused message to be listed with its reason, source and verified refuser; a
replay after the cause is fixed to reach the handler; a letter that can never pass again
(stored truncated) to be kept, saying why; and purge to remove only what it is told to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from agentproc import eventually
from clitools import RunCli

from robeing.agents import Client
from robeing.broker import topology as topo

pytestmark = pytest.mark.broker


@pytest.fixture
async def client(client_named: Callable[[str], Awaitable[Client]]) -> Client:
    return await client_named("dl-client")


async def letters(run_cli: RunCli, cli: dict, *args: str) -> list[dict]:
    listed = await run_cli("dead-letters", "list", "--json", "--limit", "100000", *args, **cli)
    assert listed.code == 0, listed.describe()
    return json.loads(listed.out)


async def test_dead_letters_are_listed_replayed_after_the_fix_and_purged(
    spawn,
    client: Client,
    run_cli: RunCli,
    amqp_url: str,
    keys_dir: Path,
    tmp_path: Path,
    unique_id: Callable[[str], str],
) -> None:
    """Given a worker without a 'note' handler, When a client sends it a note, Expect a dead
    letter (no_handler, from its inbox, refused by the worker, verified); When the worker comes
    back with the sample app and the letter is replayed, Expect the app to handle it and the
    letter gone; a truncated letter is kept with the reason; purge removes what it names."""
    cli = {"amqp_url": amqp_url, "keys": keys_dir}
    out = tmp_path / "out"
    out.mkdir()
    worker_id = unique_id("dl-w")
    worker = await spawn("worker", worker_id)
    await client.send(worker_id, "note", {"n": 1})

    async def mine() -> list[dict]:
        return [x for x in await letters(run_cli, cli) if worker_id in x["source"]]

    found = await eventually(mine)
    assert len(found) == 1, found
    (letter,) = found
    assert letter["reason"] == "no_handler" and letter["source"] == topo.agent_queue(worker_id)
    assert letter["reporter"] == worker_id and letter["sender"] == "dl-client"
    assert letter["type"] == "note" and isinstance(letter["at"], float)
    shown = await run_cli("dead-letters", "show", letter["id"], **cli)
    assert shown.code == 0 and "no handler for 'note'" in shown.out, shown.describe()

    # The fix: the worker comes back with a handler for 'note'.
    await worker.terminate(20)
    await spawn("worker", worker_id, "--app", "apps.sample_app", env={"SAMPLE_OUT": str(out)})
    replayed = await run_cli("dead-letters", "replay", letter["id"], **cli)
    assert replayed.code == 0, replayed.describe()
    assert f"replayed to {topo.agent_queue(worker_id)}" in replayed.out
    handled = out / f"{worker_id}.log"

    async def note_handled() -> bool:
        return handled.exists()

    await eventually(note_handled)
    assert handled.read_text().split() == ["note", "dl-client", "{'n':", "1}"]
    assert await mine() == []

    # Garbage larger than what a dead letter keeps: stored truncated, never replayable.
    garbage = os.urandom(topo_max := 70_000)
    await client.agent.broker.publish(topo.DIRECT_EXCHANGE, worker_id, garbage)
    (junk,) = await eventually(mine)
    assert junk["truncated"] and junk["size"] == topo_max and junk["reporter"] == worker_id
    kept = await run_cli("dead-letters", "replay", junk["id"], **cli)
    assert kept.code == 1 and "stored truncated" in kept.err, kept.describe()

    young = await run_cli("dead-letters", "purge", "--older-than", "1h", "--json", **cli)
    assert young.code == 0 and [x["id"] for x in await mine()] == [junk["id"]]
    purged = await run_cli("dead-letters", "purge", "--reason", junk["reason"], **cli)
    assert purged.code == 0 and "purged" in purged.out, purged.describe()
    assert await mine() == []
    bare = await run_cli("dead-letters", "purge", **cli)
    assert bare.code == 2 and "--all" in bare.err, bare.describe()
