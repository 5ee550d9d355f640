"""The agent process: identity + connection + inbox + heartbeats + shutdown.

Life of an agent (each step's failure stops the start with a clear error):

1. connect (robust, named connection) and declare the topology;
2. declare its durable inbox ``robeing.agent.<id>`` bound to ``robeing.direct``;
3. run the app's ``on_start`` hooks;
4. consume its reply queue, inbox and broadcast feed;
5. heartbeat every ``heartbeat_interval`` on ``heartbeat.<role>.<id>`` with
   load and capacity, and announce itself with a signed ``hello`` broadcast.

Every delivery goes through :meth:`Agent._deliver`: the codec's checks
(DESIGN §2); a failure is dead-lettered with its reason, counted, logged
once, and the agent keeps serving. A broker redelivery of a message already
accepted is acknowledged and dropped (``duplicates``).

Shutdown (SIGTERM/SIGINT, or :meth:`Agent.stop`): stop consuming, let
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
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..broker import topology as topo
from ..broker.amqp import AmqpTransport
from ..broker.base import Consumer, Delivery, Transport
from ..protocol.codec import Codec, Opened
from ..protocol.envelope import Envelope
from ..protocol.errors import (
    Duplicate,
    ProtocolError,
    Reject,
    Retry,
    error_to_data,
)
from ..protocol.heartbeat import Heartbeat
from ..protocol.identity import Identity, TrustStore
from ..protocol.replay import ReplayWindow
from ..protocol.roles import get_role
from .app import App, Message, call_handler, call_hook
from .keystore import Keystore
from .outbox import ACK, REPLY, Outbox
from .settings import Settings
from .stats import Stats
from .tasking import TaskExecutor

log = logging.getLogger(__name__)


class Agent:
    """One robeing agent. Works the same from the CLI and from Python.

    Args:
        settings: the typed settings.
        identity: our keys and certificate.
        trust: the trust store (authority key, revocations, peers).
        app: handlers; role behaviour and built-ins are added to it.
        transport: the broker connection (default: aio-pika).
        lookup_peer: finds peers' certificates when not yet announced.
        cluster_key: optional broadcast encryption key.
        clock: wall clock, injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        trust: TrustStore,
        app: App | None = None,
        transport: Transport | None = None,
        lookup_peer: Callable[[str], bytes | None] | None = None,
        cluster_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.role = get_role(settings.role)
        self.clock = clock
        self.codec = Codec(
            identity,
            trust,
            ReplayWindow(settings.max_age, settings.max_skew),
            cluster_key=cluster_key,
        )
        self.instance = os.urandom(4).hex()
        # The instance lets the coordinator tie a broker "connection closed"
        # event to one incarnation of the agent (see connwatch.py).
        self.transport_name = f"{settings.connection_name} inst={self.instance}"
        self.transport: Transport = transport or AmqpTransport(
            settings.amqp_url,
            self.transport_name,
            settings.topology,
            publish_timeout=settings.publish_timeout,
        )
        self.reply_queue = topo.reply_queue(self.id, self.instance)
        self.outbox = Outbox(
            self.codec, self.transport, self.reply_queue, lookup_peer, settings.ack_timeout, clock
        )
        self.stats = Stats()
        self.app = App(name=f"{self.id}")
        _install_builtins(self.app)
        if app is not None:
            self.app.include(app)
        self.started_at = 0.0
        self.state = "starting"
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._work_consumers: list[Consumer] = []
        self._background: list[asyncio.Task[Any]] = []
        self._stop_requested = asyncio.Event()
        # Why run() returned: "stopped", or "lost_lead" for a coordinator whose
        # connection (and so its lock) died; serve() then starts afresh.
        self.exit_reason = "stopped"
        # Role behaviours add fields to heartbeats (e.g. the guardian's counts).
        self.heartbeat_extras: list[Callable[[], dict[str, Any]]] = []
        # Answers on the reply queue other than ACKs (e.g. task progress), by type.
        self.answer_handlers: dict[str, Callable[[Opened], Any]] = {}
        from .roles import install_role  # roles import the runtime's types

        install_role(self)
        from .consensus import install_consensus  # lazy, like install_role

        # Votes, PBFT groups and equivocation evidence; groups not listing us are ignored.
        self.consensus = install_consensus(self, self.settings.bft_groups)
        self.executor: TaskExecutor | None = None
        if self.role.takes_work and settings.role != "coordinator":
            _install_builtin_tasks(self.app)
            self.executor = TaskExecutor(self)

    @classmethod
    def from_settings(cls, settings: Settings, app: App | None = None) -> Agent:
        """Build an agent from settings: load (or issue) its identity from the keys dir.

        Raises:
            ConfigError: keys missing or invalid.
        """
        keystore = Keystore(settings.keys_dir)
        identity = keystore.load_identity(settings.agent_id, settings.role, settings.auto_issue)
        cluster_key = keystore.cluster_key()
        return cls(
            settings,
            identity,
            keystore.trust_store(),
            app,
            lookup_peer=keystore.peer_certificate,
            cluster_key=cluster_key,
        )

    @property
    def id(self) -> str:
        return self.settings.agent_id

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare, run start hooks, consume, start heartbeats.

        Raises:
            BrokerError: the broker is unreachable.
            Exception: whatever an ``on_start`` hook raised.
        """
        await self.transport.connect()
        await self.transport.declare_topology()
        takes_work = self.role.takes_work
        inbox = topo.inbox_spec(self.id)
        if takes_work:
            await self.transport.declare_queue(inbox)
            await self.transport.bind(inbox.name, topo.DIRECT_EXCHANGE, self.id)
        for hook in self.app.start_hooks:
            await call_hook(hook, self)
        # Replies are worthless after a crash (their waiter is gone): no acks.
        await self.transport.consume(
            topo.reply_spec(self.id, self.instance), self._on_answer, prefetch=1000, no_ack=True
        )
        if takes_work:
            self._work_consumers.append(
                await self.transport.consume(inbox, self._on_work, self.settings.concurrency)
            )
            self._work_consumers.append(
                await self.transport.consume(
                    topo.broadcast_spec(self.id),
                    self._on_work,
                    self.settings.concurrency,
                    bindings=[(topo.BROADCAST_EXCHANGE, "")],
                )
            )
            if self.executor is not None:
                await self.executor.start()
        self.started_at = self.clock()
        self.state = "alive"
        if takes_work:
            self._background.append(asyncio.create_task(self._heartbeat_loop()))
            await self.outbox.broadcast("hello", self._describe())
        log.info("agent %s (%s) started", self.id, self.settings.role)

    async def stop(self) -> None:
        """Stop taking work, drain in-flight work within the grace period, close."""
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        for consumer in self._work_consumers:
            await self.transport.cancel(consumer)
        self._work_consumers.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.grace_period)
        except TimeoutError:
            log.warning(
                "%d handlers still running after %.1fs grace; their messages return to the queue",
                self.in_flight,
                self.settings.grace_period,
            )
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self.role.takes_work:
            try:
                await self._send_heartbeat(state="leaving")
            except Exception as exc:
                log.debug("last heartbeat not sent: %s", exc)
        for hook in self.app.stop_hooks:
            try:
                await call_hook(hook, self)
            except Exception:
                log.exception("on_stop hook failed")
        self.outbox.fail_all(ConnectionError("agent stopped"))
        if self.settings.generated_id and self.role.takes_work:
            # No later process will use these names; keep them only if they hold work.
            for queue in (topo.agent_queue(self.id), topo.work_queue(self.id)):
                with contextlib.suppress(Exception):
                    await self.transport.delete_if_empty(queue)
        await self.transport.close()
        self.state = "stopped"
        log.info("agent %s stopped", self.id)

    def request_stop(self) -> None:
        self._stop_requested.set()

    @classmethod
    async def serve(cls, settings: Settings, app: App | None = None) -> None:
        """Run an agent until stopped; a coordinator that lost the lead starts over.

        Crash-only failover: rather than repair in-memory state after losing
        its lock, a coordinator throws it all away and competes again as a new
        incarnation, rebuilding from the durable queues if it wins.
        """
        while True:
            agent = cls.from_settings(settings, app)
            await agent.run()
            if agent.exit_reason != "lost_lead":
                return
            await asyncio.sleep(1.0)

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

    # -- messaging API ---------------------------------------------------------

    async def send_message(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Opened | None:
        """Send a point-to-point message (see :meth:`Outbox.send`)."""
        return await self.outbox.send(receiver, message_type, payload, **kw)

    async def request(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Any:
        """Send and wait for the receiver handler's return value."""
        return await self.outbox.request(receiver, message_type, payload, **kw)

    async def broadcast(self, message_type: str, payload: Any = None, **kw: Any) -> str:
        """Signed broadcast to every live agent except ourselves."""
        return await self.outbox.broadcast(message_type, payload, **kw)

    # -- heartbeats --------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        return {
            "role": self.settings.role,
            "specializations": list(self.settings.specializations),
            "cluster_id": self.settings.cluster_id,
            "priority": self.role.priority,
            "standby": self.settings.standby,
            "backup_for": self.settings.backup_for,
            "resources": self.settings.resources.to_mapping() if self.settings.resources else {},
        }

    async def _send_heartbeat(self, state: str | None = None) -> None:
        extras: dict[str, Any] = {}
        for extra in self.heartbeat_extras:
            try:
                extras.update(extra())
            except Exception:
                log.exception("heartbeat extra %r failed", extra)
        s = self.settings
        heartbeat = Heartbeat(
            role=s.role,
            state=state or self.state,
            specializations=s.specializations,
            cluster_id=s.cluster_id,
            priority=self.role.priority,
            standby=s.standby,
            backup_for=s.backup_for,
            resources=s.resources,
            load=self.in_flight,
            capacity=s.concurrency,
            started_at=self.started_at,
            incarnation=self.instance,
            stats=self.stats.as_dict(),
            extras=extras,
        )
        now = self.clock()
        body = self.codec.seal(Envelope("heartbeat", heartbeat.to_data(), priority=9), now)
        await self.transport.publish(
            topo.EVENTS_EXCHANGE,
            topo.heartbeat_routing_key(self.settings.role, self.id),
            body,
            mandatory=False,
            persistent=False,
            expiration_s=max(3 * self.settings.heartbeat_interval, 1.0),
            timeout=max(self.settings.heartbeat_interval * 5, 2.0),
        )

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        next_at = time.monotonic()
        while True:
            try:
                await self._send_heartbeat()
            except Exception as exc:  # keep beating through broker trouble
                log.warning("heartbeat failed: %s", exc)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > interval:  # we were paused; do not burst
                next_at = time.monotonic()

    # -- receiving -----------------------------------------------------------------

    async def open_delivery(self, delivery: Delivery) -> Opened | None:
        """Run the codec checks; dead-letter and count failures."""
        self.stats.received += 1
        try:
            return self.codec.open(delivery.body, self.clock(), delivery.redelivered)
        except Duplicate:
            self.stats.duplicates += 1
            await delivery.ack()
        except ProtocolError as exc:
            await self.reject(delivery, exc.reason, str(exc))
        return None

    async def reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        """Dead-letter ``delivery`` with ``reason``; count and log it once."""
        self.stats.reject(reason, detail, delivery.queue)
        for mw in self.app.middleware:
            try:
                mw.on_rejected(self, reason, detail)
            except Exception:
                log.exception("middleware %r failed in on_rejected", mw)
        await delivery.dead_letter(reason, detail)

    def add_work_consumer(self, consumer: Consumer) -> None:
        """Register a consumer that :meth:`stop` cancels first (no new work)."""
        self._work_consumers.append(consumer)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Count a unit of in-flight work (load in heartbeats; drained on stop)."""
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _on_answer(self, delivery: Delivery) -> None:
        opened = await self.open_delivery(delivery)
        if opened is None:
            return
        env = opened.envelope
        if env.type in (ACK, REPLY) and self.outbox.resolve(opened):
            await delivery.ack()
            return
        handler = self.answer_handlers.get(env.type)
        if handler is not None:
            try:
                handler(opened)
            except Exception:
                log.exception("answer handler for %r failed", env.type)
            await delivery.ack()
            return
        self.stats.late_answers += 1  # the waiter timed out or never existed
        await delivery.ack()

    async def _on_work(self, delivery: Delivery) -> None:
        opened = await self.open_delivery(delivery)
        if opened is None:
            return
        env = opened.envelope
        if env.sender == self.id and env.is_broadcast:
            await delivery.ack()  # our own broadcast
            return
        fn = self.app.handlers.get(env.type)
        if fn is None:
            await self._fail(
                delivery,
                opened,
                "no_handler",
                Reject(f"agent {self.id!r} has no handler for {env.type!r}"),
            )
            return
        message = Message(env, opened.certificate, self, delivery.redelivered)
        async with self.working():
            await self._run_handler(fn, message, delivery, opened)

    async def _run_handler(
        self, fn: Any, message: Message, delivery: Delivery, opened: Opened
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
        await delivery.ack()

    async def _fail(
        self, delivery: Delivery, opened: Opened, reason: str, exc: BaseException
    ) -> None:
        self.stats.failed += 1
        if opened.envelope.requires_ack:
            try:
                await self.outbox.answer(opened, error=error_to_data(exc))
            except Exception as send_exc:
                log.warning("could not report failure to %s: %s", opened.envelope.sender, send_exc)
        await self.reject(delivery, reason, str(exc))

    def _middleware(self, hook: str, *args: Any) -> None:
        for mw in self.app.middleware:
            try:
                getattr(mw, hook)(self, *args)
            except Exception:
                log.exception("middleware %r failed in %s", mw, hook)


def _install_builtin_tasks(app: App) -> None:
    """Give work-taking agents the built-in tasks the app does not override."""
    from .builtin_tasks import tasks

    for task_type, tdef in tasks.tasks.items():
        app.tasks.setdefault(task_type, tdef)


def _install_builtins(app: App) -> None:
    """Handlers every agent has: ``ping``, ``hello`` and ``crl.update``."""

    @app.handler("ping")
    def ping(msg: Message) -> dict[str, Any]:
        agent = msg.agent
        return {
            "pong": agent.id,
            "role": agent.settings.role,
            "load": agent.in_flight,
            "echo": msg.payload,
        }

    @app.handler("hello")
    async def hello(msg: Message) -> None:
        # The codec already learned the sender's certificate. Answer a broadcast
        # hello with our own, so newcomers can encrypt to us without the keys dir.
        if msg.envelope.is_broadcast and msg.agent.role.takes_work:
            await msg.agent.send_message(msg.sender, "hello", msg.agent._describe(), encrypt=False)

    @app.handler("guardian.alert")
    def guardian_alert(msg: Message) -> None:
        # Guardians broadcast these; every agent records them in its log.
        log.warning("guardian %s alerts: %s", msg.sender, msg.payload)

    @app.handler("crl.update")
    def crl_update(msg: Message) -> bool:
        if not isinstance(msg.payload, bytes):
            raise Reject("crl.update payload must be a signed revocation list")
        installed = msg.agent.codec.trust.update_revocations(msg.payload)
        if installed:
            log.warning(
                "installed revocation list version %d", msg.agent.codec.trust.revocations.version
            )
        return installed
