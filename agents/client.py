"""The Python API for people and programs outside the fleet.

A :class:`Client` is a ``client``-role identity on its own connection: it
sends and broadcasts signed messages, asks agents for replies, and watches
heartbeats to list live agents. The CLI's ``send``, ``broadcast`` and
``status`` are thin wrappers around it::

    async with Client(Settings(role="client")) as client:
        ack = await client.send("worker-1", "greet", {"hi": 1}, requires_ack=True)
        agents = await client.live_agents()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..broker import topology as topo
from ..broker.base import Delivery
from ..protocol.codec import Opened
from ..protocol.envelope import Envelope, new_id, unpack
from ..protocol.errors import ConfigError, DecodeError, ProtocolError
from ..protocol.heartbeat import Heartbeat
from ..protocol.identity import Authority, Identity
from ..protocol.resources import InvalidResources, Resources
from ..protocol.taskmsgs import FinalResult, Submission, TaskRequest
from .keystore import Keystore
from .runtime import Agent
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AgentStatus:
    """What the last heartbeat of an agent said."""

    id: str
    role: str
    specializations: list[str]
    cluster_id: str
    state: str
    load: int
    capacity: int
    last_seen: float
    started_at: float
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "specializations": self.specializations,
            "cluster_id": self.cluster_id,
            "state": self.state,
            "load": self.load,
            "capacity": self.capacity,
            "last_seen_s": round(now - self.last_seen, 3),
            "uptime_s": round(now - self.started_at, 1) if self.started_at else None,
            "stats": self.stats,
            **self.extra,
        }


_KNOWN = {
    "role",
    "specializations",
    "cluster_id",
    "state",
    "load",
    "capacity",
    "started_at",
    "incarnation",
    "stats",
    "priority",
}


def status_from_heartbeat(opened: Opened, now: float) -> AgentStatus | None:
    """What a heartbeat says, or None if it does not decode (logged at debug)."""
    try:
        hb = Heartbeat.from_data(opened.envelope.payload)
    except DecodeError as exc:
        log.debug("ignoring heartbeat of %s: %s", opened.envelope.sender, exc)
        return None
    return AgentStatus(
        id=opened.envelope.sender,
        role=opened.certificate.role,  # the certified role, not the claimed one
        specializations=list(hb.specializations),
        cluster_id=hb.cluster_id,
        state=hb.state,
        load=hb.load,
        capacity=hb.capacity,
        last_seen=now,
        started_at=hb.started_at,
        stats=dict(hb.stats),
        # standby, backup_for, resources and the role sections, in their wire form
        extra={k: v for k, v in hb.to_data().items() if k not in _KNOWN},
    )


class TaskHandle:
    """A submitted task: its progress and, eventually, its one final result."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.done = 0
        self.total = 1
        self._final: asyncio.Future[FinalResult] = asyncio.get_running_loop().create_future()
        self.on_progress: Callable[[TaskHandle], None] | None = None

    @property
    def finished(self) -> bool:
        return self._final.done()

    async def result(self, timeout: float | None = None) -> FinalResult:
        """Wait for the final result (succeeded, failed, expired or dead_lettered).

        Raises:
            TimeoutError: not finished within ``timeout``.
        """
        return await asyncio.wait_for(asyncio.shield(self._final), timeout)


class Client:
    """A client identity connected to the broker.

    Args:
        settings: role must be ``client`` (the default here).
        listen_only: use a throwaway in-memory identity: enough to verify
            heartbeats and read results (status, probes), needs no key files
            and writes none, but cannot send messages others would accept.
    """

    def __init__(self, settings: Settings | None = None, listen_only: bool = False) -> None:
        settings = settings or Settings(role="client")
        if settings.role != "client":
            settings = replace(settings, role="client", agent_id="")
        self.settings = settings
        if listen_only:
            store = Keystore(settings.keys_dir)
            identity = Identity.create(
                Authority.generate(), settings.agent_id, "client", time.time()
            )
            self.agent = Agent(settings, identity, store.trust_store())
        else:
            self.agent = Agent.from_settings(settings)
        self._handles: dict[str, TaskHandle] = {}
        # Unfinished submissions, resubmitted after a reconnect: finals sent
        # while our reply queue was gone are answered again from the results
        # store, since resubmitting a task id is idempotent.
        self._unfinished: dict[str, tuple[TaskRequest, ...]] = {}
        self._batch_of: dict[str, str] = {}  # task id -> key of its unfinished batch
        self._open_in_batch: Counter[str] = Counter()  # batch key -> tasks not finished
        self._resubmitting: set[asyncio.Task[None]] = set()
        self.resubmitted = 0
        self.duplicates = 0  # finals that arrived for an already finished task (absorbed)
        self.delivered: Counter[str] = Counter()  # finals handed to the application
        self.agent.answer_handlers["task.final"] = self._on_final
        self.agent.answer_handlers["task.finals"] = self._on_finals
        self.agent.answer_handlers["task.progress"] = self._on_progress
        self.agent.transport.add_reconnect_listener(self._on_reconnect)

    def _on_reconnect(self) -> None:
        task = asyncio.get_running_loop().create_task(self._resubmit())
        self._resubmitting.add(task)
        task.add_done_callback(self._resubmitting.discard)

    async def _resubmit(self) -> None:
        for key, batch in list(self._unfinished.items()):
            if all(self._handles[r.id].finished for r in batch):
                self._unfinished.pop(key, None)
                continue
            try:
                await self._publish(batch)
                self.resubmitted += 1
            except Exception as exc:  # the next reconnect tries again
                log.warning("resubmitting %d task(s) failed: %s", len(batch), exc)

    def _on_finals(self, opened: Opened) -> None:
        items = opened.envelope.payload if isinstance(opened.envelope.payload, list) else []
        for item in items:
            self._deliver(FinalResult.from_data(item))

    def _on_final(self, opened: Opened) -> None:
        self._deliver(FinalResult.from_data(opened.envelope.payload))

    def _deliver(self, final: FinalResult) -> None:
        handle = self._handles.get(final.task_id)
        if handle is None or handle.finished:
            self.duplicates += 1  # exactly one result per task reaches the caller
            return
        handle.done = handle.total
        handle._final.set_result(final)
        self.delivered[final.task_id] += 1
        key = self._batch_of.pop(final.task_id, None)
        if key is not None:  # O(1) bookkeeping: a finished batch leaves the resubmission list
            self._open_in_batch[key] -= 1
            if self._open_in_batch[key] <= 0:
                del self._open_in_batch[key]
                self._unfinished.pop(key, None)

    def _on_progress(self, opened: Opened) -> None:
        p = opened.envelope.payload
        handle = self._handles.get(str(p.get("task_id"))) if isinstance(p, dict) else None
        if handle is None or handle.finished:
            return
        handle.done, handle.total = int(p.get("done", 0)), int(p.get("total", 1))
        if handle.on_progress is not None:
            handle.on_progress(handle)

    async def submit(
        self,
        task_type: str,
        payload: Any = None,
        *,
        task_id: str | None = None,
        skills: Sequence[str] = (),
        agents: int = 1,
        priority: int = 5,
        deadline: float | None = None,
        depends_on: Sequence[str] = (),
        max_attempts: int | None = None,
        resources: Resources | Mapping[str, float] | None = None,
    ) -> TaskHandle:
        """Submit one task; returns once the broker confirmed it into the durable queue.

        Args:
            task_type: the task type (e.g. ``"wordcount"``).
            payload: its input.
            task_id: your id for it; resubmitting the same id is idempotent.
            skills: specializations needed (default: the type's own).
            agents: split across this many agents.
            priority: 0-9; higher goes first when agents are scarce.
            deadline: seconds from now after which the task expires.
            depends_on: ids of tasks whose results it needs.
            max_attempts: executions before it is dead-lettered.
            resources: what one execution needs from the resource pool
                (``Resources`` or a map such as ``{"cpu": 1, "memory": 2**29}``);
                it runs only on an agent with that much free.

        Raises:
            ConfigError: invalid arguments.
            BrokerError: the broker did not confirm the submission.
        """
        request = TaskRequest(
            id=task_id or new_id(),
            type=task_type,
            payload=payload,
            skills=tuple(skills),
            agents=agents,
            priority=priority,
            deadline=None if deadline is None else time.time() + deadline,
            depends_on=tuple(depends_on),
            max_attempts=max_attempts,
            resources=_resources_map(resources),
        )
        return (await self.submit_many([request]))[0]

    async def submit_many(self, requests: Sequence[TaskRequest]) -> list[TaskHandle]:
        """Submit tasks in one durable message (dependencies may span them).

        Raises:
            ConfigError: an invalid request (bad priority, agents < 1, no tasks).
            BrokerError: the broker did not confirm the submission.
        """
        if not requests:
            raise ConfigError("nothing to submit")
        for r in requests:
            if not 0 <= r.priority <= 9 or r.agents < 1:
                raise ConfigError(f"task {r.id!r}: priority must be 0-9 and agents >= 1")
        handles = []
        for r in requests:
            handle = self._handles.get(r.id) or TaskHandle(r.id)
            self._handles[r.id] = handle
            handles.append(handle)
        await self._publish(tuple(requests))
        key = requests[0].id
        self._unfinished[key] = tuple(requests)
        for r in requests:
            if not self._handles[r.id].finished and r.id not in self._batch_of:
                self._batch_of[r.id] = key
                self._open_in_batch[key] += 1
        if not self._open_in_batch.get(key):
            self._unfinished.pop(key, None)
        return handles

    async def _publish(self, requests: tuple[TaskRequest, ...]) -> None:
        submission = Submission(requests, self.agent.reply_queue)
        env = Envelope(
            "task.submit", submission.to_data(), priority=max(r.priority for r in requests)
        )
        body = self.agent.codec.seal(env, time.time())
        skill = requests[0].skills[0] if requests[0].skills else None
        await self.agent.transport.publish(
            topo.EVENTS_EXCHANGE, topo.task_routing_key(skill), body, priority=env.priority
        )

    async def fetch_result(self, task_id: str, since_s: float = 24 * 3600.0) -> FinalResult | None:
        """Look a finished task up in the results stream (no coordinator needed)."""
        from datetime import UTC, datetime

        found: list[FinalResult] = []

        from .finals import finals_from_record

        def on_body(body: bytes) -> None:
            try:
                record = unpack(body)
            except ProtocolError:
                return
            found.extend(f for f in finals_from_record(record) if f.task_id == task_id)

        since = datetime.fromtimestamp(time.time() - since_s, tz=UTC)
        await self.agent.transport.read_stream(
            topo.results_spec(self.settings.topology), since, on_body
        )
        return found[-1] if found else None

    async def __aenter__(self) -> Client:
        await self.agent.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.agent.stop()

    async def send(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Opened | None:
        """See :meth:`robeing.agents.outbox.Outbox.send`."""
        return await self.agent.send_message(receiver, message_type, payload, **kw)

    async def request(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Any:
        return await self.agent.request(receiver, message_type, payload, **kw)

    async def broadcast(self, message_type: str, payload: Any = None, **kw: Any) -> str:
        return await self.agent.broadcast(message_type, payload, **kw)

    async def live_agents(self, listen: float | None = None) -> dict[str, AgentStatus]:
        """Listen to heartbeats for ``listen`` seconds and return who is alive.

        See :func:`listen_heartbeats`.
        """
        wait = listen if listen is not None else max(2.5 * self.settings.heartbeat_interval, 1.5)
        return await listen_heartbeats(self.agent, wait)


def _resources_map(resources: Resources | Mapping[str, float] | None) -> dict[str, Any]:
    """The wire form of a task's resources.

    Raises:
        ConfigError: an unknown dimension or a bad quantity.
    """
    if resources is None:
        return {}
    if isinstance(resources, Resources):
        return resources.to_mapping()
    try:
        return Resources.from_mapping(resources).to_mapping()
    except InvalidResources as exc:
        raise ConfigError(f"invalid resources: {exc}") from None


async def listen_heartbeats(agent: Agent, seconds: float) -> dict[str, AgentStatus]:
    """The agents whose heartbeats ``agent`` hears within ``seconds``, by id.

    Heartbeats are verified like any message (forged ones are ignored); agents
    whose last heartbeat said ``leaving`` are left out. The listening queue is
    exclusive and goes away with the connection.

    Raises:
        BrokerError: the broker is unreachable.
    """
    seen: dict[str, AgentStatus] = {}
    spec = topo.QueueSpec(
        f"robeing.listen.{agent.id}.{os.urandom(3).hex()}",
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": 100_000},
    )

    async def on_heartbeat(delivery: Delivery) -> None:
        await delivery.ack()
        try:
            opened = agent.codec.open(delivery.body, time.time())
        except ProtocolError:
            return
        if opened.envelope.type == "heartbeat":
            status = status_from_heartbeat(opened, time.time())
            if status is not None:
                seen[status.id] = status

    consumer = await agent.transport.consume(
        spec, on_heartbeat, prefetch=1000, bindings=[(topo.EVENTS_EXCHANGE, "heartbeat.#")]
    )
    try:
        await asyncio.sleep(seconds)
    finally:
        await agent.transport.cancel(consumer)
    return {k: v for k, v in sorted(seen.items()) if v.state != "leaving"}


def parse_payload(text: str | None) -> Any:
    """Parse a ``--payload`` value: JSON text, or ``@file`` holding JSON.

    Raises:
        ConfigError: unreadable file or invalid JSON (says which).
    """
    import json

    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read payload file {text[1:]!r}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"payload is not valid JSON: {exc}") from exc
