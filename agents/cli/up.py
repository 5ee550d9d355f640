"""``robeing up``: a local fleet against the broker, running a demo workload.

The supervisor itself is :mod:`robeing.agents.fleet`; this module only maps
the command line onto it.
"""

from __future__ import annotations

import os
import sys

import click

from .common import Common, pass_common, run


@click.command()
@click.option(
    "--workers",
    envvar="AGENT_COUNT",
    show_envvar=True,
    default=2,
    type=click.IntRange(min=1, max=64),
    show_default=True,
)
@click.option("--once", is_flag=True, help="Run the demo workload, print the report, stop.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Stop after this many seconds (0: until Ctrl-C).",
)
@pass_common
def up(common: Common, workers: int, once: bool, duration: float) -> None:
    """Start a local fleet against the broker and run a demo workload."""
    from ..fleet import run_fleet

    common.configure_logging("fleet", "supervisor")
    # The fleet's agents inherit our environment: the same event loop as ours.
    os.environ["ROBEING_LOOP"] = common.loop
    code = run(run_fleet(common.client_settings(), workers, once, duration, common.log_level))
    sys.exit(code)
