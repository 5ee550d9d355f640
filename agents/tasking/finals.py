"""Final results: stored in the results stream in batches, announced, and read back.

Records are signed by the coordinator that wrote them and each submitter's
finals are encrypted to that submitter and to the coordinators
(:mod:`robeing.protocol.records`): reading the stream reads nobody else's
results, and a record nobody signed is never served.

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

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...broker import topology as topo
from ...protocol.coordinator import Recipient
from ...protocol.envelope import Envelope
from ...protocol.errors import ConfigError, DecodeError, ProtocolError, TooLarge
from ...protocol.records import (
    COORDINATORS,
    RECORD_TYPE,
    open_for_group,
    open_for_submitter,
    seal_entries,
)
from ...protocol.taskmsgs import FinalResult
from ..batching import Coalescer
from ..context import AgentContext

log = logging.getLogger(__name__)


@dataclass
class RecordsRead:
    """What reading the results stream found.

    Attributes:
        records: stream records read.
        invalid: records that are not authentic (unsigned, forged, written by
            a non-coordinator, malformed): ignored, never served.
    """

    records: int = 0
    invalid: int = 0


async def read_finals(
    agent: AgentContext,
    since_s: float,
    on_final: Callable[[FinalResult], None],
) -> RecordsRead:
    """Read the finals stored in the last ``since_s`` seconds that ``agent`` may read.

    The one reader of the results stream: a coordinator reads every final
    (with the coordinators' keys) to answer resubmissions after a failover;
    anyone else reads only the finals of tasks it submitted (``robeing
    result``). Each record's signature is checked first (a coordinator wrote
    it); anything that does not check out is counted and skipped.

    Returns:
        How many records were read, and how many were not authentic.
    """
    since = datetime.fromtimestamp(time.time() - since_s, tz=UTC)
    found = RecordsRead()
    group = agent.coordinator_keys
    group_cert = None if group is not None else agent.peer(COORDINATORS)

    def on_body(body: bytes) -> None:
        found.records += 1
        try:
            opened = agent.open_stored(body)
            if opened.envelope.type != RECORD_TYPE:
                raise DecodeError(f"a {opened.envelope.type!r} is not a results record")
        except ProtocolError as exc:
            found.invalid += 1
            log.debug("results record ignored: %s", exc)
            return
        payload = opened.envelope.payload
        if group is not None:
            items = open_for_group(payload, group)
        elif group_cert is not None:
            items = open_for_submitter(
                payload, agent.id, agent.identity.box_key, group_cert.verify_key
            )
        else:
            items = []
        for item in items:
            try:
                on_final(FinalResult.from_data(item))
            except ProtocolError:
                found.invalid += 1

    await agent.broker.read_stream(topo.results_spec(agent.settings.topology), since, on_body)
    if found.invalid:
        log.warning("ignored %d results record(s) that are not authentic", found.invalid)
    return found


async def fetch_final(agent: AgentContext, task_id: str, since_s: float) -> FinalResult | None:
    """The newest final of ``task_id`` in the results stream that ``agent`` may read."""
    found: list[FinalResult] = []

    def on_final(final: FinalResult) -> None:
        if final.task_id == task_id:
            found.append(final)

    await read_finals(agent, since_s, on_final)
    return found[-1] if found else None


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
        await self._store([final for final, _ in batch])

    async def _store(self, finals: list[FinalResult]) -> None:
        """One signed record, each submitter's finals encrypted to it and to the coordinators."""
        group = self.agent.coordinator_keys
        if group is None:
            raise ConfigError("storing results needs the coordinators' group key")
        by_submitter: dict[str, list[Any]] = defaultdict(list)
        for final in finals:
            by_submitter[final.submitter].append(final.to_data())
        keys = {s: cert.verify_key if (cert := self.agent.peer(s)) else None for s in by_submitter}
        record = Envelope(RECORD_TYPE, seal_entries(by_submitter, keys, group))
        try:
            body = self.agent.seal(record, encrypt=False)
        except TooLarge:
            if len(finals) == 1:
                raise
            half = len(finals) // 2  # each final fits (the coordinator checks results)
            await self._store(finals[:half])
            await self._store(finals[half:])
            return
        await self.agent.broker.publish("", topo.RESULTS_STREAM, body)

    async def _announce(self, by_recipient: dict[Recipient, list[dict[str, Any]]]) -> None:
        for (submitter, reply_to), finals in by_recipient.items():
            if reply_to:
                await self._notify(submitter, reply_to, finals)

    async def _notify(self, submitter: str, reply_to: str, finals: list[dict[str, Any]]) -> None:
        env = Envelope("task.finals", finals, receiver=submitter)
        try:
            await self.agent.send_to_queue(
                env, reply_to, persistent=False, confirm=False, mandatory=False
            )
            self.messages += 1
        except TooLarge:
            if len(finals) == 1:  # cannot happen: the coordinator bounds a final's result
                log.error("a final for %s does not fit in a message", submitter)
                return
            half = len(finals) // 2  # each fits, together they may not
            await self._notify(submitter, reply_to, finals[:half])
            await self._notify(submitter, reply_to, finals[half:])
        except Exception as exc:  # the submitter resubmits after reconnecting
            log.debug("could not notify %s: %s", submitter, exc)


def _by_recipient(items: Sequence[Item]) -> dict[Recipient, list[dict[str, Any]]]:
    out: dict[Recipient, list[dict[str, Any]]] = defaultdict(list)
    for final, recipients in items:
        for r in recipients:
            out[r].append(final.to_data())
    return out
