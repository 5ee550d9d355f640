"""Handlers the integration tests load with ``--app sample_app``.

Each agent appends what it handled to ``$SAMPLE_OUT/<agent id>.log`` so tests
can check who handled what, in which order, and how often.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from robeing.agents import App, Message
from robeing.protocol.errors import Reject, Retry

app = App(name="sample")


def record(msg: Message, line: str) -> None:
    out = os.environ.get("SAMPLE_OUT")
    if out:
        with open(Path(out) / f"{msg.agent.id}.log", "a") as fh:
            fh.write(line + "\n")


@app.handler("echo")
def echo(msg: Message) -> Any:
    return {"echo": msg.payload, "by": msg.agent.id, "from": msg.sender}


@app.handler("note")
def note(msg: Message) -> None:
    record(msg, f"note {msg.sender} {msg.payload}")


@app.handler("slow")
async def slow(msg: Message) -> dict[str, Any]:
    await asyncio.sleep(float(msg.payload.get("seconds", 1.0)))
    record(msg, f"slow {msg.payload.get('tag')}")
    return {"slept": msg.payload.get("seconds")}


@app.handler("fail")
def fail(msg: Message) -> None:
    raise ValueError(f"cannot handle {msg.payload!r}")


@app.handler("refuse")
def refuse(msg: Message) -> None:
    raise Reject("refused on purpose")


_retries: dict[str, int] = {}


@app.handler("flaky")
def flaky(msg: Message) -> str:
    n = _retries.get(msg.id, 0)
    _retries[msg.id] = n + 1
    if n < 2:
        raise Retry("not yet", delay=0.05)
    return f"done after {n + 1} attempts"


@app.handler("bcast")
async def bcast(msg: Message) -> str:
    return await msg.agent.broadcast("note", msg.payload)


# -- tasks --------------------------------------------------------------------------

from robeing.agents.app import TaskContext  # noqa: E402


def record_task(ctx: TaskContext, line: str) -> None:
    out = os.environ.get("SAMPLE_OUT")
    if out:
        with open(Path(out) / f"{ctx.agent.id}.tasks", "a") as fh:
            fh.write(line + "\n")


@app.task("add", specialization="math")
def add(ctx: TaskContext) -> float:
    """payload {"a", "b"} plus the results of the tasks it depends on."""
    record_task(ctx, f"add {ctx.task_id} {ctx.attempt} {ctx.epoch}")
    deps = sum(v for v in ctx.dep_results.values() if isinstance(v, int | float))
    return ctx.payload.get("a", 0) + ctx.payload.get("b", 0) + deps


@app.task("sleepy", specialization="math")
async def sleepy(ctx: TaskContext) -> str:
    record_task(ctx, f"start {ctx.task_id} {ctx.attempt}")
    await asyncio.sleep(float(ctx.payload.get("seconds", 1.0)))
    record_task(ctx, f"done {ctx.task_id} {ctx.attempt}")
    return str(ctx.payload.get("tag", ctx.task_id))


@app.task("crash", specialization="math")
def crash(ctx: TaskContext) -> None:
    record_task(ctx, f"crash {ctx.task_id} {ctx.attempt}")
    os._exit(3)


@app.task("boom", specialization="math")
def boom(ctx: TaskContext) -> None:
    raise ValueError(f"boom on {ctx.payload!r}")


_flaky_calls: dict[str, int] = {}


@app.task("flaky", specialization="math")
def flaky_task(ctx: TaskContext) -> str:
    n = _flaky_calls.get(ctx.task_id, 0) + 1
    _flaky_calls[ctx.task_id] = n
    if n < 3:
        raise ConnectionError(f"transient failure {n}")
    return f"ok after {n} calls"
