"""Signed coordinator records kept in a broker stream, folded by every coordinator that leads.

What the active coordinator must not forget across a failover or a broker
restart (cluster definitions, pool leases) is written as signed records to a
stream (Raft-replicated by RabbitMQ) and folded in order by each coordinator
that becomes active.

Invariants:
    * :meth:`RecordStream.append` returns only once the broker confirmed the
      record into the stream: a change answered as done is durable.
    * Only records of the stream's type signed by a coordinator are folded;
      any other record is counted (``invalid``) and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ....broker.topology import QueueSpec
from ....protocol.envelope import Envelope
from ....protocol.errors import DecodeError, ProtocolError
from ...context import AgentContext

log = logging.getLogger(__name__)

__all__ = ["RecordStream"]


class RecordStream:
    """One stream of signed records of one type.

    Args:
        agent: the coordinator that reads and writes it.
        spec: the stream's declaration.
        record_type: the envelope type of its records.
        what: how a record is named in logs (``cluster record``).
    """

    def __init__(self, agent: AgentContext, spec: QueueSpec, record_type: str, what: str) -> None:
        self.agent = agent
        self.spec = spec
        self.record_type = record_type
        self.what = what
        self.invalid = 0

    async def load(self, apply: Callable[[Any], None], offset: Any = "first") -> int:
        """Fold every stored record's payload with ``apply`` (declaring the stream if needed).

        ``apply`` raising a :class:`ProtocolError` counts the record as invalid.

        Returns:
            How many records were read.
        """
        await self.agent.broker.declare_queue(self.spec)

        def on_body(body: bytes) -> None:
            try:
                opened = self.agent.open_stored(body)
                if (
                    opened.envelope.type != self.record_type
                    or opened.certificate.role != "coordinator"
                ):
                    raise DecodeError(f"not a coordinator's {self.what}")
                apply(opened.envelope.payload)
            except ProtocolError as exc:
                self.invalid += 1
                log.warning("ignoring a %s: %s", self.what, exc)

        return await self.agent.broker.read_stream(self.spec, offset, on_body)

    async def append(self, data: Any) -> None:
        """Sign ``data`` as a record and store it; returns once the broker confirmed it.

        Raises:
            BrokerError: the broker did not confirm it (nothing may be answered as done).
        """
        body = self.agent.seal(Envelope(self.record_type, data), False)
        await self.agent.broker.publish("", self.spec.name, body)
