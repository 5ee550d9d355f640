"""Leadership of the coordinators: one active at a time, each with a newer epoch.

Exactly one coordinator is active: the one whose connection owns
the exclusive queue ``robeing.coordinator.lock`` (a mutex the broker keeps and
releases when that connection dies). Others wait as standbys and retry. On
taking over, the coordinator picks an epoch greater than any before it
(``robeing.coordinator.epoch`` plus the wall clock) and stamps it on every
assignment; agents refuse assignments from older epochs, so a deposed
coordinator cannot issue work. A coordinator that loses its connection, and so
its lock, exits (crash-only): :func:`robeing.agents.assembly.serve` starts it
again as a standby with a fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ....broker import topology as topo
from ...context import AgentContext

log = logging.getLogger(__name__)

LOCK_RETRY_S = 0.25  # how often a standby tries to take the lead


async def take_the_lead(agent: AgentContext) -> int:
    """Wait (as a standby) until we own the lock; returns our new epoch.

    Raises:
        BrokerError: the broker refused an operation.
    """
    broker = agent.broker
    standby_logged = False
    while not await broker.try_exclusive(topo.lock_spec()):
        if not standby_logged:
            log.info("another coordinator is active; %s waits as standby", agent.id)
            standby_logged = True
        await asyncio.sleep(LOCK_RETRY_S)
    return await next_epoch(agent)


async def next_epoch(agent: AgentContext) -> int:
    """An epoch newer than any before it, recorded for the next coordinator."""
    broker, last = agent.broker, 0
    await broker.declare_queue(topo.epoch_spec())
    raw = await broker.peek(topo.EPOCH_QUEUE)
    if raw is not None:
        with contextlib.suppress(ValueError):
            last = int(raw.decode())
    epoch = max(last + 1, int(time.time() * 1000))
    await broker.publish("", topo.EPOCH_QUEUE, str(epoch).encode())
    return epoch
