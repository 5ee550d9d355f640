"""``robeing cluster form|list|show|dissolve|leave``: named clusters of agents.

Each asks the active coordinator (see :mod:`robeing.agents.clusters`). A
refusal — a taken name, an unknown skill, more agents than are available —
is one line on stderr naming what is available, exit 2, and nothing moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ...protocol.clusters import DEFAULT_MARGIN, MAX_SIZE
from ..client import Client
from ..clusters import Clusters
from .common import EXIT_CODES_HELP, Common, emit_json, pass_common, run, split_list
from .options import question_options

T = TypeVar("T")
CRITERIA = ("experience", "reliability", "resources", "availability")


def _ask(
    common: Common,
    as_id: str,
    timeout: float,
    question: Callable[[Clusters], Coroutine[Any, Any, T]],
) -> T:
    async def go() -> T:
        async with Client(common.client_settings(as_id)) as client:
            client.clusters.timeout = timeout
            return await question(client.clusters)

    return run(go())


@click.group(epilog=EXIT_CODES_HELP)
def cluster() -> None:
    """Form, list, show and dissolve named clusters (asks the active coordinator)."""


@cluster.command("form")
@click.argument("name")
@click.option("--purpose", default="", help="What the cluster is for (shown by list and show).")
@click.option("--skills", default="", help="Comma-separated skills; an agent needs any one.")
@click.option(
    "--size",
    type=click.IntRange(min=1, max=MAX_SIZE),
    required=True,
    help="How many agents of the default cluster it takes.",
)
@question_options()
@pass_common
def form(
    common: Common,
    name: str,
    purpose: str,
    skills: str,
    size: int,
    timeout: float,
    as_json: bool,
    as_id: str,
) -> None:
    """Form NAME from the best live agents of the default cluster with the skills."""
    wanted = split_list((skills,))
    made = _ask(
        common, as_id, timeout, lambda c: c.form(name, purpose=purpose, skills=wanted, size=size)
    )
    if as_json:
        emit_json(made)
        return
    click.echo(f"formed cluster {made['name']}: {', '.join(made['members'])}")


@cluster.command("list")
@question_options()
@pass_common
def list_(common: Common, timeout: float, as_json: bool, as_id: str) -> None:
    """Every named cluster: kind, purpose, members, leader."""
    rows = _ask(common, as_id, timeout, lambda c: c.list())
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no named clusters (every agent is in the default cluster)")
        return
    table = Table(title="clusters", title_justify="left")
    for col in ("name", "kind", "members", "live", "leader", "skills", "purpose"):
        table.add_column(col, justify="right" if col in ("members", "live") else "left")
    for r in rows:
        table.add_row(
            r["name"],
            r["kind"],
            str(r["members"]),
            str(r["live"]),
            r.get("leader") or "-",
            ",".join(r.get("skills", [])) or "-",
            r.get("purpose") or "-",
        )
    Console().print(table)


@cluster.command("show")
@click.argument("name")
@question_options()
@pass_common
def show(common: Common, name: str, timeout: float, as_json: bool, as_id: str) -> None:
    """One cluster: definition, leader, members with their health and leader scores."""
    c = _ask(common, as_id, timeout, lambda cl: cl.show(name))
    if as_json:
        emit_json(c)
        return
    click.echo(f"cluster {c['name']} ({c['kind']}): {c['live']}/{c['members']} members live")
    if c.get("purpose"):
        click.echo(f"  purpose: {c['purpose']}")
    if c.get("skills"):
        click.echo(f"  skills: {', '.join(c['skills'])}")
    if c.get("formed_by"):
        ago = time.time() - float(c.get("formed_at") or time.time())
        click.echo(f"  formed by {c['formed_by']} {ago:.0f} s ago")
    leader, term = c.get("leader"), c.get("term")
    held = f"{leader} (term {term})" if leader and term else leader
    click.echo(f"  leader: {held or 'none live (its members report to the coordinator)'}")
    if c["kind"] != "coordinator":
        if c.get("candidate") and c.get("candidate") != leader:
            click.echo(f"  next in line by score: {c['candidate']} (if the leader leaves)")
        click.echo(
            "  score = 0.3 experience + 0.3 reliability + 0.2 resources + 0.2 availability; "
            f"a leader holds the lock until it leaves; the next is elected with a margin of "
            f"{DEFAULT_MARGIN:g}"
        )
    table = Table(title_justify="left")
    for col in ("member", "health", "joined", *CRITERIA, "score"):
        table.add_column(col, justify="right" if col in (*CRITERIA, "score") else "left")
    for m in c.get("member_list", []):
        s = m.get("score", {})
        figures = [f"{s[k]:.3f}" if k in s else "-" for k in (*CRITERIA, "total")]
        name = f"{m['id']} (leader)" if m["id"] == leader else m["id"]
        table.add_row(name, m["health"], "yes" if m["joined"] else "not yet", *figures)
    Console().print(table)


@cluster.command("dissolve")
@click.argument("name")
@question_options()
@pass_common
def dissolve(common: Common, name: str, timeout: float, as_json: bool, as_id: str) -> None:
    """Dissolve NAME: its members return to the default cluster."""
    done = _ask(common, as_id, timeout, lambda c: c.dissolve(name))
    if as_json:
        emit_json(done)
        return
    members = ", ".join(done["members"]) or "nobody"
    click.echo(f"dissolved cluster {done['dissolved']}; back in the default cluster: {members}")


@cluster.command("leave")
@click.option("--agent", "agent_id", required=True, help="The agent to take out.")
@question_options()
@pass_common
def leave(common: Common, agent_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """Take an agent out of its formed cluster, back into the default one."""
    done = _ask(common, as_id, timeout, lambda c: c.leave(agent_id))
    if as_json:
        emit_json(done)
        return
    click.echo(f"{done['agent']} left cluster {done['left']}; it is in the default cluster")
