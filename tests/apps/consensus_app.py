"""Agents with consensus, loaded with ``--app apps.consensus_app``.

Votes use the default policy (approve). The agent hosts the PBFT groups of
``ROBEING_BFT_GROUP`` that list it (``NAME=ID,ID,...[/F]``, ``;``-separated);
``ROBEING_BFT_TIMEOUT`` sets their view-change timeout in seconds and
``ROBEING_BFT_CHECKPOINT`` their checkpoint interval.
"""

from __future__ import annotations

import os

from robeing.agents import AgentContext, App
from robeing.agents.consensus import ensure_consensus
from robeing.protocol.pbft import GroupSpec, parse_groups

app = App(name="consensus")


def groups_from_env() -> tuple[GroupSpec, ...]:
    return parse_groups(
        os.environ.get("ROBEING_BFT_GROUP"),
        view_change_timeout=float(os.environ.get("ROBEING_BFT_TIMEOUT", "2.0")),
        checkpoint_interval=int(os.environ.get("ROBEING_BFT_CHECKPOINT", "16")),
    )


# Parsed on import: a bad group (e.g. n < 3f + 1) stops the agent before it connects.
GROUPS = groups_from_env()


@app.on_start
async def start(agent: AgentContext) -> None:
    await ensure_consensus(agent, GROUPS)
