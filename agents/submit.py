"""``robeing submit`` and ``robeing result``: the CLI side of tasks."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..protocol.resources import Resources
from ..protocol.taskmsgs import FinalResult
from .client import Client, TaskHandle
from .settings import Settings


def print_final(final: FinalResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(final.to_data(), indent=2, sort_keys=True, default=str))
        return
    if final.ok:
        print(json.dumps(final.result, indent=2, default=str))
    else:
        print(
            f"task {final.task_id} {final.state} after {final.attempts} attempt(s): {final.error}",
            file=sys.stderr,
        )


async def run_submit(
    settings: Settings,
    task_type: str,
    payload: Any,
    *,
    skills: Sequence[str],
    agents: int,
    priority: int,
    deadline: float | None,
    depends_on: Sequence[str],
    task_id: str | None,
    max_attempts: int | None,
    resources: Resources | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Submit one task; returns the exit code (0 submitted or succeeded)."""
    async with Client(settings) as client:
        handle = await client.submit(
            task_type,
            payload,
            task_id=task_id,
            skills=skills,
            agents=agents,
            priority=priority,
            deadline=deadline,
            depends_on=depends_on,
            max_attempts=max_attempts,
            resources=resources,
        )
        if not wait:
            if as_json:
                print(json.dumps({"task_id": handle.task_id, "accepted": True}))
            else:
                print(handle.task_id)
            return 0
        final = await _follow(handle, timeout, show=not as_json and sys.stderr.isatty())
    print_final(final, as_json)
    return 0 if final.ok else 1


async def _follow(handle: TaskHandle, timeout: float, show: bool) -> FinalResult:
    if not show:
        return await handle.result(timeout)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        row = bar.add_task(handle.task_id[:12], total=handle.total)

        def update(h: TaskHandle) -> None:
            bar.update(row, completed=h.done, total=h.total)

        handle.on_progress = update
        final = await handle.result(timeout)
        bar.update(row, completed=handle.total, total=handle.total)
        await asyncio.sleep(0)
        return final


async def run_fetch(settings: Settings, task_id: str, since_s: float) -> FinalResult | None:
    async with Client(settings, listen_only=True) as client:
        return await client.fetch_result(task_id, since_s)
