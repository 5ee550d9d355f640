"""``robeing submit`` and ``robeing result``: tasks from the command line.

``submit`` returns once the broker confirmed the task into a durable queue
(printing its id) or, with ``--wait``, follows it with a progress bar to its
result; ``result`` fetches a finished task's result from the results stream.
Both exit 0 on success and 1 when the task failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ...protocol.resources import Resources
from ...protocol.taskmsgs import FinalResult
from ..client import Client, TaskHandle, parse_payload
from .common import Common, ConfigFailure, pass_common, run, split_list
from .options import RESOURCES, as_option, json_option, payload_option, priority_option


@click.command()
@click.argument("task_type")
@payload_option()
@click.option("--skills", default="", help="Comma-separated specializations needed.")
@click.option(
    "--agents",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    help="Split across this many agents.",
)
@priority_option()
@click.option(
    "--deadline",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Seconds until the task expires.",
)
@click.option("--depends-on", multiple=True, help="Task id whose result it needs (repeat).")
@click.option("--id", "task_id", default=None, help="Your task id (resubmission is idempotent).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None)
@click.option(
    "--resources",
    type=RESOURCES,
    default=None,
    help="What one execution needs from the pool, e.g. cpu=1,memory=512MiB.",
)
@click.option(
    "--file",
    "file_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An input of any size: put on --holder first; the payload's 'blob' names it.",
)
@click.option("--holder", default=None, help="With --file: the messenger that holds it.")
@click.option("--wait", is_flag=True, help="Show progress and print the result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="With --wait: give up after this many seconds.",
)
@json_option()
@as_option()
@pass_common
def submit(
    common: Common,
    task_type: str,
    payload: str | None,
    skills: str,
    agents: int,
    priority: int,
    deadline: float | None,
    depends_on: tuple[str, ...],
    task_id: str | None,
    max_attempts: int | None,
    resources: Resources | None,
    file_path: Path | None,
    holder: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    as_id: str,
) -> None:
    """Submit a task; with --wait, follow it to its result."""
    settings, body = common.client_settings(as_id), parse_payload(payload)
    if file_path is not None and (holder is None or not isinstance(body, dict | None)):
        raise ConfigFailure("--file needs --holder MESSENGER, and a --payload that is an object")

    async def go() -> FinalResult | None:
        nonlocal body
        async with Client(settings) as client:
            if file_path is not None and holder is not None:
                body = {**(body or {}), "blob": await client.put_blob(holder, file_path)}
            handle = await client.submit(
                task_type,
                body,
                task_id=task_id,
                skills=split_list((skills,)),
                agents=agents,
                priority=priority,
                deadline=deadline,
                depends_on=split_list(depends_on),
                max_attempts=max_attempts,
                resources=resources,
            )
            if not wait:
                if as_json:
                    print(json.dumps({"task_id": handle.task_id, "accepted": True}))
                else:
                    print(handle.task_id)
                return None
            return await _follow(handle, timeout, show=not as_json and sys.stderr.isatty())

    final = run(go())
    if final is not None:
        _print_final(final, as_json)
    sys.exit(0 if final is None or final.ok else 1)


@click.command()
@click.argument("task_id")
@click.option(
    "--since",
    "since_h",
    type=click.FloatRange(min=0.01),
    default=24.0,
    show_default=True,
    help="Look this many hours back.",
)
@json_option()
@pass_common
def result(common: Common, task_id: str, since_h: float, as_json: bool) -> None:
    """Fetch a finished task's result from the results stream."""

    async def go() -> FinalResult | None:
        async with Client(common.client_settings(), listen_only=True) as client:
            return await client.fetch_result(task_id, since_h * 3600)

    final = run(go())
    if final is None:
        raise ConfigFailure(
            f"no result for task {task_id!r} in the last {since_h:g} h "
            "(unknown id, still running, or older)"
        )
    _print_final(final, as_json)
    sys.exit(0 if final.ok else 1)


def _print_final(final: FinalResult, as_json: bool) -> None:
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
            if h.note:
                bar.update(row, description=f"{h.task_id[:12]} ({h.note})")

        handle.on_progress = update
        final = await handle.result(timeout)
        bar.update(row, completed=handle.total, total=handle.total)
        await asyncio.sleep(0)
        return final
