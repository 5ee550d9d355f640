"""What everything running inside an agent sees of its host: the agent context.

Roles, consensus, task execution and the built-in handlers are written against
:class:`AgentContext` — never against the runtime — the way Akka actors see an
``ActorContext`` and dramatiq actors only a broker. The runtime
(:mod:`robeing.agents.runtime`) implements it; :mod:`robeing.agents.assembly`
puts an agent together once, at the edge (the CLI, :class:`~robeing.agents.Client`).

The one inbound path: every delivery — inbox, broadcast feed, work queue,
reply queue, and any queue a role consumes — is opened and checked by the
runtime (DESIGN §2), dispatched to the handler registered for its type, and
acknowledged, requeued or dead-lettered by the runtime according to what the
handler did:

================================  ===========================================
the handler                       the delivery
================================  ===========================================
returns                           acknowledged (the value answers a request)
raises ``Retry(delay=)``          handed back to its queue after ``delay``
raises ``Reject(reason)``         dead-lettered, reason ``rejected``
raises a ``ProtocolError``        dead-lettered with the error's reason
raises anything else              dead-lettered, reason ``handler_error``
calls :meth:`Message.defer`       left to the handler, through the :class:`Receipt`
================================  ===========================================

Handlers of *answers* (messages arriving on the reply queue, which the broker
does not redeliver) cannot steer anything: what they raise is logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..broker.base import BrokerOps, Consumer, Delivery
from ..broker.topology import QueueSpec
from ..protocol.envelope import Envelope
from ..protocol.identity import Certificate, Identity, TrustStore
from ..protocol.policy import PolicyBook
from ..protocol.quarantine import QuarantineBook
from ..protocol.roles import Role

if TYPE_CHECKING:
    from ..protocol.codec import Opened
    from ..protocol.records import GroupKeys
    from .app import TaskDef
    from .settings import Settings


class Receipt:
    """Settles a deferred delivery later (see :meth:`Message.defer`).

    Each method settles at most once; later calls do nothing.
    """

    __slots__ = ("_delivery", "_settled")

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        """Done: the broker forgets the message."""
        if not self._settled:
            self._settled = True
            await self._delivery.ack()

    async def requeue(self) -> None:
        """Hand the message back to its queue."""
        if not self._settled:
            self._settled = True
            await self._delivery.requeue()


class Message:
    """What a handler receives: the verified envelope plus its context.

    Attributes:
        envelope: the verified, decrypted envelope.
        certificate: the sender's certificate (role, key, expiry).
        agent: the receiving agent's context, to send further messages.
        redelivered: the broker delivered this message before.
        queue: the queue it arrived on.
    """

    __slots__ = (
        "_delivery",
        "_receipt",
        "agent",
        "certificate",
        "envelope",
        "queue",
        "redelivered",
    )

    def __init__(
        self,
        envelope: Envelope,
        certificate: Certificate,
        agent: AgentContext,
        redelivered: bool = False,
        queue: str = "",
        delivery: Delivery | None = None,
    ) -> None:
        self.envelope = envelope
        self.certificate = certificate
        self.agent = agent
        self.redelivered = redelivered
        self.queue = queue
        self._delivery = delivery
        self._receipt: Receipt | None = None

    @property
    def payload(self) -> Any:
        return self.envelope.payload

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def sender_role(self) -> str:
        return self.certificate.role

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def raw(self) -> bytes | None:
        """The bytes received, as signed (None for an answer or a relayed message)."""
        return self._delivery.body if self._delivery is not None else None

    @property
    def deferred(self) -> bool:
        """Whether the handler took over settling the delivery."""
        return self._receipt is not None

    def defer(self) -> Receipt:
        """Take over settling this delivery: the runtime will not ack it.

        For work whose outcome is known only later (a submission is
        acknowledged once its results are stored). The handler must settle
        the receipt eventually; until then the broker keeps the message, and
        redelivers it if this process dies.

        Raises:
            RuntimeError: the delivery cannot be deferred (an answer, which the
                broker never redelivers).
        """
        if self._delivery is None:
            raise RuntimeError(f"a {self.type!r} answer cannot be deferred")
        if self._receipt is None:
            self._receipt = Receipt(self._delivery)
        return self._receipt

    def __repr__(self) -> str:
        return f"Message({self.type!r} from {self.sender!r}, id {self.id})"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered message as the broker holds it (not an opened envelope).

    Attributes:
        body: the bytes as they were refused.
        reason: the ``x-robeing-reason`` header, or the broker's own reason
            (``rejected``, ``expired``, ``maxlen``…) for queue dead-lettering.
        source: the queue it was refused from (``?`` when unknown).
        report: the refusing agent's signed report, unverified (see
            :mod:`robeing.protocol.rejections`); None when there is none.
    """

    body: bytes
    reason: str
    source: str
    report: bytes | None = None


Handler = Callable[[Message], Any]
"""A message handler, sync or async; its return value answers a request."""
Hook = Callable[["AgentContext"], Awaitable[None] | None]
"""A start or stop hook (see :class:`~robeing.agents.app.App`)."""


class AgentContext(Protocol):
    """The narrow surface of an agent that roles, consensus, tasks and apps use.

    Attributes:
        id: the agent id. role: its role row. settings: its typed settings.
        identity: its keys and certificate (to sign votes and PBFT messages).
        trust: the trust store (authority, revocations, learned certificates).
        reply_queue: where answers to our requests arrive.
        incarnation: this process's instance id (in the connection name).
        broker: broker operations beyond consuming (locks, streams, purges).
        task_defs: the task types this agent knows, by type.
        quarantine: the quarantine orders it enforces.
        access_policy: the access policy it enforces.
        cluster_id: the cluster it is in now: ``settings.cluster_id`` at
            start, then wherever a coordinator's membership order moved it
            (announced in every heartbeat).
    """

    cluster_id: str

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> Role: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def trust(self) -> TrustStore: ...

    @property
    def reply_queue(self) -> str: ...

    @property
    def incarnation(self) -> str: ...

    @property
    def broker(self) -> BrokerOps: ...

    @property
    def task_defs(self) -> Mapping[str, TaskDef]: ...

    @property
    def quarantine(self) -> QuarantineBook:
        """The guardians' quarantine orders this agent enforces on every inbound message."""
        ...

    @property
    def access_policy(self) -> PolicyBook:
        """The guardians' newest access policy this agent enforces on every inbound message."""
        ...

    @property
    def coordinator_keys(self) -> GroupKeys | None:
        """The coordinators' group keys (coordinators only; see ``protocol/records``)."""
        ...

    def open_stored(self, data: bytes) -> Opened:
        """Verify a record stored on the broker (signature, certificate, role; no window).

        Raises:
            ProtocolError: it is not an authentic record.
        """
        ...

    @property
    def state(self) -> str:
        """starting, alive, stopping or stopped (announced in heartbeats)."""
        ...

    @property
    def load(self) -> int:
        """Units of work in flight (announced in heartbeats)."""
        ...

    def clock(self) -> float: ...

    # -- sending ---------------------------------------------------------------

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
        """Send a point-to-point message (see :meth:`robeing.agents.outbox.Outbox.send`)."""
        ...

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
        """Send and wait for the receiver handler's return value."""
        ...

    async def broadcast(
        self, message_type: str, payload: Any = None, *, priority: int = 5, answers: bool = False
    ) -> str:
        """Signed broadcast to every live agent; ``answers`` names our reply queue."""
        ...

    async def send_to_queue(
        self,
        envelope: Envelope,
        queue: str,
        *,
        persistent: bool = True,
        confirm: bool = True,
        mandatory: bool = True,
        expiration_s: float | None = None,
    ) -> None:
        """Seal ``envelope`` (encrypted to its receiver) and publish it straight to ``queue``."""
        ...

    def seal(self, envelope: Envelope, encrypt: bool | None = None) -> bytes:
        """The signed (and, to a known receiver, encrypted) wire bytes of ``envelope``."""
        ...

    async def publish_event(
        self, routing_key: str, envelope: Envelope, *, persistent: bool = True
    ) -> None:
        """Publish a signed envelope on the topic exchange (``task.…``, ``heartbeat.…``).

        Returns once the broker confirmed it into a queue.

        Raises:
            Unroutable: no queue is bound for ``routing_key``.
            BrokerError: the broker did not confirm it.
        """
        ...

    async def multicast(
        self, routing_key: str, envelope: Envelope, *, persistent: bool = False
    ) -> None:
        """Publish a signed envelope to every queue bound to ``routing_key`` (direct exchange)."""
        ...

    def peer(self, agent_id: str) -> Certificate | None:
        """A valid certificate of ``agent_id`` (learned or from the keys dir), else None."""
        ...

    def check_signature(self, signer: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signer``'s certified key signed ``data`` (unknown or revoked: False)."""
        ...

    def open_held(self, data: bytes) -> Opened:
        """Open an envelope a relay held for us: every check but the age bound.

        Raises:
            ProtocolError: it fails a check (or its sender is quarantined).
        """
        ...

    async def dispatch(self, opened: Opened, queue: str = "relay") -> Any:
        """Run our handler for an envelope that came by another path (a relay).

        Returns:
            What the handler returned.

        Raises:
            Reject: no handler for its type; or whatever the handler raised.
        """
        ...

    def sign_rejection(self, queue: str, body: bytes, reason: str) -> bytes:
        """Our signed report of refusing ``body`` from ``queue`` (see ``protocol/rejections``)."""
        ...

    # -- receiving: the one inbound path --------------------------------------------

    def handle(self, message_type: str, handler: Handler, *, replace: bool = False) -> None:
        """Handle ``message_type`` arriving in our inbox or broadcast feed.

        Raises:
            ConfigError: a handler for the type exists and ``replace`` is false.
        """
        ...

    def handle_answer(self, message_type: str, handler: Handler) -> None:
        """Handle ``message_type`` arriving on our reply queue (not ACKs or replies)."""
        ...

    def add_task(self, tdef: TaskDef, *, default: bool = False) -> None:
        """Know the task type ``tdef`` (announced in heartbeats); an app's own type
        replaces a ``default`` of the same name.

        Raises:
            ConfigError: the type is already known and neither is a default.
        """
        ...

    async def consume(
        self,
        spec: QueueSpec,
        handlers: Mapping[str, Handler],
        *,
        prefetch: int = 32,
        bindings: Sequence[tuple[str, str]] = (),
        unknown_reason: str = "no_handler",
        work: bool = True,
        load: bool = True,
        observer: bool = False,
        exclusive: bool = False,
        ack_delay: float | None = 0.0,
        own: bool = False,
    ) -> Consumer:
        """Consume ``spec`` through the inbound path, dispatching by message type.

        A type without a handler is dead-lettered with ``unknown_reason``. An
        ``observer`` (a status listener bound to traffic it does not own)
        counts and drops what fails the checks instead: the owner of that
        traffic dead-letters it, once.
        ``work`` consumers are cancelled first on shutdown (no new work taken
        while in-flight handlers drain). With ``load``, each delivery counts
        as one unit of load while its handler runs; a handler that counts its
        own units (:meth:`working`) passes ``load=False``. An ``exclusive``
        consumer is the queue's only one (the broker refuses any other).
        Acks are batched: sent at the end of the loop turn, or ``ack_delay``
        seconds after the first of a batch (``None``: each at once); a
        delivery acknowledged but not yet sent when the connection drops is
        redelivered (at-least-once). With ``own``, our own broadcasts are
        delivered too (a cluster leader hears its heartbeat among its members').
        """
        ...

    async def cancel(self, consumer: Consumer) -> None:
        """Stop a consumer started with :meth:`consume` and free its channel."""
        ...

    async def watch_dead_letters(self, handler: Callable[[DeadLetter], Any]) -> None:
        """Call ``handler`` with every dead letter (a bounded, exclusive feed).

        Dead letters failed the inbound checks, so they are not opened; the
        runtime acknowledges each after the handler ran (errors are logged).
        """
        ...

    async def watch_connections(self, on_closed: Callable[[str, str, str | None], None]) -> bool:
        """Call ``on_closed(agent_id, incarnation, user)`` when an agent's connection closes.

        ``user`` is the broker user that opened it, by the broker's own record
        (None when the opening was not seen); the rest is the connection
        name's claim.

        Returns:
            False when the broker's connection events are unavailable.
        """
        ...

    # -- lifecycle ---------------------------------------------------------------------

    def on_start(self, hook: Hook) -> None: ...

    def on_stop(self, hook: Hook) -> None: ...

    def on_reconnect(self, listener: Callable[[], None]) -> None: ...

    def add_heartbeat_extra(self, extra: Callable[[], Mapping[str, Any]]) -> None:
        """Add a section to every heartbeat (e.g. ``{"guardian": {...}}``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What we announce about ourselves in ``hello`` broadcasts."""
        ...

    def working(self) -> AbstractAsyncContextManager[None]:
        """Count a unit of in-flight work (load in heartbeats; drained on stop)."""
        ...

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the agent to stop; ``lost_lead`` makes a supervised coordinator start afresh."""
        ...
