"""``robeing submit`` and ``robeing result``: tasks from the command line.

``submit`` returns once the broker confirmed the task into a durable queue
and the active coordinator took it (printing its id; a warning on stderr when
it cannot start soon: no live agent has its skill, or no agent could ever hold
its resources) or, with ``--wait``, follows it with a progress bar to its
result; ``result`` fetches a finished task's result from the results stream.
Exit codes are in ``--help`` (0 succeeded, 1 the task did not, 4 --timeout).
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
from .common import (
    EXIT_CODES_HELP,
    CliError,
    Common,
    ConfigFailure,
    GaveUp,
    pass_common,
    run,
    split_list,
)
from .options import RESOURCES, as_option, json_option, payload_option, priority_option

CHECK_S = 5.0  # how long submit waits for the coordinator to take the task


@click.command(epilog=EXIT_CODES_HELP)
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
@click.option(
    "--cluster",
    default=None,
    help="Run it on members of this named cluster (default: the default cluster).",
)
@click.option("--wait", is_flag=True, help="Show progress and print the result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="With --wait: give up after this many seconds (exit 4; the task goes on).",
)
@click.option(
    "--no-check",
    is_flag=True,
    help=f"Return once the broker confirmed it, without waiting (up to {CHECK_S:g} s) for the "
    "coordinator to take it and warn when it cannot start.",
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
    cluster: str | None,
    wait: bool,
    timeout: float,
    no_check: bool,
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
                cluster=cluster,
                check=None if no_check else CHECK_S,
            )
            _warn(handle, checked=not no_check)
            if not wait:
                if as_json:
                    print(json.dumps({"task_id": handle.task_id, "accepted": True}))
                else:
                    print(handle.task_id)
                return None
            show = not as_json and sys.stderr.isatty()
            try:
                return await _follow(handle, task_type, timeout, show)
            except TimeoutError:
                raise GaveUp(
                    f"task {handle.task_id} not finished within {timeout:g} s; it goes on "
                    f"(robeing task show {handle.task_id})"
                ) from None

    final = run(go())
    if final is not None:
        _print_final(final, as_json)
    sys.exit(0 if final is None or final.ok else 1)


@click.command(epilog=EXIT_CODES_HELP)
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
@as_option()
@pass_common
def result(common: Common, task_id: str, since_h: float, as_json: bool, as_id: str) -> None:
    """Fetch a finished task's result from the results stream (yours: it is encrypted to you)."""

    async def go() -> FinalResult | None:
        # As the submitter: each final in the stream is encrypted to its submitter.
        async with Client(common.client_settings(as_id)) as client:
            return await client.fetch_result(task_id, since_h * 3600)

    final = run(go())
    if final is None:
        raise CliError(
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
        ran = f" after {final.attempts} attempt(s)" if final.attempts else ""
        print(f"task {final.task_id} {final.state}{ran}: {final.error}", file=sys.stderr)


def _warn(handle: TaskHandle, checked: bool) -> None:
    """Say on stderr why a task will not start soon, or that no coordinator took it."""
    if handle.warning:
        click.echo(f"robeing: warning: task {handle.task_id}: {handle.warning}", err=True)
    elif checked and not handle.taken:
        click.echo(
            f"robeing: warning: no coordinator took task {handle.task_id} within {CHECK_S:g} s; "
            "it waits in robeing.coordinator.tasks until one runs",
            err=True,
        )


async def _follow(handle: TaskHandle, task_type: str, timeout: float, show: bool) -> FinalResult:
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
        # The real total is known once the coordinator took (and split) the task.
        row = bar.add_task(f"{task_type} {handle.task_id[:12]}", total=handle.total)

        def update(h: TaskHandle) -> None:
            bar.update(row, completed=h.done, total=h.total)
            if h.note:
                bar.update(row, description=f"{h.task_id[:12]} ({h.note})")

        handle.on_progress = update
        final = await handle.result(timeout)
        bar.update(row, completed=handle.total, total=handle.total)
        await asyncio.sleep(0)
        return final
