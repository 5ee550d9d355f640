"""An agent's side of pooled resources: obeying the coordinator's contribution orders.

Every agent that takes work (not a coordinator) handles ``pool.contribution``
(:class:`~robeing.protocol.contributions.ContributionOrder`). Only a
coordinator may send it (the role table); an order stamped older than the
newest one obeyed is refused and dead-lettered as ``stale_epoch``. An obeyed
order sets the context's ``resources``, which the next heartbeat announces;
the coordinator's ledger follows the heartbeats. The order is kept in memory
only: after a restart the agent contributes its ``ROBEING_RESOURCES`` again.
"""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.contributions import ORDER_TYPE, ContributionFence, ContributionOrder
from .context import AgentContext, Message
from .orders import obey

log = logging.getLogger(__name__)

__all__ = ["install"]


def install(agent: AgentContext) -> ContributionFence:
    """Handle contribution orders on ``agent``; returns the fence (for tests and reports)."""

    def apply(msg: Message, order: ContributionOrder) -> dict[str, Any]:
        before = msg.agent.resources
        msg.agent.resources = None if order.resources.is_zero() else order.resources
        if before != msg.agent.resources:
            log.warning(
                "%s now contributes %s (was %s; ordered by %s)",
                msg.agent.id,
                order.resources.to_mapping(),
                before.to_mapping() if before is not None else {},
                msg.sender,
            )
        return {"resources": order.resources.to_mapping()}

    return obey(agent, ORDER_TYPE, ContributionOrder.from_data, apply)
