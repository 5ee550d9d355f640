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
import logging
import time
from typing import Any

from ....broker import topology as topo
from ....protocol.errors import DecodeError, ProtocolError
from ....protocol.fields import count, need
from ....protocol.records import EPOCH_TYPE, MAX_EPOCH
from ... import epochs
from ...context import AgentContext
from ...heartbeats import listen_heartbeats

log = logging.getLogger(__name__)

LOCK_RETRY_S = 0.25  # how often a standby tries to take the lead
STANDBY_HEAD_START_S = 2.0  # what a --standby coordinator leaves the others at its start
CLAIM_CHECK_S = 10.0  # how often a standby checks who holds the lock


async def take_the_lead(agent: AgentContext) -> int:
    """Wait (as a standby) until we own the lock; returns our new epoch.

    A standby that has waited :data:`CLAIM_CHECK_S` checks the lock's claim:
    the signed epoch record names the coordinator that took the lead, which
    must be heartbeating as the active one. If it is not, something else
    holds the lock (under per-agent broker users only coordinators may
    declare it): that is logged as an error, every :data:`CLAIM_CHECK_S`,
    for an operator to act on.

    Raises:
        BrokerError: the broker refused an operation.
    """
    broker = agent.broker
    standby_logged = False
    next_check = time.monotonic() + CLAIM_CHECK_S
    # A coordinator started with --standby leaves the lead to those started
    # with it: it first tries for the lock after a head start. Then it tries as
    # often as any, so its takeover when the active one dies is as quick.
    if agent.settings.standby:
        await asyncio.sleep(STANDBY_HEAD_START_S)
    while not await broker.try_exclusive(topo.lock_spec()):
        if not standby_logged:
            log.info("another coordinator is active; %s waits as standby", agent.id)
            standby_logged = True
        if time.monotonic() >= next_check:
            await _check_claim(agent)
            next_check = time.monotonic() + CLAIM_CHECK_S
        await asyncio.sleep(LOCK_RETRY_S)
    return await next_epoch(agent)


async def _check_claim(agent: AgentContext) -> None:
    """Log an error when the lock's holder is not the coordinator its signed claim names."""
    claimant = None
    raw = await agent.broker.peek(topo.EPOCH_QUEUE)
    if raw is not None:
        try:
            claimant = read_claim(agent, raw).get("coordinator")
        except ProtocolError:
            claimant = None
    live = await listen_heartbeats(agent, max(2.5 * agent.settings.heartbeat_interval, 1.5))
    status = live.get(claimant) if isinstance(claimant, str) else None
    report = status.extra.get("coordinator") if status is not None else None
    if isinstance(report, dict) and report.get("active"):
        return
    log.error(
        "robeing.coordinator.lock is held, but %s: some other connection holds the lock and "
        "keeps every coordinator standby (find the owner of the exclusive queue "
        "robeing.coordinator.lock in the management UI; under per-agent broker users only "
        "coordinators may declare it)",
        f"the coordinator that claimed it last ({claimant}) is not active"
        if claimant
        else "no coordinator has made a valid claim to it",
    )


async def next_epoch(agent: AgentContext) -> int:
    """An epoch newer than any before it, recorded (signed) for the next coordinator.

    The epoch queue holds the last epoch as a signed ``coordinator.epoch``
    record naming the coordinator and its incarnation (see
    :func:`robeing.agents.epochs.next_epoch`, which cluster leaders' terms share).
    """
    claim = {"coordinator": agent.id, "incarnation": agent.incarnation}
    spec = topo.epoch_spec(agent.settings.topology)
    return await epochs.next_epoch(agent, spec, EPOCH_TYPE, claim, lambda r: read_epoch(agent, r))


def read_epoch(agent: AgentContext, raw: bytes) -> int:
    """The epoch in a stored epoch record.

    Raises:
        ProtocolError: not a coordinator's signed record of a plausible epoch.
    """
    claim = read_claim(agent, raw)
    return count(need(claim, "epoch", int), "epoch", low=1, high=MAX_EPOCH)


def read_claim(agent: AgentContext, raw: bytes) -> dict[str, Any]:
    """The signed claim in an epoch record: epoch, coordinator, incarnation.

    Raises:
        ProtocolError: not a coordinator's signed epoch record.
    """
    opened = agent.open_stored(raw)
    if opened.envelope.type != EPOCH_TYPE or not isinstance(opened.envelope.payload, dict):
        raise DecodeError(f"a {opened.envelope.type!r} is not an epoch record")
    if opened.envelope.payload.get("coordinator") != opened.envelope.sender:
        raise DecodeError("an epoch record claimed for another coordinator")
    return opened.envelope.payload


async def foreign_consumers(agent: AgentContext) -> dict[str, int]:
    """Other consumers on the active coordinator's queues, logged as an error when any.

    The queues have a single active consumer: one attached after us waits idle,
    one attached before us takes what is ours. Under per-agent broker users
    only coordinators may read them.
    """
    out: dict[str, int] = {}
    for queue in (topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE):
        try:
            others = await agent.broker.consumer_count(queue) - 1
        except Exception as exc:
            log.debug("could not count the consumers of %s: %s", queue, exc)
            continue
        out[queue] = others
        if others > 0:
            log.error(
                "%s has %d consumer(s) besides the active coordinator: another process is "
                "attached to it; find it in the management UI",
                queue,
                others,
            )
    return out
