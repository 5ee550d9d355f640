"""The Python API for people and programs outside the fleet.

A :class:`Client` is a ``client``-role identity on its own connection: it
sends and broadcasts signed messages, asks agents for replies, and watches
heartbeats to list live agents. The CLI's ``send``, ``broadcast`` and
``status`` are thin wrappers around it::

    async with Client() as client:      # Settings.from_env(role="client"): AMQP_URL, ROBEING_KEYS…
        ack = await client.send("worker-1", "greet", {"hi": 1}, requires_ack=True)
        agents = await client.live_agents()

It also asks the active coordinator about its tasks (:meth:`Client.task`,
:meth:`Client.tasks`), cancels them (:meth:`Client.cancel`), and forms and
shows clusters (:attr:`Client.clusters`, :mod:`.clusters`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..broker import topology as topo
from ..protocol.codec import Opened
from ..protocol.envelope import Envelope, new_id
from ..protocol.errors import AckTimeout, ConfigError, DecodeError, TooLarge
from ..protocol.records import COORDINATORS
from ..protocol.resources import Resources
from ..protocol.taskmsgs import (
    MAX_TASKS,
    FinalResult,
    Submission,
    TaskQuery,
    TaskRequest,
    check_submittable,
)
from .assembly import build_agent
from .batching import Coalescer
from .clusters import Clusters, Pool, wire_resources
from .context import AgentContext, Message
from .handles import TaskHandle
from .heartbeats import AgentStatus, listen_heartbeats
from .roles.messenger.transfer import send_file
from .settings import Settings
from .tasking.finals import fetch_final

log = logging.getLogger(__name__)

MAX_COALESCED = 256  # submit() calls sharing one submission message
RESUBMIT_AFTER_S = (0.0, 15.0, 30.0)  # after a reconnect (a resubmission is answered, never rerun)


class Client:
    """A client identity connected to the broker.

    Args:
        settings: role must be ``client``; default: the same environment
            variables as the CLI (:meth:`Settings.from_env`).
        listen_only: use a throwaway in-memory identity: enough to verify
            heartbeats and read results (status, probes), needs no key files
            and writes none, but cannot send messages others would accept.
    """

    def __init__(self, settings: Settings | None = None, listen_only: bool = False) -> None:
        settings = settings or Settings.from_env(role="client")
        if settings.role != "client":
            settings = replace(settings, role="client", agent_id="")
        self.settings = settings
        self._agent = build_agent(settings, throwaway_identity=listen_only)
        self._handles: dict[str, TaskHandle] = {}
        # Unfinished submissions, resubmitted after a reconnect: finals sent
        # while our reply queue was gone are answered again from the results
        # store, since resubmitting a task id is idempotent.
        self._unfinished: dict[str, tuple[TaskRequest, ...]] = {}
        self._batch_of: dict[str, str] = {}  # task id -> key of its unfinished batch
        self._open_in_batch: Counter[str] = Counter()  # batch key -> tasks not finished
        self._resubmitting: set[asyncio.Task[None]] = set()
        self._submissions: Coalescer[str, TaskRequest] = Coalescer(
            self._submit_batch, MAX_COALESCED
        )
        self.resubmitted = 0
        self.duplicates = 0  # finals that arrived for an already finished task (absorbed)
        self.delivered: Counter[str] = Counter()  # finals handed to the application
        self._agent.handle_answer("task.final", self._on_final)
        self._agent.handle_answer("task.finals", self._on_finals)
        self._agent.handle_answer("task.progress", self._on_progress)
        self._agent.handle_answer("task.refused", self._on_refused)
        self._agent.on_reconnect(self._on_reconnect)
        ask = self._agent.outbox.ask_coordinators
        self.clusters = Clusters(lambda kind, data, timeout: ask(kind, data, timeout=timeout))
        self.pool = Pool(lambda kind, data, timeout: ask(kind, data, timeout=timeout))

    @property
    def agent(self) -> AgentContext:
        """The client's agent context (to propose votes, commit through PBFT…)."""
        return self._agent

    def _on_reconnect(self) -> None:
        # Again later too: a final sent meanwhile to our reply queue on the lost
        # node (until its peers declare it down) is lost with that queue.
        for delay in RESUBMIT_AFTER_S:
            task = asyncio.get_running_loop().create_task(self._resubmit(delay))
            self._resubmitting.add(task)
            task.add_done_callback(self._resubmitting.discard)

    async def _resubmit(self, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        for key, batch in list(self._unfinished.items()):
            if all(self._handles[r.id].finished for r in batch):
                self._unfinished.pop(key, None)
                continue
            try:
                await self._publish(batch)
                self.resubmitted += 1
            except Exception as exc:  # the next reconnect tries again
                log.warning("resubmitting %d task(s) failed: %s", len(batch), exc)

    def _on_finals(self, msg: Message) -> None:
        for item in msg.payload if isinstance(msg.payload, list) else []:
            self._on_one_final(item)

    def _on_final(self, msg: Message) -> None:
        self._on_one_final(msg.payload)

    def _on_one_final(self, data: Any) -> None:
        try:
            final = FinalResult.from_data(data)
        except DecodeError as exc:
            log.warning("malformed final result ignored: %s", exc)
            return
        self._deliver(final)

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

    def _on_refused(self, msg: Message) -> None:
        """The coordinator did not take these tasks (their ids are someone else's)."""
        for item in msg.payload if isinstance(msg.payload, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("task_id"), str):
                continue
            reason = str(item.get("reason", "refused"))
            self._deliver(FinalResult(item["task_id"], "failed", error=f"refused: {reason}"))

    def _on_progress(self, msg: Message) -> None:
        p = msg.payload
        handle = self._handles.get(str(p.get("task_id"))) if isinstance(p, dict) else None
        if handle is None or handle.finished:
            return
        handle.done, handle.total = int(p.get("done", 0)), int(p.get("total", 1))
        if isinstance(p.get("note"), str):
            handle.note = p["note"][:500]
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
        cluster: str | None = None,
        check: float | None = None,
    ) -> TaskHandle:
        """Submit one task; returns once the broker confirmed it into the durable queue.

        Concurrent calls (without ``check``) share submission messages: one
        call publishes at once; the calls made while it waits for the
        broker's confirm go out together in the next message (up to
        :data:`MAX_COALESCED`), each still with its own handle, each
        returning once its message was confirmed.

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
            cluster: run it on members of this named cluster (None: the
                default cluster, which the coordinator leads).
            check: also wait up to this many seconds for the active
                coordinator to take it (see :meth:`submit_many`).

        Raises:
            ConfigError: invalid arguments, or a task too large for a message.
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
            resources=wire_resources(resources),
            cluster=cluster,
        )
        if check is not None:
            return (await self.submit_many([request], check=check))[0]
        check_submittable([request])
        (handle,) = self._handles_for([request])
        skill = request.skills[0] if request.skills else None
        await self._submissions.put(topo.task_routing_key(skill), [request])
        return handle

    async def submit_many(
        self, requests: Sequence[TaskRequest], *, check: float | None = None
    ) -> list[TaskHandle]:
        """Submit tasks in one durable message (dependencies may span them).

        With ``check``, also wait up to that many seconds for the active
        coordinator to take the submission: each handle then says ``taken``,
        its real number of parts (``total``) and a ``warning`` when the task
        cannot start soon (no live agent has its skill, no agent could ever
        hold its resources). Without a coordinator the handles stay not
        ``taken``; the tasks wait in the durable queue all the same.

        Raises:
            ConfigError: an invalid request (bad priority, agents < 1, no
                tasks, one over :data:`~robeing.protocol.taskmsgs.MAX_TASK_BYTES`).
            BrokerError: the broker did not confirm the submission.
        """
        if not requests:
            raise ConfigError("nothing to submit")
        if len(requests) > MAX_TASKS:
            raise ConfigError(f"at most {MAX_TASKS} tasks per submission, got {len(requests)}")
        check_submittable(requests)
        handles = self._handles_for(requests)
        answer = await self._publish(tuple(requests), check)
        for task_id, entry in (answer or {}).items():
            taken = self._handles.get(task_id)
            if taken is not None and isinstance(entry, dict):
                taken.taken = True
                parts = entry.get("parts", 1)
                taken.total = max(taken.total, parts if isinstance(parts, int) else 1)
                warning = entry.get("warning")
                taken.warning = warning if isinstance(warning, str) else None
        self._track(tuple(requests))
        return handles

    def _handles_for(self, requests: Sequence[TaskRequest]) -> list[TaskHandle]:
        handles = []
        for r in requests:
            handle = self._handles.get(r.id) or TaskHandle(r.id)
            self._handles[r.id] = handle
            handles.append(handle)
        return handles

    def _track(self, requests: tuple[TaskRequest, ...]) -> None:
        """Remember a confirmed submission until its tasks finish (resubmitted on reconnect)."""
        key = requests[0].id
        self._unfinished[key] = requests
        for r in requests:
            if not self._handles[r.id].finished and r.id not in self._batch_of:
                self._batch_of[r.id] = key
                self._open_in_batch[key] += 1
        if not self._open_in_batch.get(key):
            self._unfinished.pop(key, None)

    async def _submit_batch(self, _route: str, requests: list[TaskRequest]) -> None:
        """Send the ``submit()`` calls gathered for one routing key as one submission."""
        try:
            await self._publish(tuple(requests))
        except TooLarge:
            if len(requests) == 1:
                raise
            # Each task fits (submit checks), many together may not: halve the batch.
            half = len(requests) // 2
            await self._submit_batch(_route, requests[:half])
            await self._submit_batch(_route, requests[half:])
            return
        self._track(tuple(requests))

    async def _publish(
        self, requests: tuple[TaskRequest, ...], check: float | None = None
    ) -> dict[str, Any] | None:
        """Publish a submission; with ``check``, return the coordinator's answer (None: none)."""
        submission = Submission(requests, self._agent.reply_queue)
        skill = requests[0].skills[0] if requests[0].skills else None
        key, priority = topo.task_routing_key(skill), max(r.priority for r in requests)
        if check is not None:
            try:
                answer = await self._agent.outbox.ask_coordinators(
                    "task.submit", submission.to_data(), timeout=check, route_key=key
                )
            except AckTimeout:
                return None
            return answer if isinstance(answer, dict) else None
        # Encrypted to the coordinators' group key: only a coordinator reads it.
        env = Envelope(
            "task.submit", submission.to_data(), receiver=COORDINATORS, priority=priority
        )
        await self._agent.publish_event(key, env)
        return None

    # -- asking the coordinator about our tasks ---------------------------------------

    async def cancel(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Cancel our task ``task_id``; returns ``{task_id, outcome, detail}``.

        ``outcome``: ``cancelled`` (its final, ``cancelled``, reaches us like
        any final), ``finished``, ``refused`` or ``unknown``.

        Raises:
            AckTimeout: no coordinator answered within ``timeout``.
        """
        return await self._ask("task.revoke", TaskQuery(task_id), timeout)

    async def task(self, task_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Describe our task ``task_id``: state, what it waits for, its parts.

        Raises:
            AckTimeout: no coordinator answered within ``timeout``.
        """
        return await self._ask("task.query", TaskQuery(task_id), timeout)

    async def tasks(
        self,
        states: Sequence[str] = (),
        *,
        everyone: bool = False,
        limit: int = 1000,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Our unfinished tasks (``states`` filters by state or kind; ``finished`` adds finals).

        Raises:
            AckTimeout: no coordinator answered within ``timeout``.
        """
        query = TaskQuery(None, tuple(states), everyone, limit)
        rows = (await self._ask("task.query", query, timeout)).get("tasks", [])
        return [r for r in rows if isinstance(r, dict)]

    async def _ask(self, message_type: str, query: TaskQuery, timeout: float) -> dict[str, Any]:
        answer = await self._agent.outbox.ask_coordinators(
            message_type, query.to_data(), timeout=timeout
        )
        if not isinstance(answer, dict):
            raise DecodeError(f"the coordinator's answer to {message_type} is not a map")
        return answer

    async def fetch_result(self, task_id: str, since_s: float = 24 * 3600.0) -> FinalResult | None:
        """Look a finished task up in the results stream (no coordinator needed)."""
        return await fetch_final(self._agent, task_id, since_s)

    async def __aenter__(self) -> Client:
        await self._agent.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        for task in self._resubmitting:
            task.cancel()
        await self._agent.stop()

    async def send(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Opened | None:
        """See :meth:`robeing.agents.outbox.Outbox.send`."""
        return await self._agent.send(receiver, message_type, payload, **kw)

    async def request(
        self, receiver: str, message_type: str, payload: Any = None, **kw: Any
    ) -> Any:
        return await self._agent.request(receiver, message_type, payload, **kw)

    async def send_file(
        self, receiver: str, message_type: str, path: str | Path, **kw: Any
    ) -> dict[str, Any]:
        """Send a file of any size in signed, encrypted chunks (see ``messenger.transfer``).

        The receiver's handler for ``message_type`` gets ``{"file", "size", "sha256", …}``.

        Raises:
            RobeingError: the receiver refused or could not complete the transfer.
        """
        return await send_file(self._agent, receiver, message_type, Path(path), **kw)

    async def put_blob(self, messenger: str, path: str | Path) -> dict[str, Any]:
        """Put a file of any size on ``messenger`` for tasks to read.

        Returns:
            The reference a task's payload carries: ``{"blob", "size", "holder"}``;
            the agent that runs the task reads it with
            ``robeing.agents.roles.messenger.fetch_blob(ctx.agent, ref)``.

        Raises:
            RobeingError: the transfer failed or the messenger refused it.
        """
        info = await send_file(self._agent, messenger, "blob.store", Path(path))
        return {"blob": info["sha256"], "size": info["size"], "holder": messenger}

    async def send_via(
        self,
        messenger: str,
        receiver: str,
        message_type: str,
        payload: Any = None,
        *,
        ttl: float = 3600.0,
        priority: int = 5,
    ) -> dict[str, Any]:
        """Have ``messenger`` hold a message for ``receiver`` until it is back (or ``ttl``).

        The message is sealed here for ``receiver`` (signed, encrypted to it):
        the messenger can neither read nor alter it.

        Returns:
            ``{"id", "to", "expires"}``; ask :meth:`relay_status` with the id.

        Raises:
            UnknownPeer: no certificate of ``receiver`` (its identity must exist).
            RobeingError: the messenger refused to hold it.
        """
        sealed = self._agent.seal(
            Envelope(message_type, payload, receiver=receiver, priority=priority)
        )
        held: dict[str, Any] = await self._agent.request(
            messenger, "relay.forward", {"to": receiver, "sealed": sealed, "ttl": ttl}
        )
        return held

    async def relay_status(self, messenger: str, relay_id: str) -> dict[str, Any]:
        """``pending``, ``delivered``, ``expired`` or ``refused: …`` for a held message."""
        status: dict[str, Any] = await self._agent.request(
            messenger, "relay.status", {"id": relay_id}
        )
        return status

    async def broadcast(self, message_type: str, payload: Any = None, **kw: Any) -> str:
        return await self._agent.broadcast(message_type, payload, **kw)

    async def live_agents(self, listen: float | None = None) -> dict[str, AgentStatus]:
        """Listen to heartbeats for ``listen`` seconds and return who is alive.

        See :func:`listen_heartbeats`.
        """
        wait = listen if listen is not None else max(2.5 * self.settings.heartbeat_interval, 1.5)
        return await listen_heartbeats(self._agent, wait)


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
