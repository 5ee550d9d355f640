"""What the chaos suites share: a supervisor that restarts fleet members that
die (as `robeing up` does), and the stream of tasks they submit."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Supervisor:
    """Restarts fleet members that died, like `robeing up` does."""

    def __init__(self, spawn, env: dict[str, str]) -> None:
        self.spawn = spawn
        self.env = env
        self.members: dict[str, tuple[str, tuple[str, ...], object]] = {}
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    async def add(self, role: str, agent_id: str, *args: str) -> object:
        proc = await self.spawn(role, agent_id, *args, env=self.env, wait=False)
        self.members[agent_id] = (role, args, proc)
        return proc

    def proc(self, agent_id: str):
        return self.members[agent_id][2]

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for agent_id, (role, args, proc) in list(self.members.items()):
                if proc.proc is not None and proc.proc.poll() is not None:
                    await asyncio.sleep(0.5)
                    new = await self.spawn(role, agent_id, *args, env=self.env, wait=False)
                    self.members[agent_id] = (role, args, new)
                    self.restarts += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def stream_tasks(
    client: Any,
    prefix: str,
    accepted: dict[str, Any],
    expected: dict[str, float],
    going: Callable[[], bool],
    on_accepted: Callable[[Any], None] = lambda handle: None,
) -> None:
    """Submit ``add`` tasks every 0.1 s while ``going()``; record the accepted ones.

    A submission the broker did not confirm is not accepted, and not counted.
    """
    i = 0
    while going():
        task_id = f"{prefix}-{i}"
        try:
            handle = await client.submit("add", {"a": i, "b": 1}, task_id=task_id, max_attempts=10)
        except Exception:
            pass  # not accepted: the broker did not confirm it
        else:
            accepted[task_id] = handle
            expected[task_id] = i + 1
            on_accepted(handle)
        i += 1
        await asyncio.sleep(0.1)


def judge(name: str, report: dict[str, Any]) -> None:
    """Print and keep ``report`` (bench-results/<name>.json), then hold it to the promises:
    something accepted, and lost = duplicated = unexpected = 0."""
    print(f"{name} report:", json.dumps(report, indent=1))
    Path("bench-results").mkdir(exist_ok=True)
    Path(f"bench-results/{name}.json").write_text(json.dumps(report, indent=2))
    assert report["accepted"], "nothing was accepted"
    assert report["lost"] == 0, report
    assert report["duplicated"] == 0, report
    assert report["unexpected"] == 0, report
