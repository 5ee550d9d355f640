"""Sending: point-to-point messages with ACKs, requests, replies and broadcasts.

Promises:
    * ``send`` returns once the broker confirmed the message into the
      receiver's durable queue; with ``requires_ack`` it returns only after
      the receiver's *signed* ACK arrived on our reply-to queue, or raises
      :class:`~robeing.protocol.errors.AckTimeout`.
    * A negative ACK (the receiver's handler failed or refused) raises the
      receiver's error, rebuilt from data (never unpickled).
    * ``broadcast`` reaches every live agent's broadcast queue; receivers
      drop their own broadcasts, so the sender never handles its own.
    * ``ask_coordinators`` reaches whichever coordinator is active, through
      its task queue, and only a certified coordinator's answer counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..broker import topology as topo
from ..broker.base import Transport
from ..protocol.codec import Codec, Opened
from ..protocol.envelope import BROADCAST, Envelope
from ..protocol.errors import (
    AckTimeout,
    CertificateError,
    UnknownPeer,
    Unroutable,
    error_from_data,
)
from ..protocol.identity import Certificate
from ..protocol.records import COORDINATORS

log = logging.getLogger(__name__)

ACK = "ack"
REPLY = "reply"


class Outbox:
    """Seals and publishes envelopes; matches ACKs and replies to waiters.

    Args:
        codec: seals our envelopes.
        transport: the broker connection.
        reply_to: our reply queue name.
        lookup_peer: finds a receiver's certificate bytes when unknown
            (e.g. in the keys directory); may return None.
        ack_timeout: default wait for an ACK or reply.
        clock: wall clock (injectable for tests).
    """

    def __init__(
        self,
        codec: Codec,
        transport: Transport,
        reply_to: str,
        lookup_peer: Callable[[str], bytes | None] | None = None,
        ack_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.codec = codec
        self.transport = transport
        self.reply_to = reply_to
        self.lookup_peer = lookup_peer
        self.ack_timeout = ack_timeout
        self.clock = clock
        # message id -> (the agent that must answer, its waiter)
        self._pending: dict[str, tuple[str, asyncio.Future[Opened]]] = {}
        self.sent = 0
        self.sent_types: Counter[str] = Counter()  # messages published, by type
        transport.add_return_listener(self._on_return)

    def _on_return(self, message_id: str, routing_key: str) -> None:
        entry = self._pending.get(message_id)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(
                Unroutable(f"no agent {routing_key!r} (its queue does not exist)")
            )

    # -- outgoing ------------------------------------------------------------

    def peer(self, agent_id: str) -> Certificate | None:
        """A valid certificate of ``agent_id``: learned from its messages, or the keys dir.

        Unknown, expired and revoked agents (and a keys-dir file holding
        another agent's certificate) give None.
        """
        trust, now = self.codec.trust, self.clock()
        cert = trust.peer(agent_id)
        try:
            if cert is None and self.lookup_peer is not None:
                raw = self.lookup_peer(agent_id)
                if raw is not None:
                    cert = trust.check_certificate(raw, now)
                    if cert.agent_id != agent_id:
                        return None
                    trust.learn(cert)
            if cert is not None:
                trust.require_valid(cert, now)
        except CertificateError:
            return None
        return cert

    def peer_or_raise(self, agent_id: str) -> Certificate:
        cert = self.peer(agent_id)
        if cert is None:
            raise UnknownPeer(
                f"no valid certificate known for {agent_id!r}: it has not announced itself, "
                "is not in the keys directory, or is expired or revoked"
            )
        return cert

    async def send(
        self,
        receiver: str,
        message_type: str,
        payload: Any = None,
        *,
        priority: int = 5,
        requires_ack: bool = False,
        timeout: float | None = None,
        encrypt: bool | None = None,
        persistent: bool = True,
    ) -> Opened | None:
        """Send a point-to-point message.

        Returns:
            The receiver's verified ACK envelope when ``requires_ack``, else None.

        Raises:
            UnknownPeer: no certificate for ``receiver``.
            Unroutable: the receiver has no queue.
            AckTimeout: no ACK within ``timeout``.
            RobeingError: the receiver's handler failed (rebuilt from data).
        """
        if encrypt is not False:
            self.peer_or_raise(receiver)
        env = Envelope(
            message_type,
            payload,
            receiver=receiver,
            priority=priority,
            requires_ack=requires_ack,
            reply_to=self.reply_to if requires_ack else None,
        )
        if not requires_ack:
            await self._publish_direct(env, encrypt, persistent=persistent)
            return None
        return await self._await_answer(env, encrypt, timeout)

    async def request(
        self,
        receiver: str,
        message_type: str,
        payload: Any = None,
        *,
        priority: int = 5,
        timeout: float | None = None,
        encrypt: bool | None = None,
    ) -> Any:
        """Send a message and wait for the handler's return value.

        Raises:
            The same as :meth:`send`.
        """
        if encrypt is not False:
            self.peer_or_raise(receiver)
        env = Envelope(
            message_type,
            payload,
            receiver=receiver,
            priority=priority,
            requires_ack=True,
            reply_to=self.reply_to,
        )
        opened = await self._await_answer(env, encrypt, timeout)
        return opened.envelope.payload.get("result") if opened else None

    async def ask_coordinators(
        self,
        message_type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        route_key: str = topo.CONTROL_ROUTING_KEY,
    ) -> Any:
        """Ask the active coordinator (``task.query``, ``task.revoke``); returns its answer.

        The question travels like a submission: on ``robeing.events`` with the
        key ``route_key`` (``task.control``; a submission's own key for a
        submission), durable, into the coordinator's task queue, encrypted to
        the coordinators' key; whichever coordinator is active answers.

        Raises:
            AckTimeout: no coordinator answered within ``timeout``.
            Unroutable: no coordinator ever declared its task queue.
            BrokerError: the broker did not confirm the question.
        """
        self.peer_or_raise(COORDINATORS)
        env = Envelope(
            message_type, payload, receiver=COORDINATORS, requires_ack=True, reply_to=self.reply_to
        )
        # Confirmed: a submission is accepted only once the broker confirmed it,
        # whether or not a coordinator answers in time.
        route = (topo.EVENTS_EXCHANGE, route_key)
        opened = await self._await_answer(env, None, timeout, route, confirm=True)
        return opened.envelope.payload.get("result")

    async def _await_answer(
        self,
        env: Envelope,
        encrypt: bool | None,
        timeout: float | None,
        route: tuple[str, str] | None = None,
        confirm: bool = False,
    ) -> Opened:
        fut: asyncio.Future[Opened] = asyncio.get_running_loop().create_future()
        self._pending[env.id] = (env.receiver, fut)
        try:
            # The receiver's ACK proves delivery, so the broker's confirm would
            # only add a round of work; an unroutable publish still comes back
            # (mandatory) and fails the waiter through _on_return.
            await self._publish_direct(env, encrypt, confirm=confirm, route=route)
            wait = timeout if timeout is not None else self.ack_timeout
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the answer's arrival.
                async with asyncio.timeout(wait):
                    opened = await fut
            except TimeoutError:
                who = "a coordinator" if env.receiver == COORDINATORS else repr(env.receiver)
                raise AckTimeout(f"no answer from {who} within {wait:g} s") from None
        finally:
            self._pending.pop(env.id, None)
        answer = opened.envelope.payload
        if isinstance(answer, dict) and not answer.get("ok", True):
            raise error_from_data(answer.get("error") or {})
        return opened

    async def _publish_direct(
        self,
        env: Envelope,
        encrypt: bool | None,
        confirm: bool = True,
        persistent: bool = True,
        route: tuple[str, str] | None = None,
    ) -> None:
        body = self.codec.seal(env, self.clock(), encrypt)
        exchange, key = route or (topo.DIRECT_EXCHANGE, env.receiver)
        try:
            await self.transport.publish(
                exchange,
                key,
                body,
                priority=env.priority,
                persistent=persistent,
                confirm=confirm,
                message_id=None if confirm else env.id,
            )
        except Unroutable:
            raise Unroutable(f"no agent {env.receiver!r} (its queue does not exist)") from None
        self.sent += 1
        self.sent_types[env.type] += 1

    async def publish_to_queue(
        self,
        env: Envelope,
        queue: str,
        *,
        persistent: bool = True,
        confirm: bool = True,
        mandatory: bool = True,
        expiration_s: float | None = None,
    ) -> None:
        """Seal ``env`` (encrypted to its receiver) and publish it straight to ``queue``.

        Reply queues are reached through ``robeing.replies``, any other queue
        through the default exchange (see :func:`~robeing.broker.topology.route_to_queue`).

        Raises:
            UnknownPeer: no certificate for the receiver.
            Unroutable: ``mandatory`` and the queue does not exist.
        """
        self.peer_or_raise(env.receiver)
        body = self.codec.seal(env, self.clock())
        exchange, key = topo.route_to_queue(queue)
        await self.transport.publish(
            exchange,
            key,
            body,
            priority=env.priority,
            persistent=persistent,
            confirm=confirm,
            mandatory=mandatory,
            expiration_s=expiration_s,
        )
        self.sent += 1
        self.sent_types[env.type] += 1

    async def broadcast(
        self, message_type: str, payload: Any = None, *, priority: int = 5, answers: bool = False
    ) -> str:
        """Publish a signed broadcast to every live agent.

        Args:
            answers: name our reply queue in it (a proposal collects votes there).

        Returns:
            The envelope id.
        """
        env = Envelope(
            message_type,
            payload,
            receiver=BROADCAST,
            priority=priority,
            reply_to=self.reply_to if answers else None,
        )
        body = self.codec.seal(env, self.clock())
        await self.transport.publish(
            topo.BROADCAST_EXCHANGE, "", body, priority=priority, mandatory=False
        )
        self.sent += 1
        self.sent_types[message_type] += 1
        return env.id

    async def answer(
        self, to: Opened, result: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Send the signed ACK (carrying ``result`` or ``error``) for ``to``.

        A requester that is gone (its reply queue vanished) is not an error.
        """
        env = to.envelope
        if not env.reply_to:
            return
        payload: dict[str, Any] = {"ok": error is None}
        if error is not None:
            payload["error"] = error
        elif result is not None:
            payload["result"] = result
        ack = Envelope(ACK, payload, receiver=env.sender, in_reply_to=env.id, priority=env.priority)
        # ACKs carry no secret of the sender's; results are encrypted.
        encrypt = None if result is not None else False
        if encrypt is None:
            try:
                self.peer_or_raise(env.sender)
            except UnknownPeer:
                encrypt = False
        body = self.codec.seal(ack, self.clock(), encrypt)
        try:
            # Unconfirmed: a lost ACK looks like a slow one to the requester,
            # who times out and may resend (handlers are at-least-once).
            exchange, key = topo.route_to_queue(env.reply_to)
            await self.transport.publish(
                exchange, key, body, persistent=False, mandatory=False, confirm=False
            )
        except Unroutable:
            log.debug("requester %s left before its ACK for %s", env.sender, env.id)

    # -- incoming answers ------------------------------------------------------

    def resolve(self, opened: Opened) -> bool:
        """Hand an incoming ACK or reply to its waiter.

        Returns:
            True if someone was waiting for it.
        """
        ref = opened.envelope.in_reply_to
        entry = self._pending.get(ref) if ref else None
        if entry is None:
            return False
        expected, fut = entry
        sender = opened.envelope.sender
        if expected == COORDINATORS and opened.certificate.role == "coordinator":
            expected = sender  # any coordinator may answer what was asked of them all
        if sender != expected:
            # Only the agent we wrote to may answer; ids are visible on the wire.
            log.warning("ignoring answer to %s from %s (expected %s)", ref, sender, expected)
            return False
        if fut.done():
            return False
        fut.set_result(opened)
        return True

    def fail_all(self, exc: BaseException) -> None:
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
