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
