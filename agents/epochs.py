"""Epochs and terms kept on the broker: newer than any before, recorded signed.

The active coordinator's epoch and each named cluster's leader term come from
the same mechanism, :func:`next_epoch`: a one-message queue holds the last
value as a signed record; the next holder reads it and takes
``max(last + 1, wall clock in ms)``, then records its own.

Invariant (given the lock that guards the queue, held for the whole call):
the value returned is greater than every value recorded before it in that
queue, and greater than any earlier holder's while clocks are within the gap
of the recorded value — a record that does not verify is ignored and
reported, and the wall clock still gives a value newer than any real one.
Holders never write concurrently: only the owner of the matching lock calls
this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..broker.topology import QueueSpec
from ..protocol.envelope import Envelope
from ..protocol.errors import ProtocolError
from .context import AgentContext

log = logging.getLogger(__name__)

__all__ = ["next_epoch"]


async def next_epoch(
    agent: AgentContext,
    spec: QueueSpec,
    record_type: str,
    claim: dict[str, Any],
    read: Callable[[bytes], int],
    route: tuple[str, str] | None = None,
) -> int:
    """An epoch newer than the one recorded in ``spec``'s queue, recorded there.

    Args:
        spec: the one-message queue (declared here if missing).
        route: ``(exchange, routing key)`` the record is published with; the
            queue is bound to it here. None: straight to the queue (the
            default exchange, which only coordinators may write to).
        record_type: the signed record's envelope type.
        claim: what the record says beside ``epoch`` (who holds it).
        read: the epoch in a stored record; raises ProtocolError if not authentic.

    Raises:
        BrokerError: the broker refused an operation.
    """
    broker, last = agent.broker, 0
    await broker.declare_queue(spec)
    exchange, key = route or ("", spec.name)
    if exchange:
        await broker.bind(spec.name, exchange, key)
    raw = await broker.peek(spec.name)
    if raw is not None:
        try:
            last = read(raw)
        except ProtocolError as exc:
            log.error("ignoring the record in %s, which is not authentic: %s", spec.name, exc)
    epoch = max(last + 1, int(time.time() * 1000))
    body = agent.seal(Envelope(record_type, {"epoch": epoch, **claim}), False)
    await broker.publish(exchange, key, body)
    return epoch
