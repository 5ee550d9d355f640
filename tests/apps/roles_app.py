"""Tasks and handlers the role tests load with ``--app apps.roles_app``.

``whoami`` (skill ``analysis``) and ``hold`` (skill ``slow``) return the id of
the agent that ran them; ``flood`` makes the receiving agent send ``junk`` —
a type nobody handles — to other agents, so they refuse it with signed
reports that blame it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from robeing.agents import App, Message
from robeing.agents.app import TaskContext

app = App(name="roles")


def _record(ctx: TaskContext, line: str) -> None:
    out = os.environ.get("SAMPLE_OUT")
    if out:
        with open(Path(out) / f"{ctx.agent.id}.tasks", "a") as fh:
            fh.write(line + "\n")


@app.task("whoami", specialization="analysis")
def whoami(ctx: TaskContext) -> str:
    return ctx.agent.id


@app.task("hold", specialization="slow")
async def hold(ctx: TaskContext) -> str:
    _record(ctx, f"start {ctx.task_id} {ctx.attempt}")
    await asyncio.sleep(float(ctx.payload.get("seconds", 1.0)))
    return ctx.agent.id


@app.handler("flood")
async def flood(msg: Message) -> int:
    p: dict[str, Any] = msg.payload
    sent = 0
    for _ in range(int(p["n"])):
        for target in p["targets"]:
            await msg.agent.send(target, "junk", {"i": sent})
            sent += 1
    return sent


@app.handler("poke")
async def poke(msg: Message) -> Any:
    """Ask another agent for a reply (refused once we are quarantined)."""
    return await msg.agent.request(msg.payload["to"], "ping", "poke", timeout=5)


@app.task("square", specialization="calc")
def square(ctx: TaskContext) -> int:
    """x², or x² + 1 on an agent started with ROBEING_TEST_LIE=1 (a lying worker)."""
    return int(ctx.payload) ** 2 + (1 if os.environ.get("ROBEING_TEST_LIE") else 0)


@app.task("noisy", specialization="calc", verify=False)
def noisy(ctx: TaskContext) -> float:
    """Different every run: guardians must not compare it."""
    import random

    return random.random()


@app.handler("chat")
def chat(msg: Message) -> None:
    """Accepted and dropped: the traffic a rate test counts."""


@app.handler("chatter")
async def chatter(msg: Message) -> int:
    """Send ``n`` 'chat' messages to each target at ``rate`` per second per target."""
    p: dict[str, Any] = msg.payload
    for _ in range(int(p["n"])):
        for target in p["targets"]:
            await msg.agent.send(target, "chat", None, persistent=False)
        await asyncio.sleep(1.0 / float(p["rate"]))
    return int(p["n"]) * len(p["targets"])


@app.handler("poke_chat")
async def poke_chat(msg: Message) -> Any:
    """Send a 'chat' request to another agent (refused there when a policy denies it)."""
    return await msg.agent.request(msg.payload["to"], "chat", None, timeout=5) or "ok"


def _digest_of(path: Path) -> tuple[int, str]:
    import hashlib

    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


@app.task("blobsum", specialization="bulk", verify=False)
async def blobsum(ctx: TaskContext) -> dict[str, Any]:
    """Size and SHA-256 of a blob input, read from disk in blocks."""
    from robeing.agents.roles.messenger import fetch_blob

    path = await fetch_blob(ctx.agent, ctx.payload["blob"])
    try:
        size, digest = await asyncio.to_thread(_digest_of, path)
    finally:
        path.unlink(missing_ok=True)
    return {"size": size, "sha256": digest, "by": ctx.agent.id}
