"""Final results, batched: one stream record and one message per submitter per flush.

A coordinator finishing many tasks at once would otherwise pay two publishes
per task (the durable record in ``robeing.results`` and the notice to the
submitter) — on this project's benchmark machine each publish costs a socket
write of ~100 µs. Finals that complete while the previous batch is being
written (up to ``max_batch``) share one stream record (a msgpack list) and one
``task.finals`` envelope per submitter queue; an idle outbox writes at once.

Invariant: :meth:`FinalsOutbox.deliver` returns only after the batch holding
its final was confirmed into the stream, so a submission acknowledged after
it can never lose its result; if the stream write fails, every waiter of the
batch gets the error and nothing is acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..broker import topology as topo
from ..protocol.envelope import Envelope, pack
from ..protocol.errors import ProtocolError
from ..protocol.taskmsgs import FinalResult
from .batching import Coalescer

if TYPE_CHECKING:
    from .runtime import Agent

log = logging.getLogger(__name__)

Recipient = tuple[str, str]  # (submitter id, reply queue)


def finals_from_record(data: Any) -> list[FinalResult]:
    """Parse a results-stream record: one final (a map) or a batch (a list)."""
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        with contextlib.suppress(ProtocolError):
            out.append(FinalResult.from_data(item))
    return out


class FinalsOutbox:
    """Stores and announces final results in batches (see :mod:`.batching`)."""

    def __init__(self, agent: Agent, max_batch: int = 256) -> None:
        self.agent = agent
        self._batches: Coalescer[None, tuple[FinalResult, list[Recipient]]] = Coalescer(
            self._flush, max_batch
        )
        self.messages = 0

    @property
    def records(self) -> int:
        return self._batches.flushes

    async def deliver(self, final: FinalResult, recipients: list[Recipient]) -> None:
        """Notify ``recipients`` of ``final`` and store it durably; returns once stored.

        The notice goes out before the stream write: should the coordinator die
        in between, the submission is redelivered, the task runs again and the
        submitter's client drops the second notice (one result per task).

        Raises:
            BrokerError: the stream did not confirm the batch.
        """
        await self._batches.put(None, [(final, recipients)])

    async def notify(self, final: FinalResult, recipients: list[Recipient]) -> None:
        """Announce an already stored final (e.g. to a resubmitter)."""
        await self._announce({r: [final.to_data()] for r in recipients})

    async def _flush(self, _key: None, batch: list[tuple[FinalResult, list[Recipient]]]) -> None:
        by_recipient: dict[Recipient, list[dict[str, Any]]] = defaultdict(list)
        for final, recipients in batch:
            for r in recipients:
                by_recipient[r].append(final.to_data())
        await self._announce(by_recipient)
        record = pack([final.to_data() for final, _ in batch])
        await self.agent.transport.publish("", topo.RESULTS_STREAM, record)

    async def _announce(self, by_recipient: dict[Recipient, list[dict[str, Any]]]) -> None:
        for (submitter, reply_to), finals in by_recipient.items():
            if not reply_to:
                continue
            env = Envelope("task.finals", finals, receiver=submitter)
            try:
                await self.agent.outbox.publish_to_queue(
                    env, reply_to, persistent=False, confirm=False, mandatory=False
                )
                self.messages += 1
            except Exception as exc:  # the submitter resubmits after reconnecting
                log.debug("could not notify %s: %s", submitter, exc)
