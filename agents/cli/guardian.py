"""``robeing guardian quarantine|release|list|policy``: the guardians' orders and policy.

An order is signed by a guardian, never by the command: the command asks a
live guardian (``--guardian ID``, or the first one heard heartbeating) with a
``guardian.command`` request, which the guardian accepts from client and
guardian identities only; it then signs the order and broadcasts it, every
agent refuses the quarantined agent's messages (reason ``quarantined``) and
the coordinator reassigns what it holds.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .common import Common, ConfigFailure, pass_common, run
from .options import as_option, json_option


@click.group()
def guardian() -> None:
    """Quarantine an agent, release it, list who is quarantined; the access policy."""


async def _guardian_id(client: Any, given: str | None) -> str:
    if given:
        return given
    live = await client.live_agents()
    guardians = sorted(a.id for a in live.values() if a.role == "guardian")
    if not guardians:
        raise ConfigFailure("no guardian is heartbeating; start one or name it with --guardian")
    return guardians[0]


def _command(common: Common, as_id: str, guardian_id: str | None, payload: dict[str, Any]) -> Any:
    from ..client import Client

    async def go() -> Any:
        async with Client(common.client_settings(as_id)) as client:
            target = await _guardian_id(client, guardian_id)
            return await client.request(target, "guardian.command", payload, timeout=15)

    return run(go())


@guardian.command("quarantine")
@click.argument("agent_id")
@click.option("--reason", required=True, help="Why (recorded in the signed order).")
@click.option("--guardian", "guardian_id", default=None, help="The guardian to ask.")
@as_option()
@pass_common
def quarantine(
    common: Common, agent_id: str, reason: str, guardian_id: str | None, as_id: str
) -> None:
    """Have a guardian quarantine AGENT_ID: its messages refused, its work reassigned."""
    payload = {"action": "quarantine", "target": agent_id, "reason": reason}
    out = _command(common, as_id, guardian_id, payload)
    click.echo(f"{agent_id} quarantined by {out['guardian']}")


@guardian.command("release")
@click.argument("agent_id")
@click.option("--reason", default=None, help="Why (recorded in the signed order).")
@click.option("--guardian", "guardian_id", default=None, help="The guardian to ask.")
@as_option()
@pass_common
def release(
    common: Common, agent_id: str, reason: str | None, guardian_id: str | None, as_id: str
) -> None:
    """Have a guardian release AGENT_ID from quarantine."""
    payload = {"action": "release", "target": agent_id, "reason": reason or "released"}
    out = _command(common, as_id, guardian_id, payload)
    click.echo(f"{agent_id} released by {out['guardian']}")


@guardian.command("policy")
@click.option(
    "--deny",
    multiple=True,
    metavar="ROLE=TYPE[,TYPE…]",
    help="Forbid a role these message types (a prefix ends with '.'); repeat per role.",
)
@click.option("--clear", is_flag=True, help="Issue a policy that forbids nothing more.")
@click.option("--guardian", "guardian_id", default=None, help="The guardian to ask.")
@as_option()
@json_option()
@pass_common
def policy(
    common: Common,
    deny: tuple[str, ...],
    clear: bool,
    guardian_id: str | None,
    as_id: str,
    as_json: bool,
) -> None:
    """Show the access policy in force, or have a guardian sign and distribute a tighter one.

    The role table is the ceiling: a policy only takes permissions away, and
    never heartbeats or a guardian's own messages. Every agent applies the
    newest valid policy and refuses what it denies (reason 'policy').
    """
    rules: dict[str, list[str]] = {}
    for item in deny:
        role, sep, types = item.partition("=")
        if not sep or not types:
            raise click.UsageError(f"--deny takes ROLE=TYPE[,TYPE…], got {item!r}")
        rules.setdefault(role.strip(), []).extend(t.strip() for t in types.split(",") if t.strip())
    if rules or clear:
        out = _command(common, as_id, guardian_id, {"action": "policy", "deny": rules})
        click.echo(f"access policy v{out['version']} signed by {out['guardian']}: {out['deny']}")
        return
    from ..client import Client

    async def go() -> Any:
        async with Client(common.client_settings(as_id)) as client:
            target = await _guardian_id(client, guardian_id)
            return (await client.request(target, "guardian.report", timeout=15)).get("policy")

    current = run(go())
    if as_json:
        click.echo(json.dumps(current, indent=2, sort_keys=True))
    elif current is None:
        click.echo("no access policy: the role table alone applies")
    else:
        click.echo(
            f"access policy v{current['version']} of {current['guardian']}: {current['deny']}"
        )


@guardian.command("list")
@json_option()
@pass_common
def list_quarantined(common: Common, as_json: bool) -> None:
    """Quarantined agents, as the guardians' heartbeats report them."""
    from ..client import Client
    from .status import quarantine_view

    async def go() -> dict[str, Any]:
        async with Client(common.client_settings(), listen_only=True) as client:
            return quarantine_view(await client.live_agents())

    held = run(go())
    if as_json:
        click.echo(json.dumps(held, indent=2, sort_keys=True))
        return
    for target, order in sorted(held.items()):
        click.echo(f"{target}\tby {order['guardian']}\t{order['reason']}")
    if not held:
        click.echo("nobody is quarantined")
