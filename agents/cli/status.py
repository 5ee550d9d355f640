"""``robeing status``: live agents from heartbeats, plus queue health.

Each agent's row joins what its heartbeat says of itself with the active
coordinator's verdict on its health; dead letters, pending submissions and
the resource pool come from the management API and the coordinator's report.
A table for people, ``--json`` for scripts, ``--watch`` to keep refreshing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ...broker import topology as topo
from ...broker.management import Management, ManagementSettings, vhost_of
from ...protocol.errors import BrokerError, ConfigError, ProtocolError
from ..client import AgentStatus, Client
from ..keystore import Keystore
from ..settings import Settings
from .common import Common, pass_common, run
from .options import json_option


@click.command()
@json_option()
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--listen",
    type=click.FloatRange(min=0.2),
    default=2.5,
    show_default=True,
    help="Seconds to listen for heartbeats.",
)
@pass_common
def status(common: Common, as_json: bool, watch: bool, listen: float) -> None:
    """Live agents from their heartbeats: id, role, specializations, load, last seen."""
    run(show_status(common.client_settings(), as_json, watch, listen))


async def queue_health(settings: Settings) -> dict[str, Any]:
    """Dead-letter count and the coordinator queues' depths (management API).

    Returns an ``error`` entry instead of raising when the API is unreachable.
    """
    vhost = vhost_of(settings.amqp_url)
    try:
        url = Keystore(settings.keys_dir).broker_url(settings.amqp_url, settings.agent_id)
        where = ManagementSettings.from_amqp_url(url, override=settings.management_url)
        async with Management(where, timeout=3) as mgmt:
            out: dict[str, Any] = {}
            for name in (topo.DEAD_LETTER_QUEUE, topo.TASK_QUEUE):
                q = await mgmt.queue(vhost, name)
                out[name] = {"messages": q.get("messages", 0), "consumers": q.get("consumers", 0)}
            return out
    except BrokerError as exc:
        return {"error": str(exc)}


def coordinator_view(agents: dict[str, AgentStatus]) -> dict[str, Any]:
    """The active coordinator's report from its heartbeat ({} if none is active)."""
    for a in agents.values():
        report = a.extra.get("coordinator")
        if a.role == "coordinator" and isinstance(report, dict) and report.get("active"):
            return report
    return {}


def quarantine_view(agents: dict[str, AgentStatus]) -> dict[str, Any]:
    """Quarantined agents as the guardians' heartbeats report them (newest order wins)."""
    out: dict[str, Any] = {}
    for a in agents.values():
        report = a.extra.get("guardian") if a.role == "guardian" else None
        held = report.get("quarantined") if isinstance(report, dict) else None
        for target, order in (held or {}).items():
            if isinstance(order, dict) and order.get("at", 0) >= out.get(target, {}).get("at", 0):
                out[target] = order
    return out


def fleet_rows(
    agents: dict[str, AgentStatus],
    now: float,
    role_of: Callable[[str], str | None] = lambda agent_id: None,
) -> list[dict[str, Any]]:
    """One row per agent: what it says of itself plus the coordinator's verdict.

    Health is the active coordinator's (alive, suspected, dead, left, backup,
    recovering); agents it still tracks but that no longer heartbeat appear
    too, so a dead agent is visible rather than silently missing, with the
    role ``role_of`` finds for it (its certificate), else ``?``.
    """
    view = coordinator_view(agents)
    health: dict[str, str] = view.get("health", {})
    in_flight: dict[str, int] = view.get("in_flight", {})
    idle_backups = set(view.get("backups_idle", []))
    quarantined = quarantine_view(agents)
    rows = []
    for a in agents.values():
        row = a.as_dict(now)
        state = health.get(a.id) or ("backup" if a.extra.get("standby") else "alive")
        if a.id in idle_backups:
            state = "backup"
        if a.id in quarantined:
            state = "quarantined"
            row["quarantine"] = quarantined[a.id]
        row["health"] = (
            state
            if a.role != "coordinator"
            else ("active" if a.extra.get("coordinator", {}).get("active") else "standby")
        )
        row["tasks_in_flight"] = in_flight.get(a.id, 0)
        rows.append(row)
    for agent_id, state in sorted(health.items()):
        if agent_id not in agents and state in ("suspected", "dead", "left"):
            rows.append(
                {
                    "id": agent_id,
                    "role": role_of(agent_id) or "?",
                    "specializations": [],
                    "cluster_id": "",
                    "health": state,
                    "load": 0,
                    "capacity": 0,
                    "last_seen_s": None,
                    "tasks_in_flight": in_flight.get(agent_id, 0),
                    "stats": {},
                }
            )
    return rows


_HEALTH_STYLE = {
    "alive": "green",
    "active": "green",
    "suspected": "yellow",
    "dead": "red",
    "left": "dim",
    "backup": "cyan",
    "standby": "cyan",
    "recovering": "magenta",
    "quarantined": "red",
}


def _quantity(dimension: str, value: float) -> str:
    if dimension == "cpu":
        return f"{value:g}"
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def pool_note(pool: dict[str, Any] | None) -> str | None:
    """``pool: cpu 1/2 free, memory 0.5 GiB/1.0 GiB free, 1 reserved`` (None if empty)."""
    if not pool or not pool.get("capacity"):
        return None
    free = pool.get("available", {})
    parts = [
        f"{d} {_quantity(d, free.get(d, 0))}/{_quantity(d, total)} free"
        for d, total in pool["capacity"].items()
    ]
    return f"pool: {', '.join(parts)}; {pool.get('reservations', 0)} reserved"


def _types(types: list[str] | None, shown: int = 6) -> str:
    """``sort, wordcount, +3``: an agent's task types, abbreviated (None: not announced)."""
    if types is None:
        return "?"
    more = f", +{len(types) - shown}" if len(types) > shown else ""
    return ", ".join(types[:shown]) + more if types else "-"


# Columns in the order shown; to fit the width, the optional ones go in the order listed.
_COLUMNS = (
    "id",
    "role",
    "prio",
    "specializations",
    "cluster",
    "health",
    "load",
    "tasks",
    "last seen",
    "rejected",
    "task types",
)
_OPTIONAL = ("task types", "rejected", "cluster", "last seen", "prio", "specializations", "tasks")


def _cells(r: dict[str, Any]) -> dict[str, str]:
    seen = r.get("last_seen_s")
    style = _HEALTH_STYLE.get(r["health"], "white")
    levels = r.get("proficiency") or {}
    skills = [f"{s}:{levels[s]:g}" if s in levels else s for s in r["specializations"]]
    return {
        "id": r["id"],
        "role": r["role"],
        "prio": str(r.get("priority") or "-"),
        "specializations": ", ".join(skills) or "-",
        "cluster": r.get("cluster_id") or "-",
        "health": f"[{style}]{r['health']}[/]",
        "load": f"{r['load']}/{r['capacity']}",
        "tasks": str(r["tasks_in_flight"]),
        "last seen": "-" if seen is None else f"{seen:.1f}s ago",
        "rejected": str(sum(r.get("stats", {}).get("rejected", {}).values())),
        "task types": _types(r.get("task_types")),
    }


def render(
    rows: list[dict[str, Any]],
    queues: dict[str, Any],
    pool: dict[str, Any] | None = None,
    width: int | None = None,
) -> Table:
    """The status table; with ``width``, optional columns are dropped until it fits,
    and ids are never cut (two workers must not look the same)."""
    live = sum(1 for r in rows if r["health"] not in ("dead", "left"))
    table = Table(title=f"robeing — {live} live agent(s)", title_justify="left")
    cells = [_cells(r) for r in rows]
    plain = {"health": max([6, *(len(r["health"]) for r in rows)])}

    def needed(cols: list[str]) -> int:
        widest = {c: max([len(c), *(plain.get(c) or len(x[c]) for x in cells)]) for c in cols}
        return sum(widest.values()) + 3 * len(cols) + 1

    columns = list(_COLUMNS)
    for optional in _OPTIONAL:
        if width is None or needed(columns) <= width:
            break
        columns.remove(optional)
    for col in columns:
        right = col in ("load", "tasks", "last seen", "rejected")
        table.add_column(
            col,
            justify="right" if right else "left",
            no_wrap=col == "id",
            overflow="fold",
            min_width=max([2, *(len(x["id"]) for x in cells)]) if col == "id" else None,
        )
    for x in cells:
        table.add_row(*(x[c] for c in columns))
    dl = queues.get(topo.DEAD_LETTER_QUEUE)
    tq = queues.get(topo.TASK_QUEUE)
    notes = []
    if tq is not None:
        notes.append(f"submissions pending: {tq['messages']}")
    if dl is not None:
        notes.append(f"dead letters: {dl['messages']}")
    if (note := pool_note(pool)) is not None:
        notes.append(note)
    held = [r["id"] for r in rows if r["health"] == "quarantined"]
    if held:
        notes.append(f"quarantined: {', '.join(held)}")
    table.caption = "  ".join(notes) or None
    return table


def certified_role(settings: Settings) -> Callable[[str], str | None]:
    """The role in an agent's certificate in the keys directory, if it is there and valid."""
    store = Keystore(settings.keys_dir)
    try:
        trust = store.trust_store()
    except ConfigError:
        return lambda agent_id: None

    def role_of(agent_id: str) -> str | None:
        raw = store.peer_certificate(agent_id)
        try:
            return trust.check_certificate(raw, time.time()).role if raw else None
        except ProtocolError:
            return None

    return role_of


async def show_status(settings: Settings, as_json: bool, watch: bool, listen: float) -> None:
    console = Console()
    role_of = certified_role(settings)
    async with Client(settings, listen_only=True) as client:
        while True:
            agents, health = await asyncio.gather(
                client.live_agents(listen), queue_health(settings)
            )
            now = time.time()
            rows = fleet_rows(agents, now, role_of)
            if as_json:
                out = {"agents": rows, "queues": health, "quarantined": quarantine_view(agents)}
                print(json.dumps(out, indent=2, sort_keys=True, default=str), flush=True)
            else:
                if watch:
                    console.clear()
                pool = coordinator_view(agents).get("resources")
                console.print(render(rows, health, pool, console.width))
            if not watch:
                return
