"""The agent process: identity + connection + the one inbound path + heartbeats + shutdown.

It is kept in one piece: :class:`Agent` is the whole agent context, one class that
reads as the context's surface; its parts (inbound, outbox, heartbeats) are
already modules of their own.

:class:`Agent` implements :class:`~robeing.agents.context.AgentContext` and
imports no role: what an agent does is installed on it through that context
(:mod:`robeing.agents.assembly`).

Life of an agent (each step's failure stops the start with a clear error):

1. connect (robust, named connection) and declare the topology;
2. declare its durable inbox ``robeing.agent.<id>`` bound to ``robeing.direct``;
3. run the ``on_start`` hooks (roles start their own consumers here);
4. consume its reply queue, inbox and broadcast feed;
5. heartbeat every ``heartbeat_interval`` on ``heartbeat.<role>.<id>`` with
   load and capacity, and announce itself with a signed ``hello`` broadcast.

Every delivery of every queue the agent consumes goes through the one
inbound path (:mod:`.inbound`).

Shutdown (SIGTERM/SIGINT, or :meth:`Agent.stop`): stop consuming work, let
in-flight handlers finish within ``grace_period``, send a last ``leaving``
heartbeat, run ``on_stop`` hooks and close; anything still unacknowledged is
returned to its queue by the broker, so no work is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from ...broker import topology as topo
from ...broker.amqp import AmqpTransport
from ...broker.base import BrokerOps, Consumer, Transport
from ...broker.events import ClosedConnection, ConnectionWatcher
from ...broker.topology import QueueSpec
from ...protocol.codec import Codec, Opened
from ...protocol.envelope import Envelope
from ...protocol.errors import ConfigError
from ...protocol.identity import Certificate, Identity, TrustStore
from ...protocol.policy import PolicyBook
from ...protocol.quarantine import QuarantineBook
from ...protocol.records import GroupKeys
from ...protocol.replay import ReplayWindow
from ...protocol.roles import Role, get_role
from ..app import App, Middleware, TaskDef, call_hook
from ..context import DeadLetter, Handler, Hook
from ..loop import loop_name
from ..outbox import Outbox
from ..settings import Settings
from ..stats import Stats
from .heartbeats import Heartbeats
from .inbound import Inbound, Route
from .owned import own_queue

log = logging.getLogger(__name__)

DEAD_LETTER_WATCH_MAX = 10_000


class Agent:
    """One robeing agent process; implements the agent context.

    Args:
        settings: the typed settings.
        identity: our keys and certificate.
        trust: the trust store (authority key, revocations, peers).
        transport: the broker connection (default: aio-pika).
        lookup_peer: finds peers' certificates when not yet announced.
        cluster_key: optional broadcast encryption key.
        clock: wall clock, injectable for tests.
        group: the coordinators' group identity (coordinators only).
    """

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        trust: TrustStore,
        transport: Transport | None = None,
        lookup_peer: Callable[[str], bytes | None] | None = None,
        cluster_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        group: Identity | None = None,
    ) -> None:
        self._settings = settings
        self.cluster_id = settings.cluster_id  # membership orders move it
        self._identity = identity
        self._role = get_role(settings.role)
        self._clock = clock
        self.codec = Codec(
            identity,
            trust,
            ReplayWindow(settings.max_age, settings.max_skew),
            cluster_key=cluster_key,
            group=group,
        )
        self._group_keys = GroupKeys.of(group) if group is not None else None
        self._instance = os.urandom(4).hex()
        # The instance lets the coordinator tie a broker "connection closed"
        # event to one incarnation of the agent (see broker/events.py).
        self.transport_name = f"{settings.connection_name} inst={self._instance}"
        self.transport: Transport = transport or AmqpTransport(
            settings.amqp_url,
            self.transport_name,
            settings.topology,
            publish_timeout=settings.publish_timeout,
        )
        self._reply_queue = topo.reply_queue(self.id, self._instance)
        self.outbox = Outbox(
            self.codec, self.transport, self._reply_queue, lookup_peer, settings.ack_timeout, clock
        )
        self.stats = Stats()
        self._quarantine = QuarantineBook(max_skew=settings.max_skew)
        self._policy = PolicyBook()
        self._handlers: dict[str, Handler] = {}
        self._task_defs: dict[str, TaskDef] = {}
        self._default_tasks: set[str] = set()  # built-in types an app's own may replace
        self._middleware: list[Middleware] = []
        self._inbound = Inbound(self, self.codec, self.outbox, self.stats, self._middleware)
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self.heartbeats = Heartbeats(self)
        self._watchers: list[ConnectionWatcher] = []
        self.started_at = 0.0
        self._failovers = 0
        self._state = "starting"
        self._work_consumers: list[Consumer] = []
        self._background: list[asyncio.Task[Any]] = []
        self._stop_requested = asyncio.Event()
        # Why run() returned: "stopped", or "lost_lead" for a coordinator whose
        # connection (and so its lock) died; serve() then starts afresh.
        self.exit_reason = "stopped"

    # -- the context's read-only surface ------------------------------------------

    @property
    def id(self) -> str:
        return self._settings.agent_id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def trust(self) -> TrustStore:
        return self.codec.trust

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    @property
    def incarnation(self) -> str:
        return self._instance

    @property
    def broker(self) -> BrokerOps:
        return self.transport

    @property
    def task_defs(self) -> Mapping[str, TaskDef]:
        return self._task_defs

    @property
    def coordinator_keys(self) -> GroupKeys | None:
        return self._group_keys

    @property
    def quarantine(self) -> QuarantineBook:
        return self._quarantine

    @property
    def access_policy(self) -> PolicyBook:
        return self._policy

    def open_stored(self, data: bytes) -> Opened:
        return self.codec.open_stored(data, self._clock())

    @property
    def state(self) -> str:
        return self._state

    @property
    def load(self) -> int:
        return self._inbound.in_flight

    def working(self) -> AbstractAsyncContextManager[None]:
        return self._inbound.working()

    def clock(self) -> float:
        return self._clock()

    # -- registration (what assembly and roles install) ------------------------------

    def include(self, app: App) -> None:
        """Take an app's handlers, tasks, middleware and hooks.

        Raises:
            ConfigError: a handler or task type is registered twice.
        """
        for message_type, fn in app.handlers.items():
            self.handle(message_type, fn)
        for tdef in app.tasks.values():
            self.add_task(tdef)
        self._middleware.extend(app.middleware)
        self._start_hooks.extend(app.start_hooks)
        self._stop_hooks.extend(app.stop_hooks)

    def add_task(self, tdef: TaskDef, *, default: bool = False) -> None:
        """Know the task type ``tdef``; a ``default`` never overrides an app's own.

        Raises:
            ConfigError: the type is already known and neither is a default.
        """
        if tdef.type in self._task_defs and (default or tdef.type not in self._default_tasks):
            if default:
                return
            raise ConfigError(f"a task {tdef.type!r} is already registered")
        (self._default_tasks.add if default else self._default_tasks.discard)(tdef.type)
        self._task_defs[tdef.type] = tdef

    def handle(self, message_type: str, handler: Handler, *, replace: bool = False) -> None:
        if message_type in self._handlers and not replace:
            raise ConfigError(f"a handler for {message_type!r} is already registered")
        self._handlers[message_type] = handler

    def handle_answer(self, message_type: str, handler: Handler) -> None:
        self._inbound.answer_handlers[message_type] = handler

    def on_start(self, hook: Hook) -> None:
        self._start_hooks.append(hook)

    def on_stop(self, hook: Hook) -> None:
        self._stop_hooks.append(hook)

    def _after_reconnect(self) -> None:
        """After a failover to another node, announce a new incarnation.

        Our inbox and work queue were on the lost node and went with it
        (``TopologySettings.clustered``): the assignments in
        them are gone. A heartbeat with a newer ``started_at`` makes the
        coordinator declare the previous incarnation lost and reassign its
        tasks, as after a restart; a result of ours for an old attempt is
        then discarded by the attempt fencing, so each task still has one.
        """
        failovers = self.transport.failovers
        if failovers == self._failovers:
            return
        self._failovers = failovers
        self.started_at = self._clock()
        log.warning("moved to another broker node: announcing a new incarnation")

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        self.transport.add_reconnect_listener(listener)

    def add_heartbeat_extra(self, extra: Callable[[], Mapping[str, Any]]) -> None:
        self.heartbeats.extras.append(extra)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare, run start hooks, consume, start heartbeats.

        Raises:
            BrokerError: the broker is unreachable.
            Exception: whatever an ``on_start`` hook raised.
        """
        await self.transport.connect()
        await self.transport.declare_topology(owner=self._role.name == "coordinator")
        takes_work = self._role.takes_work
        inbox = topo.inbox_spec(self.id, self._settings.topology)
        if takes_work:
            inbox = await own_queue(self.transport, inbox)
            await self.transport.bind(inbox.name, topo.DIRECT_EXCHANGE, self.id)
        for hook in self._start_hooks:
            await call_hook(hook, self)
        # Replies are worthless after a crash (their waiter is gone): no acks.
        await self.transport.consume(
            topo.reply_spec(self.id, self._instance),
            self._inbound.route_to(Route({}, load=False, answers=True)),
            prefetch=1000,
            no_ack=True,
            bindings=[(topo.REPLY_EXCHANGE, self._reply_queue)],
        )
        if takes_work:
            concurrency = self._settings.concurrency
            on_work = self._inbound.route_to(Route(self._handlers))
            # The binding again, so that it is restored with the queue: on a
            # cluster the inbox is redeclared afresh on the node we fail over to.
            self._work_consumers.append(
                await self.transport.consume(
                    inbox, on_work, concurrency, bindings=[(topo.DIRECT_EXCHANGE, self.id)]
                )
            )
            self._work_consumers.append(
                await self.transport.consume(
                    topo.broadcast_spec(self.id),
                    on_work,
                    concurrency,
                    bindings=[(topo.BROADCAST_EXCHANGE, "")],
                )
            )
        self.started_at = self._clock()
        self._failovers = self.transport.failovers
        self.transport.add_reconnect_listener(self._after_reconnect)
        self._state = "alive"
        if takes_work:
            self._background.append(asyncio.create_task(self.heartbeats.loop()))
            await self.outbox.broadcast("hello", self.describe())
        log.info("agent %s (%s) started on %s", self.id, self._settings.role, loop_name())

    async def stop(self) -> None:
        """Stop taking work, drain in-flight work within the grace period, close."""
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        for consumer in self._work_consumers:
            await self.transport.cancel(consumer)
        self._work_consumers.clear()
        try:
            await asyncio.wait_for(self._inbound.idle.wait(), self._settings.grace_period)
        except TimeoutError:
            log.warning(
                "%d handlers still running after %.1fs grace; their messages return to the queue",
                self._inbound.in_flight,
                self._settings.grace_period,
            )
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._role.takes_work:
            try:
                await self.heartbeats.send(state="leaving")
            except Exception as exc:
                log.debug("last heartbeat not sent: %s", exc)
        for hook in self._stop_hooks:
            try:
                await call_hook(hook, self)
            except Exception:
                log.exception("on_stop hook failed")
        for watcher in self._watchers:
            await watcher.stop()
        self.outbox.fail_all(ConnectionError("agent stopped"))
        if self._settings.generated_id and self._role.takes_work:
            # No later process will use these names; keep them only if they hold work.
            for queue in (topo.agent_queue(self.id), topo.work_queue(self.id)):
                with contextlib.suppress(Exception):
                    await self.transport.delete_if_empty(queue)
        await self.transport.close()
        self._state = "stopped"
        log.info("agent %s stopped", self.id)

    def request_stop(self, reason: str = "stopped") -> None:
        self.exit_reason = reason
        self._stop_requested.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop_requested.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            await self.start()
        except BaseException:
            # A failed start (an on_start hook, a refused declaration) must not
            # leave the connection open behind the error.
            with contextlib.suppress(Exception):
                await self.transport.close()
            raise
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    # -- sending ---------------------------------------------------------------------

    async def send(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Opened | None:
        """Send a point-to-point message (see :meth:`Outbox.send`)."""
        return await self.outbox.send(receiver, message_type, payload, **kw)

    async def request(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Any:
        """Send and wait for the receiver handler's return value."""
        return await self.outbox.request(receiver, message_type, payload, **kw)

    async def broadcast(
        self, message_type: str, payload: Any = None, *, priority: int = 5, answers: bool = False
    ) -> str:
        """Signed broadcast to every live agent except ourselves."""
        return await self.outbox.broadcast(
            message_type, payload, priority=priority, answers=answers
        )

    async def send_to_queue(self, envelope: Envelope, queue: str, **kw: Any) -> None:
        await self.outbox.publish_to_queue(envelope, queue, **kw)

    def seal(self, envelope: Envelope, encrypt: bool | None = None) -> bytes:
        if encrypt is not False and not envelope.is_broadcast:
            self.outbox.peer_or_raise(envelope.receiver)  # learn its key (keys dir) or raise
        return self.codec.seal(envelope, self._clock(), encrypt)

    async def publish_event(
        self, routing_key: str, envelope: Envelope, *, persistent: bool = True
    ) -> None:
        body = self.seal(envelope)
        await self.transport.publish(
            topo.EVENTS_EXCHANGE,
            routing_key,
            body,
            priority=envelope.priority,
            persistent=persistent,
        )

    async def multicast(
        self, routing_key: str, envelope: Envelope, *, persistent: bool = False
    ) -> None:
        body = self.codec.seal(envelope, self._clock())
        await self.transport.publish(
            topo.DIRECT_EXCHANGE,
            routing_key,
            body,
            priority=envelope.priority,
            persistent=persistent,
        )

    def peer(self, agent_id: str) -> Certificate | None:
        return self.outbox.peer(agent_id)

    def check_signature(self, signer: str, data: bytes, signature: bytes) -> bool:
        cert = self.peer(signer)
        if cert is None or len(signature) != 64:
            return False
        try:
            self.codec.trust.verify(cert, data, signature)
        except Exception:
            return False
        return True

    def open_held(self, data: bytes) -> Opened:
        return self._inbound.open_held(data)

    async def dispatch(self, opened: Opened, queue: str = "relay") -> Any:
        return await self._inbound.dispatch(self._handlers, opened, queue)

    def sign_rejection(self, queue: str, body: bytes, reason: str) -> bytes:
        return self._inbound.report(queue, body, reason, None)

    # -- receiving: the one inbound path -------------------------------------------------

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
        route = Route(dict(handlers), unknown_reason, load, observer=observer, own=own)
        if spec.arguments and "x-expires" in spec.arguments:
            spec = await own_queue(self.transport, spec)
        consumer = await self.transport.consume(
            spec,
            self._inbound.route_to(route),
            prefetch,
            bindings=bindings,
            exclusive=exclusive,
            ack_delay=ack_delay,
        )
        if work:
            self._work_consumers.append(consumer)
        return consumer

    async def cancel(self, consumer: Consumer) -> None:
        if consumer in self._work_consumers:
            self._work_consumers.remove(consumer)
        await self.transport.cancel(consumer, close_channel=True)

    async def watch_dead_letters(self, handler: Callable[[DeadLetter], Any]) -> None:
        spec = QueueSpec(
            f"robeing.watch.{self.id}.{self._instance}.dead-letters",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": DEAD_LETTER_WATCH_MAX},
        )

        await self.transport.consume(
            spec,
            self._inbound.dead_letter_feed(handler),
            prefetch=100,
            bindings=[(topo.DEAD_EXCHANGE, "")],
        )

    async def watch_connections(self, on_closed: Callable[[str, str, str | None], None]) -> bool:
        def closed(event: ClosedConnection) -> None:
            on_closed(event.agent_id, event.instance, event.user)

        watcher = ConnectionWatcher(
            self._settings.amqp_url,
            self._settings.events_vhost,
            self.transport_name,
            closed,
            owner=self.id,
        )
        if not await watcher.start():
            return False
        self._watchers.append(watcher)
        return True

    def describe(self) -> dict[str, Any]:
        st = self._settings
        return {
            "role": st.role,
            "specializations": list(st.specializations),
            "cluster_id": self.cluster_id,
            "priority": self._role.priority,
            "standby": st.standby,
            "backup_for": st.backup_for,
            "resources": st.resources.to_mapping() if st.resources else {},
        }
