"""``robeing task show|list|cancel`` and ``robeing cancel``: see into tasks, and stop them.

Each asks the active coordinator through its task queue (``task.query``,
``task.revoke``) as the client identity that submitted the tasks (``--as``,
default ``cli-<host>``): a task is shown to, and cancelled by, its submitter
only. Nothing here prints payloads or results (``robeing result`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ...protocol.coordinator.queries import FINISHED, KINDS
from ...protocol.taskgraph import TaskState
from ...protocol.taskmsgs import MAX_QUERY_ROWS
from ..client import Client
from .common import EXIT_CODES_HELP, CliError, Common, emit_json, pass_common, run, split_list
from .options import question_options

STATES = tuple(dict.fromkeys((*(s.value for s in TaskState), *KINDS, FINISHED)))


def _ask(common: Common, as_id: str, question: Callable[[Client], Any]) -> Any:
    async def go() -> Any:
        async with Client(common.client_settings(as_id)) as client:
            return await question(client)

    return run(go())


@click.group(epilog=EXIT_CODES_HELP)
def task() -> None:
    """See into tasks and cancel them (asks the active coordinator)."""


@task.command("show", epilog=EXIT_CODES_HELP)
@click.argument("task_id")
@question_options()
@pass_common
def show(common: Common, task_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """One of your tasks: its state, what it waits for, its parts."""
    shown = _ask(common, as_id, lambda c: c.task(task_id, timeout))
    if not shown.get("found"):
        raise CliError(
            f"no task {task_id!r} known to the coordinator: not submitted by {as_id or 'you'}, "
            f"or finished long ago (try `robeing result {task_id}`)"
        )
    if "refused" in shown:
        raise CliError(f"task {task_id!r}: {shown['refused']}")
    if as_json:
        emit_json(shown)
        return
    now = time.time()
    head = f"task {shown['task_id']}"
    if shown.get("type"):
        head += f" ({shown['type']})"
    click.echo(f"{head}: {shown['state']}")
    if "finished_at" in shown:
        ago = now - float(shown["finished_at"] or now)
        click.echo(f"  ended {ago:.1f} s ago after {shown.get('attempts', 0)} attempt(s)")
    if shown.get("detail"):
        click.echo(f"  {shown['detail']}")
    facts = [f"priority {shown['priority']}"] if "priority" in shown else []
    if shown.get("deadline"):
        facts.append(f"deadline in {float(shown['deadline']) - now:.1f} s")
    if shown.get("depends_on"):
        facts.append("depends on " + ", ".join(shown["depends_on"]))
    if facts:
        click.echo("  " + "; ".join(facts))
    for part in shown.get("parts", []):
        click.echo(f"  part {part['task_id']}: {part['state']}: {part.get('detail', '')}")


@task.command("list", epilog=EXIT_CODES_HELP)  # list_: not to shadow the builtin
@click.option(
    "--state",
    "states",
    multiple=True,
    help="Keep tasks in these states or kinds (repeat or comma-separate): "
    + ", ".join(STATES)
    + ". Default: every unfinished task; 'finished' lists the finals the coordinator keeps.",
)
@click.option("--all", "everyone", is_flag=True, help="Every submitter's tasks (without reasons).")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_QUERY_ROWS),
    default=100,
    show_default=True,
    help="At most this many rows.",
)
@question_options()
@pass_common
def list_(
    common: Common,
    states: tuple[str, ...],
    everyone: bool,
    limit: int,
    timeout: float,
    as_json: bool,
    as_id: str,
) -> None:
    """Your unfinished tasks (or every submitter's), oldest first."""
    wanted = split_list(states)
    unknown = [s for s in wanted if s not in STATES]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} (choose from {', '.join(STATES)})", param_hint="--state"
        )
    rows = _ask(
        common, as_id, lambda c: c.tasks(wanted, everyone=everyone, limit=limit, timeout=timeout)
    )
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} task(s)", title_justify="left")
    table.add_column("id", no_wrap=True)
    for col in ("type", "state", "agent", "why"):
        table.add_column(col, overflow="fold")
    if everyone:
        table.add_column("submitter", no_wrap=True)
    for r in rows:
        agent = f"{r['agent']} #{r['attempt']}" if r.get("agent") else "-"
        cells = [r["task_id"], r.get("type", "-"), r["state"], agent, r.get("detail", r["kind"])]
        table.add_row(*cells, *([r.get("submitter", "")] if everyone else []))
    Console().print(table)


_OUTCOME_EXIT = {"cancelled": 0, "finished": 1, "refused": 1, "unknown": 1}


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("task_id")
@question_options()
@pass_common
def cancel(common: Common, task_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """Cancel one of your tasks: its parts and dependants end too, running agents are told."""
    answer = _ask(common, as_id, lambda c: c.cancel(task_id, timeout))
    outcome = str(answer.get("outcome"))
    if as_json:
        emit_json(answer)
    elif outcome == "cancelled":
        click.echo(f"task {task_id} {answer.get('detail', 'cancelled')}")
    else:
        click.echo(f"robeing: {answer.get('detail', outcome)}", err=True)
    raise SystemExit(_OUTCOME_EXIT.get(outcome, 1))


task.add_command(cancel)
