"""An agent's side of clusters: obeying the coordinator's membership orders.

Every agent that takes work (not a coordinator: it leads the default
cluster) handles ``cluster.member`` (:class:`~robeing.protocol.clusters.MembershipOrder`).
Only a coordinator may send it (the role table); an order stamped older than
the newest one obeyed is refused and dead-lettered as ``stale_epoch``. An
obeyed order sets the context's ``cluster_id``, which the next heartbeat
announces; the coordinator's scheduling follows the heartbeats. The order is
kept in memory only: after a restart the agent announces its ``CLUSTER_ID``
again and the coordinator, seeing it differ from the directory, orders it
back.
"""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.clusters import ORDER_TYPE, MembershipOrder, OrderFence
from .context import AgentContext, Message
from .orders import obey

log = logging.getLogger(__name__)

__all__ = ["install"]


def install(agent: AgentContext) -> OrderFence:
    """Handle membership orders on ``agent``; returns the fence (for tests and reports)."""

    def apply(msg: Message, order: MembershipOrder) -> dict[str, Any]:
        if msg.agent.cluster_id != order.cluster:
            log.warning(
                "%s moves from cluster %s to %s (ordered by %s)",
                msg.agent.id,
                msg.agent.cluster_id,
                order.cluster,
                msg.sender,
            )
            msg.agent.cluster_id = order.cluster
        return {"cluster": msg.agent.cluster_id}

    return obey(agent, ORDER_TYPE, MembershipOrder.from_data, apply)
