"""Final results: stored in the results stream in batches, announced, and read back.

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
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ...broker import topology as topo
from ...broker.base import BrokerOps
from ...protocol.coordinator import Recipient
from ...protocol.envelope import Envelope, pack, unpack
from ...protocol.errors import ProtocolError
from ...protocol.taskmsgs import FinalResult
from ..batching import Coalescer
from ..context import AgentContext

log = logging.getLogger(__name__)


def finals_from_record(body: bytes) -> list[FinalResult]:
    """Parse a results-stream record: one final (a map) or a batch (a list).

    Anything malformed is skipped.
    """
    try:
        data = unpack(body)
    except ProtocolError:
        return []
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        with contextlib.suppress(ProtocolError):
            out.append(FinalResult.from_data(item))
    return out


async def read_finals(
    broker: BrokerOps,
    topology: topo.TopologySettings,
    since_s: float,
    on_final: Callable[[FinalResult], None],
) -> int:
    """Read the finals stored in the last ``since_s`` seconds, oldest first.

    The one reader of the results stream: the coordinator reloads finals
    through it, ``robeing result`` looks a task up through it.

    Returns:
        How many stream records were read.
    """
    since = datetime.fromtimestamp(time.time() - since_s, tz=UTC)

    def on_body(body: bytes) -> None:
        for final in finals_from_record(body):
            on_final(final)

    return await broker.read_stream(topo.results_spec(topology), since, on_body)


Item = tuple[FinalResult, Sequence[Recipient]]


class FinalsOutbox:
    """Stores and announces final results in batches (see :mod:`..batching`)."""

    def __init__(self, agent: AgentContext, max_batch: int = 256) -> None:
        self.agent = agent
        self._batches: Coalescer[None, Item] = Coalescer(self._flush, max_batch)
        self.messages = 0

    @property
    def records(self) -> int:
        return self._batches.flushes

    async def deliver(self, items: Sequence[Item]) -> None:
        """Notify each final's recipients and store the finals; returns once stored.

        The notice goes out before the stream write: should the coordinator die
        in between, the submission is redelivered, the task runs again and the
        submitter's client drops the second notice (one result per task).

        Raises:
            BrokerError: the stream did not confirm the batch.
        """
        await self._batches.put(None, items)

    async def notify(self, items: Sequence[Item]) -> None:
        """Announce finals already stored (e.g. to a resubmitter)."""
        await self._announce(_by_recipient(items))

    async def _flush(self, _key: None, batch: list[Item]) -> None:
        await self._announce(_by_recipient(batch))
        record = pack([final.to_data() for final, _ in batch])
        await self.agent.broker.publish("", topo.RESULTS_STREAM, record)

    async def _announce(self, by_recipient: dict[Recipient, list[dict[str, Any]]]) -> None:
        for (submitter, reply_to), finals in by_recipient.items():
            if not reply_to:
                continue
            env = Envelope("task.finals", finals, receiver=submitter)
            try:
                await self.agent.send_to_queue(
                    env, reply_to, persistent=False, confirm=False, mandatory=False
                )
                self.messages += 1
            except Exception as exc:  # the submitter resubmits after reconnecting
                log.debug("could not notify %s: %s", submitter, exc)


def _by_recipient(items: Sequence[Item]) -> dict[Recipient, list[dict[str, Any]]]:
    out: dict[Recipient, list[dict[str, Any]]] = defaultdict(list)
    for final, recipients in items:
        for r in recipients:
            out[r].append(final.to_data())
    return out
