"""Declaring the queues an agent owns (its inbox and work queue), across robeing versions.

Per-agent queues expire when no process has used them for a while
(:attr:`~robeing.broker.topology.TopologySettings.agent_queue_expiry_s`). RabbitMQ
refuses to declare a queue again with other arguments, so one that an older
robeing made without an expiry is used as it is, with a warning saying how to
let it expire.
"""

from __future__ import annotations

import dataclasses
import logging

from ...broker.base import QueueMismatch, Transport
from ...broker.topology import QueueSpec

log = logging.getLogger(__name__)


async def own_queue(transport: Transport, spec: QueueSpec) -> QueueSpec:
    """Declare ``spec``; returns the spec to consume it with (without expiry for an old queue).

    Raises:
        BrokerError: the broker refused the declaration for another reason.
    """
    try:
        await transport.declare_queue(spec)
        return spec
    except QueueMismatch:
        if not spec.arguments or "x-expires" not in spec.arguments:
            raise
    args = {k: v for k, v in spec.arguments.items() if k != "x-expires"}
    older = dataclasses.replace(spec, arguments=args)
    await transport.declare_queue(older)
    log.warning(
        "%s was made without an expiry (by an older robeing): it is used as it is and will "
        "not expire; delete it while it is empty to have it expire",
        spec.name,
    )
    return older
