"""``robeing pool show|request|renew|release|contribute``: a cluster's pooled resources, leases.

Each asks the active coordinator (see :class:`robeing.agents.clusters.Pool`).
A request the pool cannot meet is one line — ``insufficient resources: asked
cpu=16; free cpu=8 (largest on one agent: 4)`` — and exit 2; with ``--wait``
it is asked again until it can be met or ``--timeout`` passes (exit 4).

A lease taken here is a client lease held by the ``--as`` identity: the
command exits at once, so nothing renews it — it ends ``--ttl`` seconds
after the request (or the last ``robeing pool renew``) unless released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from ...protocol.leases import format_resources
from ...protocol.resources import InvalidResources, Resources, parse_resources
from ..client import Client
from ..clusters import InsufficientPool, Pool
from .common import EXIT_CODES_HELP, Common, ConfigFailure, GaveUp, emit_json, pass_common, run
from .options import RESOURCES, question_options

WAIT_EVERY_S = 0.5
T = TypeVar("T")


@click.group(epilog=EXIT_CODES_HELP)
def pool() -> None:
    """See the pooled resources of a cluster, and lease them (asks the active coordinator)."""


def _figures(data: dict[str, Any], key: str) -> str:
    return format_resources(Resources.from_mapping(data.get(key, {})))


def _ask(common: Common, as_id: str, timeout: float, call: Callable[[Pool], Awaitable[T]]) -> T:
    """Run one question to the pool as ``as_id``, answered within ``timeout`` s."""

    async def go() -> T:
        async with Client(common.client_settings(as_id)) as client:
            client.pool.timeout = timeout
            return await call(client.pool)

    return run(go())


@pool.command("show")
@click.option("--cluster", default=None, help="A named cluster (default: the default cluster).")
@question_options()
@pass_common
def show(common: Common, cluster: str | None, timeout: float, as_json: bool, as_id: str) -> None:
    """Free / total per resource, and the most one agent can take."""

    view = _ask(common, as_id, timeout, lambda pool: pool.show(cluster))
    if as_json:
        emit_json(view)
        return
    click.echo(f"pool of cluster {view['cluster']}: {view['agents']} contributing agent(s)")
    click.echo(f"  free:    {_figures(view, 'free')}")
    click.echo(f"  total:   {_figures(view, 'total')}")
    click.echo(f"  largest on one agent: {_figures(view, 'largest')}")
    kinds = view.get("by_kind", {})
    by_kind = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    click.echo(f"  leases:  {view['leases']}" + (f" ({by_kind})" if by_kind else ""))
    for row in view.get("shrinking", []):
        click.echo(
            f"  shrinking: {row['agent']} contributes {_figures(row, 'contributed')}, "
            f"committed {_figures(row, 'committed')} (no new placement there until it fits)"
        )


@pool.command("request")
@click.argument("resources", type=RESOURCES)
@click.option("--cluster", default=None, help="A named cluster (default: the default cluster).")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Seconds until the lease ends unless released or renewed with `robeing pool renew` "
    "(default: the coordinator's, 300).",
)
@click.option("--wait", is_flag=True, help="Ask again until the pool can meet it (--timeout).")
@question_options()
@pass_common
def request(
    common: Common,
    resources: Resources,
    cluster: str | None,
    ttl: float | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    as_id: str,
) -> None:
    """Lease RESOURCES (e.g. cpu=2,memory=1GiB): whole on one agent, else spread.

    The lease ends after --ttl seconds unless renewed (`robeing pool renew LEASE`)
    or released first.
    """

    deadline = time.monotonic() + timeout

    async def ask(pool: Pool) -> dict[str, Any]:
        while True:
            try:
                return await pool.request(resources, cluster=cluster, ttl=ttl, renew=False)
            except InsufficientPool as exc:
                if not wait:
                    raise
                if time.monotonic() + WAIT_EVERY_S > deadline:
                    raise GaveUp(f"gave up after {timeout:g} s: {exc}") from None
                await asyncio.sleep(WAIT_EVERY_S)

    lease = _ask(common, as_id, timeout, ask)
    if as_json:
        emit_json(lease)
        return
    click.echo(lease["lease"])
    if lease.get("expires_at"):
        click.echo(
            f"  ends in {lease['ttl']:g} s unless renewed: robeing pool renew {lease['lease']}"
        )
    for part in lease["parts"]:
        click.echo(f"  {part['agent']}: {_figures(part, 'resources')}")


@pool.command("release")
@click.argument("lease_id")
@question_options()
@pass_common
def release(common: Common, lease_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """End a lease you hold."""

    _ask(common, as_id, timeout, lambda pool: pool.release(lease_id))
    if as_json:
        emit_json({"released": lease_id})
    else:
        click.echo(f"released {lease_id}")


@pool.command("renew")
@click.argument("lease_id")
@question_options()
@pass_common
def renew(common: Common, lease_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """Move the end of a lease you hold to now + its TTL."""

    lease = _ask(common, as_id, timeout, lambda pool: pool.renew(lease_id))
    if as_json:
        emit_json(lease)
    else:
        click.echo(f"renewed {lease_id} for {lease.get('ttl') or 0:g} s")


@pool.command("contribute")
@click.argument("resources")
@click.option("--agent", "agent_id", required=True, help="The live agent to change.")
@question_options()
@pass_common
def contribute(
    common: Common, resources: str, agent_id: str, timeout: float, as_json: bool, as_id: str
) -> None:
    """Make a running agent contribute RESOURCES (its whole contribution, e.g. cpu=2,memory=1GiB).

    A resource left out is contributed no more. Shrinking below what is leased or
    reserved on the agent ends nothing: `pool show` marks it shrinking, nothing new is
    placed there, and the new amount takes effect as those leases and tasks end.
    Operators only (clients); a restarted agent contributes its ROBEING_RESOURCES again.
    """
    try:
        offered = parse_resources(resources)
    except InvalidResources as exc:
        raise ConfigFailure(f"invalid resources: {exc}") from None

    done = _ask(common, as_id, timeout, lambda pool: pool.contribute(agent_id, offered))
    if as_json:
        emit_json(done)
        return
    line = f"{agent_id} contributes {_figures(done, 'contributed')}"
    if done.get("shrinking"):
        line += f"; shrinking: {_figures(done, 'committed')} committed there stays until it ends"
    click.echo(line)
