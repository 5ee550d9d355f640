"""``robeing pool show|request|release``: the pooled resources of a cluster, and leases.

Each asks the active coordinator (see :class:`robeing.agents.clusters.Pool`).
A request the pool cannot meet is one line — ``insufficient resources: asked
cpu=16; free cpu=8 (largest on one agent: 4)`` — and exit 2; with ``--wait``
it is asked again until it can be met or ``--timeout`` passes (exit 4).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from ...protocol.leases import format_resources
from ...protocol.resources import Resources
from ..client import Client
from ..clusters import InsufficientPool
from .common import EXIT_CODES_HELP, Common, GaveUp, emit_json, pass_common, run
from .options import RESOURCES, question_options

WAIT_EVERY_S = 0.5


@click.group(epilog=EXIT_CODES_HELP)
def pool() -> None:
    """See the pooled resources of a cluster, and lease them (asks the active coordinator)."""


def _figures(data: dict[str, Any], key: str) -> str:
    return format_resources(Resources.from_mapping(data.get(key, {})))


@pool.command("show")
@click.option("--cluster", default=None, help="A named cluster (default: the default cluster).")
@question_options()
@pass_common
def show(common: Common, cluster: str | None, timeout: float, as_json: bool, as_id: str) -> None:
    """Free / total per resource, and the most one agent can take."""

    async def go() -> dict[str, Any]:
        async with Client(common.client_settings(as_id)) as client:
            client.pool.timeout = timeout
            return await client.pool.show(cluster)

    view = run(go())
    if as_json:
        emit_json(view)
        return
    click.echo(f"pool of cluster {view['cluster']}: {view['agents']} contributing agent(s)")
    click.echo(f"  free:    {_figures(view, 'free')}")
    click.echo(f"  total:   {_figures(view, 'total')}")
    click.echo(f"  largest on one agent: {_figures(view, 'largest')}")
    click.echo(f"  leases:  {view['leases']}")


@pool.command("request")
@click.argument("resources", type=RESOURCES)
@click.option("--cluster", default=None, help="A named cluster (default: the default cluster).")
@click.option(
    "--ttl",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Seconds until the lease ends unless released (default: the coordinator's, 300).",
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
    """Lease RESOURCES (e.g. cpu=2,memory=1GiB): whole on one agent, else spread."""

    async def go() -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with Client(common.client_settings(as_id)) as client:
            client.pool.timeout = timeout
            while True:
                try:
                    return await client.pool.request(resources, cluster=cluster, ttl=ttl)
                except InsufficientPool as exc:
                    if not wait:
                        raise
                    if time.monotonic() + WAIT_EVERY_S > deadline:
                        raise GaveUp(f"gave up after {timeout:g} s: {exc}") from None
                    await asyncio.sleep(WAIT_EVERY_S)

    lease = run(go())
    if as_json:
        emit_json(lease)
        return
    click.echo(lease["lease"])
    for part in lease["parts"]:
        click.echo(f"  {part['agent']}: {_figures(part, 'resources')}")


@pool.command("release")
@click.argument("lease_id")
@question_options()
@pass_common
def release(common: Common, lease_id: str, timeout: float, as_json: bool, as_id: str) -> None:
    """End a lease you hold."""

    async def go() -> None:
        async with Client(common.client_settings(as_id)) as client:
            client.pool.timeout = timeout
            await client.pool.release(lease_id)

    run(go())
    if as_json:
        emit_json({"released": lease_id})
    else:
        click.echo(f"released {lease_id}")
