"""The one inbound path: every delivery is opened, checked, dispatched and settled here.

:class:`Inbound` serves every queue an agent consumes — inbox, broadcast
feed, work queue, reply queue, and whatever a role consumes through its
context — each described by a :class:`Route` (the handlers by message type
and how to treat what has none).

For each delivery, in order:

1. the codec's checks (DESIGN §2: size, decode, version, certificate,
   signature, time window, replay, role), then the guardians' quarantine
   (a quarantined sender's messages are refused, reason ``quarantined``;
   its heartbeats still count, so its health stays visible) and access
   policy (reason ``policy``). A failure is
   dead-lettered with its reason, counted and logged once (an *observer*
   route counts and drops it: the owner of that traffic dead-letters it). A
   broker redelivery of a message already accepted is acknowledged and
   dropped (``duplicates``);
2. on the reply queue: ACKs and replies go to their waiter, other answers to
   their handler; the broker never redelivers these, so nothing is settled;
3. the handler for the type, middleware around it, and the settlement its
   outcome calls for (see :mod:`robeing.agents.context`); a request's sender
   gets the result or the error as data. A broadcast of a type without a
   handler is counted and acknowledged: not every agent is its audience.

Invariant: a message is acknowledged only by the outcome of its handler (or
the receipt of a deferred one). A copy the broker redelivers while the
handler still runs or the receipt is still held (the connection dropped and
came back) is not a duplicate to drop: it replaces the lost delivery, and
the handler's outcome settles the copy. Only a copy of a message already
settled is acknowledged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...broker import topology as topo
from ...broker.base import Delivery
from ...protocol.codec import Codec, Opened
from ...protocol.envelope import BROADCAST, split_wire
from ...protocol.errors import Duplicate, ProtocolError, Reject, Retry, error_to_data
from ...protocol.evidence import ed25519_signer
from ...protocol.rejections import RejectionReport, stored_copy
from ..app import Middleware, call_handler
from ..context import AgentContext, DeadLetter, Handler, Message
from ..outbox import ACK, REPLY, Outbox
from ..stats import Stats

log = logging.getLogger(__name__)


class Settlement:
    """Settles one accepted message, through whichever delivery of it is live.

    Implements the delivery interface for handlers and receipts; a broker
    redelivery of the same message while it is unsettled becomes the live
    delivery (:meth:`adopt`).
    """

    __slots__ = ("_pending", "delivery", "message_id")

    def __init__(self, delivery: Delivery, message_id: str, pending: dict[str, Settlement]) -> None:
        self.delivery = delivery
        self.message_id = message_id
        self._pending = pending
        pending[message_id] = self

    def adopt(self, delivery: Delivery) -> None:
        self.delivery = delivery

    @property
    def body(self) -> bytes:
        return self.delivery.body

    @property
    def queue(self) -> str:
        return self.delivery.queue

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.delivery.headers

    @property
    def redelivered(self) -> bool:
        return self.delivery.redelivered

    @property
    def routing_key(self) -> str:
        return self.delivery.routing_key

    @property
    def reply_to(self) -> str | None:
        return self.delivery.reply_to

    def _done(self) -> Delivery:
        self._pending.pop(self.message_id, None)
        return self.delivery

    async def ack(self) -> None:
        await self._done().ack()

    async def requeue(self) -> None:
        await self._done().requeue()

    async def dead_letter(self, reason: str, detail: str, report: bytes | None = None) -> None:
        await self._done().dead_letter(reason, detail, report)


@dataclass(frozen=True, slots=True)
class Route:
    """How deliveries of one consumed queue are dispatched.

    Attributes:
        handlers: handler per message type.
        unknown_reason: dead-letter reason for a type without a handler.
        load: each delivery is a unit of load while its handler runs.
        answers: the reply queue (never redelivered, nothing to settle).
        observer: refused messages are counted and dropped, not dead-lettered.
        own: our own broadcasts are dispatched too (else acked unread).
    """

    handlers: Mapping[str, Handler]
    unknown_reason: str = "no_handler"
    load: bool = True
    answers: bool = False
    observer: bool = False
    own: bool = False


class Inbound:
    """Opens, checks, dispatches and settles deliveries for one agent.

    Args:
        context: the agent, as handlers see it.
        codec: opens envelopes (the checks of DESIGN §2).
        outbox: resolves ACKs and replies, answers requests.
        stats: counters announced in heartbeats.
        middleware: hooks around every handler (shared, may grow).
    """

    def __init__(
        self,
        context: AgentContext,
        codec: Codec,
        outbox: Outbox,
        stats: Stats,
        middleware: list[Middleware],
    ) -> None:
        self.context = context
        self.quarantine = context.quarantine
        self.policy = context.access_policy
        self.codec = codec
        self.outbox = outbox
        self.stats = stats
        self.middleware = middleware
        self.answer_handlers: dict[str, Handler] = {}
        self.unsettled: dict[str, Settlement] = {}  # message id -> its settlement
        self._sign = ed25519_signer(codec.identity.signing_key)
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def route_to(self, route: Route) -> Callable[[Delivery], Any]:
        """The delivery callback of a consumer serving ``route``."""

        async def on_delivery(delivery: Delivery) -> None:
            await self.deliver(delivery, route)

        return on_delivery

    async def deliver(self, delivery: Delivery, route: Route) -> None:
        """Open, check, dispatch and settle one delivery."""
        self.stats.received += 1
        try:
            opened = self.codec.open(delivery.body, self.context.clock(), delivery.redelivered)
        except Duplicate as exc:
            settlement = self.unsettled.get(exc.message_id)
            if settlement is not None:
                settlement.adopt(delivery)  # the handler's outcome settles this copy
                self.stats.adopted += 1
                return
            self.stats.duplicates += 1
            await delivery.ack()
            return
        except ProtocolError as exc:
            if route.observer:
                self.stats.rejected[exc.reason] += 1
                await delivery.ack()
            else:
                await self.reject(delivery, exc.reason, str(exc), _claimed_sender(delivery.body))
            return
        env = opened.envelope
        self.stats.count_type(env.type)
        self.stats.accepted(env.sender)
        if env.type != "heartbeat" and (
            self.quarantine.blocks(env.sender) or self.policy.current is not None
        ):
            try:
                self.quarantine.check(env.sender)
                self.policy.check(opened.certificate.role, env.type)
            except ProtocolError as exc:
                if route.answers or route.observer:  # nothing to settle, or not ours to refuse
                    self.stats.rejected[exc.reason] += 1
                    if route.observer:
                        await delivery.ack()
                    return
                await self._fail(delivery, opened, exc.reason, exc)
                return
        if route.answers:
            await self._answer(delivery, opened)
            return
        mine = env.sender == self.context.id and env.receiver == BROADCAST
        if mine and not (route.observer or route.own):
            await delivery.ack()  # our own broadcast (an observer sees everything)
            return
        fn = route.handlers.get(env.type)
        if fn is None:
            if route.observer or env.receiver == BROADCAST:
                # A broadcast reaches every agent; one without a handler for its
                # type is simply not its audience (counted, not dead-lettered).
                self.stats.ignored_broadcasts += not route.observer
                await delivery.ack()
                return
            detail = (
                f"agent {self.context.id!r} has no handler for {env.type!r} on {delivery.queue}"
            )
            await self._fail(delivery, opened, route.unknown_reason, Reject(detail))
            return
        settlement = Settlement(delivery, env.id, self.unsettled)
        message = Message(
            env, opened.certificate, self.context, delivery.redelivered, delivery.queue, settlement
        )
        if route.load:
            async with self.working():
                await self._run_handler(fn, message, settlement, opened)
        else:
            await self._run_handler(fn, message, settlement, opened)

    async def _answer(self, delivery: Delivery, opened: Opened) -> None:
        env = opened.envelope
        if env.type in (ACK, REPLY) and self.outbox.resolve(opened):
            return
        fn = self.answer_handlers.get(env.type)
        if fn is None:
            self.stats.late_answers += 1  # the waiter timed out or never existed
            return
        try:
            await call_handler(
                fn, Message(env, opened.certificate, self.context, queue=delivery.queue)
            )
        except Exception:
            log.exception("answer handler for %r failed", env.type)

    async def _run_handler(
        self, fn: Handler, message: Message, delivery: Settlement, opened: Opened
    ) -> None:
        self._middleware("before_handle", message)
        try:
            result = await call_handler(fn, message)
        except Retry as exc:
            self._middleware("after_handle", message, None, exc)
            # Forget the id so the redelivery is not taken for a duplicate.
            self.codec.seen.discard(message.id)
            await asyncio.sleep(exc.delay)
            await delivery.requeue()
            return
        except ProtocolError as exc:
            self._middleware("after_handle", message, None, exc)
            await self._fail(delivery, opened, exc.reason, exc)
            return
        except Reject as exc:
            self._middleware("after_handle", message, None, exc)
            await self._fail(delivery, opened, "rejected", exc)
            return
        except Exception as exc:
            self._middleware("after_handle", message, None, exc)
            log.exception("handler for %r failed on message %s", message.type, message.id)
            await self._fail(delivery, opened, "handler_error", exc)
            return
        self._middleware("after_handle", message, result, None)
        self.stats.handled += 1
        if opened.envelope.requires_ack:
            await self.outbox.answer(opened, result)
        if not message.deferred:
            await delivery.ack()

    async def _fail(
        self, delivery: Delivery, opened: Opened, reason: str, exc: BaseException
    ) -> None:
        self.stats.failed += 1
        # Refused, not accepted: a replay of the dead letter once the cause is
        # fixed (robeing dead-letters replay) must not be taken for a duplicate.
        self.codec.seen.discard(opened.envelope.id)
        if opened.envelope.requires_ack:
            try:
                await self.outbox.answer(opened, error=error_to_data(exc))
            except Exception as send_exc:
                log.warning("could not report failure to %s: %s", opened.envelope.sender, send_exc)
        await self.reject(delivery, reason, str(exc), opened.envelope.sender)

    async def reject(
        self, delivery: Delivery, reason: str, detail: str, sender: str | None = None
    ) -> None:
        """Dead-letter ``delivery`` with ``reason`` and our signed report; count, log once.

        ``sender``: who sent it, as far as we know (the report blames it only
        when its signature had verified: see :mod:`robeing.protocol.rejections`).
        """
        self.stats.reject(reason, detail, delivery.queue)
        for mw in self.middleware:
            try:
                mw.on_rejected(self.context, reason, detail)
            except Exception:
                log.exception("middleware %r failed in on_rejected", mw)
        await delivery.dead_letter(
            reason, detail, self.report(delivery.queue, delivery.body, reason, sender)
        )

    def open_held(self, data: bytes) -> Opened:
        """Open an envelope a relay held (no age bound); refuse a quarantined sender.

        Raises:
            ProtocolError: it fails a check.
        """
        opened = self.codec.open(data, self.context.clock(), held=True)
        self.quarantine.check(opened.envelope.sender)
        self.policy.check(opened.certificate.role, opened.envelope.type)
        return opened

    async def dispatch(self, handlers: Mapping[str, Handler], opened: Opened, queue: str) -> Any:
        """Run the handler for an envelope that came by another path (no delivery to settle).

        Raises:
            Reject: no handler for its type; or what the handler raised.
        """
        fn = handlers.get(opened.envelope.type)
        if fn is None:
            raise Reject(f"agent {self.context.id!r} has no handler for {opened.envelope.type!r}")
        message = Message(opened.envelope, opened.certificate, self.context, queue=queue)
        return await call_handler(fn, message)

    def report(self, queue: str, body: bytes, reason: str, sender: str | None) -> bytes:
        """Our signed report of refusing ``body`` (as the dead-letter queue will store it)."""
        return RejectionReport.of(
            self.context.id, queue, body, stored_copy(body), reason, sender, self.context.clock()
        ).sign(self._sign)

    def _middleware(self, hook: str, *args: Any) -> None:
        for mw in self.middleware:
            try:
                getattr(mw, hook)(self.context, *args)
            except Exception:
                log.exception("middleware %r failed in %s", mw, hook)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Count a unit of in-flight work (load in heartbeats; drained on stop)."""
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    def dead_letter_feed(self, handler: Callable[[DeadLetter], Any]) -> Callable[[Delivery], Any]:
        """The delivery callback of a dead-letter watch (bodies are not opened)."""

        async def on_dead_letter(delivery: Delivery) -> None:
            headers = delivery.headers
            report = headers.get(topo.REPORT_HEADER)
            letter = DeadLetter(
                delivery.body,
                str(headers.get(topo.REASON_HEADER) or _death_reason(headers)),
                str(headers.get(topo.SOURCE_HEADER, "?")),
                bytes(report) if isinstance(report, bytes | bytearray) else None,
            )
            try:
                result = handler(letter)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("dead-letter handler failed")
            await delivery.ack()

        return on_dead_letter


def _claimed_sender(body: bytes) -> str | None:
    """The sender an envelope claims, if it parses that far (a claim, not a proof)."""
    try:
        sender = split_wire(body).fields.get("sender")
    except ProtocolError:
        return None
    return sender if isinstance(sender, str) else None


def _death_reason(headers: Mapping[str, Any]) -> str:
    """The broker's own reason for a message it dead-lettered through a queue's DLX."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return str(deaths[0].get("reason", "dead"))
    return "dead"
