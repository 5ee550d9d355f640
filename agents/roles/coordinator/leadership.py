"""Leadership of the coordinators: one active at a time, each with a newer epoch.

The lock. The active coordinator is the holder of the lock
``robeing.coordinator.lock``, taken with the broker's ``try_exclusive``: a
quorum queue with a single active consumer, in which the broker's Raft
majority decides which coordinator's consumer is active; a coordinator proves
to itself that it is the one by getting its own ping back, and keeps a lease
on it (:mod:`robeing.broker.lease`). Others wait in line as standbys and are
handed the lock as soon as the holder's connection closes (a crash: about a
second) or the majority declares the holder's node down (``net_ticktime``
after a partition or a paused node). A coordinator that loses its connection
has lost the lock: it stops acting at once and exits (crash-only);
:func:`robeing.agents.assembly.serve` starts it again as a standby with a
fresh state. A holder that cannot prove its hold for the lease's time (its
node cut off from the majority) drops its connection, which is the same event.

Why not an exclusive queue (the lock before): it lives on the node of its
owner's connection; when that node is cut off, the majority forgets it and a
standby declares it again, while the owner still holds its copy; two
coordinators were seen active at once.

The invariant under partitions: at most one coordinator's assignments are
accepted per epoch, and a deposed coordinator's are refused by every agent
that has seen a newer one.

* Each coordinator takes the lead with an epoch newer than any before it
  (``robeing.coordinator.epoch``, a quorum queue, plus the wall clock in
  milliseconds) and stamps it on every assignment; an epoch names one
  coordinator incarnation, because a new one is chosen each time the lead is
  taken, by the holder of the lock only.
* Agents refuse assignments from an epoch older than the newest they have
  seen (:class:`~robeing.protocol.election.EpochFence`, dead-lettered as
  ``stale_epoch``), and the coordinator discards results of any epoch but its
  own: whatever a deposed coordinator still sends is refused or discarded.
* The lock makes overlap rare, the fence makes it harmless: with the lease, a
  holder cut off from the majority stops acting (``LEASE_S``) before the
  majority hands the lock on (``net_ticktime``); a deposed coordinator acts
  no more from the moment it sees its connection lost (no tick, no
  assignment, no acknowledgement, its consumers cancelled before they can be
  restored on the new connection), so the two do not act at once.
* Nothing accepted is lost in the hand-over: submissions stay unacknowledged
  in the quorum queue ``robeing.coordinator.tasks`` until their results are
  stored, and go to the next coordinator when the deposed one's channels
  close.

What the broker guarantees, and what it does not: one active consumer per
quorum queue in the majority's view; on a single node the same queue (a
quorum queue of one) hands over when a connection closes, as the exclusive
queue did. It does not tell a consumer on a cut-off node that it was
deactivated; the lease covers that, by timing, which is why the epoch fence
and not the lock carries the safety.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ....broker import topology as topo
from ....broker.base import Consumer, QueueMismatch
from ....protocol.errors import ConfigError, DecodeError, ProtocolError
from ....protocol.fields import count, need
from ....protocol.records import EPOCH_TYPE, MAX_EPOCH
from ... import epochs
from ...context import AgentContext
from ...heartbeats import listen_heartbeats

log = logging.getLogger(__name__)

LOCK_RETRY_S = 0.25  # how often a standby tries to take the lead
STANDBY_HEAD_START_S = 2.0  # what a --standby coordinator leaves the others at its start
CLAIM_CHECK_S = 10.0  # how often a standby checks who holds the lock


class Lead:
    """What the active coordinator holds, given up at once when it loses the lead.

    :meth:`lost` is the coordinator's reconnect listener: a new connection
    means the lock went with the old one. It runs before the consumers are
    attached again on the new connection, and :meth:`depose` makes the
    coordinator act no more, before its graceful stop: its tasks (the pump:
    no tick assigns anything) are cancelled, its consumers of the
    coordinator's queues are cancelled (they would otherwise take submissions
    from the new lead), and the shell skips every action and leaves every
    delivery unsettled once ``deposed`` (no assignment, final or
    acknowledgement in a stale epoch; the broker hands the deliveries to the
    next coordinator when the channels close).
    """

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.deposed = False
        self.consumers: list[Consumer] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._cancels: set[asyncio.Task[None]] = set()

    def lost(self) -> None:
        log.error(
            "coordinator %s lost its broker connection and with it the lead; "
            "restarting with a fresh state",
            self.agent.id,
        )
        self.depose()
        self.agent.request_stop("lost_lead")

    def depose(self) -> None:
        self.deposed = True
        for task in self.tasks:
            task.cancel()
        for consumer in self.consumers:
            cancel = asyncio.get_running_loop().create_task(self.agent.cancel(consumer))
            self._cancels.add(cancel)
            cancel.add_done_callback(self._cancels.discard)
        self.consumers.clear()


def stop_reason(exc: BaseException) -> str:
    """How a coordinator that failed on its way to the lead stops.

    ``lost_lead`` (start over as a standby, :func:`robeing.agents.assembly.serve`)
    for what passes: mostly a connection lost on the way (a node going down
    while we took over). Only a failure that would repeat stops the process:
    a queue or a setting an operator has to fix.
    """
    return "stopped" if isinstance(exc, QueueMismatch | ConfigError) else "lost_lead"


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
            try:
                await _check_claim(agent)
            except Exception as exc:  # a diagnosis: it must never stop a standby
                log.debug("could not check the lock's claim: %s", exc)
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
