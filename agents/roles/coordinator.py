"""Coordinator: distribution of work, deadlines, dependencies and results.

Leadership. Exactly one coordinator is active: the one whose connection owns
the exclusive queue ``robeing.coordinator.lock`` (a mutex the broker keeps and
releases when that connection dies). Others wait as standbys and retry. On
taking over, the coordinator picks an epoch greater than any before it
(``robeing.coordinator.epoch`` plus the wall clock) and stamps it on every
assignment; agents refuse assignments from older epochs, so a deposed
coordinator cannot issue work. A coordinator that loses its connection, and so
its lock, exits (crash-only): its supervisor restarts it as a standby.

Durability. A ``task.submit`` message stays unacknowledged in the durable
quorum queue ``robeing.coordinator.tasks`` until every task in it has a final
result stored in the ``robeing.results`` stream. If the coordinator dies, the
broker hands the submissions to the next one, which runs them again under its
new epoch; results of the old epoch are discarded (fencing), and resubmission
of a finished task id is answered from the stream (idempotence).

Resources. Agents contribute cpu, memory, storage and bandwidth in their
heartbeats (``--resources``); a task that asks for resources is assigned only
to an agent with that much free, which is reserved in the
:class:`~robeing.protocol.resources.ResourceLedger` for the attempt and freed
when the attempt ends (result, expiry, reassignment, the agent's death). A
sweep frees any reservation whose task is no longer running, so none leaks.

Scheduling. The pure parts live in ``robeing.protocol``: the registry and
scores (:mod:`~robeing.protocol.scheduling`), learned performance
(:mod:`~robeing.protocol.performance`), the task DAG with attempts, retries
and deadlines (:mod:`~robeing.protocol.taskgraph`) and the failure detector
(:mod:`~robeing.protocol.failure_detector`). This module feeds them events
and carries their decisions over the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...broker import topology as topo
from ...broker.base import Delivery
from ...protocol.envelope import Envelope, unpack
from ...protocol.errors import DecodeError, ProtocolError, RobeingError
from ...protocol.failure_detector import DetectorConfig, Health, HealthMonitor
from ...protocol.heartbeat import Heartbeat
from ...protocol.performance import PerformanceTracker
from ...protocol.resources import ResourceLedger, Resources
from ...protocol.scheduling import AgentInfo, AgentRegistry, dispatch
from ...protocol.taskgraph import (
    InvalidTask,
    RetryPolicy,
    SplitStrategy,
    TaskGraph,
    TaskRecord,
    TaskSpec,
    TaskState,
    merge_results,
    split_list,
)
from ...protocol.taskmsgs import AssignMsg, FinalResult, ResultMsg, Submission, TaskRequest
from ..connwatch import ClosedConnection, ConnectionWatcher
from ..finals import FinalsOutbox, finals_from_record

if TYPE_CHECKING:
    from ..app import Message
    from ..runtime import Agent

log = logging.getLogger(__name__)

TASK_ROLES = frozenset({"worker", "specialist", "messenger"})
SUBMISSION_PREFETCH = 10_000
RESULTS_WINDOW_S = 24 * 3600.0
TICK_S = 0.1
LOCK_RETRY_S = 0.25  # how often a standby tries to take the lead
SWEEP_S = 10.0  # how often reservations of tasks no longer running are freed


@dataclass
class Batch:
    """One ``task.submit`` delivery and the root tasks it still waits for."""

    delivery: Delivery | None
    submitter: str
    reply_to: str | None
    waiting: set[str] = field(default_factory=set)


class Coordinator:
    """The active coordinator's state and event handlers."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.epoch = 0
        self.active = False
        self.perf = PerformanceTracker()
        self.registry = AgentRegistry(self.perf, task_roles=TASK_ROLES)
        self.ledger = ResourceLedger()
        self._next_sweep = 0.0
        st = agent.settings
        self.health = HealthMonitor(
            DetectorConfig(
                heartbeat_interval=st.heartbeat_interval,
                acceptable_pause=st.acceptable_pause,
                dead_after=st.dead_after,
            )
        )
        self.graph = TaskGraph(
            retry=RetryPolicy(max_attempts=st.max_attempts),
            strategies=self._strategies(),
            rng=random.Random(),
        )
        self.finals: dict[str, FinalResult] = {}
        self.batches: dict[str, Batch] = {}  # root task id -> its batch
        self.watchers: dict[str, list[tuple[str, str]]] = {}  # root id -> (submitter, reply_to)
        self.progress: dict[str, tuple[int, int]] = {}  # root id -> (done, total)
        self._notices: list[tuple[Envelope, str]] = []  # progress to send, in order
        self.counters: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._lead_task: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self.finals_out = FinalsOutbox(agent)
        self.incarnations: dict[str, str] = {}  # agent id -> instance of its connection
        self.dead: dict[str, tuple[float, frozenset[str]]] = {}  # id -> (when, its skills)
        self.backups: dict[str, Heartbeat] = {}  # standby id -> its last heartbeat
        self.watcher: ConnectionWatcher | None = None

    def _strategies(self) -> dict[str, SplitStrategy]:
        from ..builtin_tasks import tasks as builtin

        strategies = {}
        for tdef in [*builtin.tasks.values(), *self.agent.app.tasks.values()]:
            strategies[tdef.type] = SplitStrategy(
                tdef.split or split_list, tdef.merge or merge_results
            )
        return strategies

    def _skills_for(self, req: TaskRequest) -> frozenset[str]:
        if req.skills:
            return frozenset(req.skills)
        from ..builtin_tasks import tasks as builtin

        tdef = self.agent.app.tasks.get(req.type) or builtin.tasks.get(req.type)
        return frozenset({tdef.specialization}) if tdef and tdef.specialization else frozenset()

    # -- leadership ------------------------------------------------------------

    async def start(self, agent: Agent) -> None:
        """Start the leadership loop in the background (the agent keeps starting)."""
        self._lead_task = asyncio.create_task(self._lead(agent))

    async def _lead(self, agent: Agent) -> None:
        """Become active (waiting as a standby while another coordinator is)."""
        try:
            await self._become_active(agent)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("coordinator %s could not become active; stopping", agent.id)
            agent.request_stop()

    async def _become_active(self, agent: Agent) -> None:
        standby_logged = False
        while not await agent.transport.try_exclusive(topo.lock_spec()):
            if not standby_logged:
                log.info("another coordinator is active; %s waits as standby", agent.id)
                standby_logged = True
            agent.state = "standby"
            await asyncio.sleep(LOCK_RETRY_S)
        self.epoch = await self._next_epoch()
        agent.state = "alive"
        transport = agent.transport
        transport.add_reconnect_listener(self._on_reconnect)
        await self._load_results()
        self.watcher = ConnectionWatcher(
            agent.settings.amqp_url,
            agent.settings.events_vhost,
            agent.transport_name,
            self._on_connection_closed,
        )
        await self.watcher.start()
        await transport.consume(
            topo.heartbeat_queue_spec(agent.settings.topology), self._on_heartbeat, prefetch=1000
        )
        await transport.consume(
            topo.task_queue_spec(agent.settings.topology),
            self._on_submit,
            prefetch=SUBMISSION_PREFETCH,
        )
        self._pump_task = asyncio.create_task(self._pump())
        # Only now, with results loaded and both queues consumed, do we serve.
        self.active = True
        log.info("coordinator %s active with epoch %d", agent.id, self.epoch)

    def _on_reconnect(self, *_: Any) -> None:
        # Our lock died with the old connection; a standby may own it now.
        log.error(
            "coordinator %s lost its broker connection and with it the lead; "
            "restarting with a fresh state",
            self.agent.id,
        )
        self.agent.exit_reason = "lost_lead"
        self.agent.request_stop()

    async def _next_epoch(self) -> int:
        last = 0
        transport = self.agent.transport
        await transport.declare_queue(topo.epoch_spec())
        raw = await transport.peek(topo.EPOCH_QUEUE)
        if raw is not None:
            with contextlib.suppress(ValueError):
                last = int(raw.decode())
        epoch = max(last + 1, int(time.time() * 1000))
        await transport.publish("", topo.EPOCH_QUEUE, str(epoch).encode())
        return epoch

    async def stop(self, agent: Agent) -> None:
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
        if self.watcher is not None:
            await self.watcher.stop()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)

    # -- results store -----------------------------------------------------------

    async def _load_results(self) -> None:
        from datetime import UTC, datetime

        since = datetime.fromtimestamp(time.time() - RESULTS_WINDOW_S, tz=UTC)

        def on_body(body: bytes) -> None:
            try:
                record = unpack(body)
            except ProtocolError:
                return
            for final in finals_from_record(record):
                self.finals[final.task_id] = final

        n = await self.agent.transport.read_stream(
            topo.results_spec(self.agent.settings.topology), since, on_body
        )
        log.info("loaded %d final results from the results stream", n)

    async def _store_final(self, final: FinalResult) -> None:
        # The stream holds results as plain msgpack: they are written by the
        # coordinator alone and read by submitters' `robeing result`.
        await self.finals_out.deliver(final, [])
        self.finals[final.task_id] = final

    # -- inputs --------------------------------------------------------------------

    async def _on_heartbeat(self, delivery: Delivery) -> None:
        opened = await self.agent.open_delivery(delivery)
        if opened is None:
            return
        await delivery.ack()
        env = opened.envelope
        try:
            hb = Heartbeat.from_data(env.payload)
        except DecodeError as exc:
            self.counters["bad_heartbeats"] += 1
            log.debug("ignoring heartbeat of %s: %s", env.sender, exc)
            return
        role = opened.certificate.role
        now = time.time()
        if hb.state == "leaving":
            self._lost(env.sender, now, "left")
            return
        if hb.incarnation:
            self.incarnations[env.sender] = hb.incarnation
        info: dict[str, Any] = {"standby": hb.standby, "started_at": hb.started_at}
        for t in self.health.heartbeat(env.sender, now, info):
            self._transition(t.agent_id, t.new, now, t.reason)
        if role not in TASK_ROLES or hb.state != "alive":
            return
        skills = frozenset(hb.specializations)
        self.dead.pop(env.sender, None)  # it is back (a rejoin starts afresh)
        if hb.standby:
            self.backups[env.sender] = hb
            if not self._backup_needed(hb, skills):
                self.registry.remove(env.sender)
                self.ledger.withdraw(env.sender)
                return
            if env.sender not in self.registry:
                log.warning(
                    "activating backup %s (%s)",
                    env.sender,
                    f"for {hb.backup_for}" if hb.backup_for else "standby pool",
                )
                self.counters["backups_activated"] += 1
        try:
            self.registry.upsert(
                AgentInfo(
                    id=env.sender,
                    role=role,
                    specializations=skills,
                    load=self._outstanding(env.sender),
                    capacity=hb.capacity,
                    cluster_id=hb.cluster_id or None,
                )
            )
        except RobeingError as exc:
            log.debug("ignoring heartbeat of %s: %s", env.sender, exc)
            return
        self._contribute(env.sender, hb.resources)
        self._wake.set()

    def _contribute(self, agent_id: str, offered: Resources | None) -> None:
        """Take an agent's announced resources into the pool (none: it leaves it)."""
        if offered is None:
            self.ledger.withdraw(agent_id)
            return
        dropped = self.ledger.contribute(agent_id, offered)
        if dropped:
            # Its tasks keep running; only our bookkeeping of them is gone.
            log.warning(
                "agent %s now offers less than it holds; %d reservation(s) dropped",
                agent_id,
                len(dropped),
            )

    def _sweep_reservations(self) -> None:
        """Free reservations whose task is no longer assigned or running."""
        live = (TaskState.ASSIGNED, TaskState.RUNNING)
        for allocation in self.ledger.allocations():
            task_id = allocation.request_id
            if task_id not in self.graph or self.graph.get(task_id).state not in live:
                self.ledger.release(allocation.allocation_id)
                self.counters["reservations_swept"] += 1

    def _backup_needed(self, hb: Heartbeat, skills: frozenset[str]) -> bool:
        """A backup takes work only while a primary it stands in for is dead."""
        primary = hb.backup_for
        if primary:
            return primary in self.dead
        return any(dead_skills & skills for _, dead_skills in self.dead.values())

    def _outstanding(self, agent_id: str) -> int:
        # Our own count is authoritative: a heartbeat's load lags the assignments.
        return self.graph.assigned_to(agent_id)

    async def _on_submit(self, delivery: Delivery) -> None:
        opened = await self.agent.open_delivery(delivery)
        if opened is None:
            return
        env = opened.envelope
        try:
            sub = Submission.from_data(env.payload)
        except ProtocolError as exc:
            await self.agent.reject(delivery, exc.reason, str(exc))
            return
        reply_to = sub.reply_to
        self.counters["submissions"] += 1
        now = time.time()
        known_final = [t for t in sub.tasks if t.id in self.finals]
        in_flight = [t for t in sub.tasks if t.id in self.graph and t.id not in self.finals]
        new = [t for t in sub.tasks if t.id not in self.finals and t.id not in self.graph]
        for t in known_final:  # idempotent resubmission: answer from the store
            await self._notify_final(self.finals[t.id], env.sender, reply_to)
        for t in in_flight:
            self.watchers.setdefault(t.id, []).append((env.sender, reply_to or ""))
        if not new:
            await delivery.ack()
            return
        specs = [
            TaskSpec(
                id=t.id,
                type=t.type,
                payload=t.payload,
                skills=self._skills_for(t),
                agents=t.agents,
                deadline=t.deadline,
                priority=t.priority,
                depends_on=t.depends_on,
                max_attempts=t.max_attempts,
                resources=t.resources,
            )
            for t in new
        ]
        try:
            self.graph.submit(specs, now=now)
        except (InvalidTask, RobeingError) as exc:
            for t in new:
                final = FinalResult(
                    t.id,
                    "failed",
                    error=f"rejected at submit: {exc}",
                    finished_at=now,
                    submitter=env.sender,
                )
                await self._store_final(final)
                await self._notify_final(final, env.sender, reply_to)
            await delivery.ack()
            return
        batch = Batch(delivery, env.sender, reply_to, {t.id for t in new})
        for t in new:
            self.batches[t.id] = batch
            rec = self.graph.get(t.id)
            self.progress[t.id] = (0, max(1, len(rec.children)))
        await self._advance_now(now)

    async def on_result(self, msg: Message) -> None:
        items = msg.payload if isinstance(msg.payload, list) else [msg.payload]
        for item in items:
            try:
                res = ResultMsg.from_data(item)
            except ProtocolError as exc:
                log.warning("malformed result from %s: %s", msg.sender, exc)
                continue
            self._on_one_result(res, msg.sender)
        await self._advance_now(time.time())

    def _on_one_result(self, res: ResultMsg, sender: str) -> None:
        now = time.time()
        if res.epoch != self.epoch or res.task_id not in self.graph:
            self.counters["stale_results"] += 1
            return
        rec = self.graph.get(res.task_id)
        if rec.agent != sender:
            self.counters["stale_results"] += 1
            return
        agent_id = rec.agent
        if rec.deadline is not None and now >= rec.deadline:
            # Past the deadline the task is expired, whatever the agent says.
            self.ledger.release_request(res.task_id)
            self.registry.release(agent_id)
            self.graph.expire(now)
            self._wake.set()
            return
        if res.ok:
            outcome = self.graph.complete(res.task_id, res.attempt, res.result, now=now)
        else:
            error = res.error or {}
            reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            outcome = self.graph.fail(
                res.task_id, res.attempt, reason, now=now, transient=res.transient
            )
        if outcome.discarded:
            self.counters["stale_results"] += 1
            return
        self.ledger.release_request(res.task_id)
        self.registry.release(agent_id)
        self.perf.record(
            agent_id,
            now=now,
            success=res.ok,
            latency=res.duration,
            deadline_met=rec.deadline is None or now <= rec.deadline,
        )
        root = rec.spec.parent
        if root is not None and root in self.progress and res.ok:
            done, total = self.progress[root]
            self.progress[root] = (done + 1, total)
            self._progress(root)

    def _progress(self, root: str) -> None:
        batch = self.batches.get(root)
        if batch is None or not batch.reply_to:
            return
        done, total = self.progress[root]
        env = Envelope(
            "task.progress",
            {"task_id": root, "done": done, "total": total},
            receiver=batch.submitter,
        )
        # Sent by the next _advance, before any final: a progress notice that
        # overtook its task's final would be dropped by the client.
        self._notices.append((env, batch.reply_to))

    # -- failure handling ------------------------------------------------------------

    def _transition(self, agent_id: str, new: Health, now: float, reason: str) -> None:
        if new == Health.DEAD:
            self._lost(agent_id, now, reason)
        elif new == Health.SUSPECTED:
            log.warning("agent %s suspected (%s)", agent_id, reason)

    def _on_connection_closed(self, closed: ClosedConnection) -> None:
        # Only the incarnation we track: a late event about an older
        # connection must not kill the agent's restarted process.
        known = self.incarnations.get(closed.agent_id)
        if known != closed.instance:
            # A client, an agent that already said it was leaving, or an old
            # incarnation: nothing to do, but kept for diagnosing detection.
            log.debug(
                "connection of %s (%s, instance %s) closed; tracking instance %s",
                closed.agent_id,
                closed.role,
                closed.instance,
                known,
            )
            return
        log.info(
            "connection of %s (%s, instance %s) closed",
            closed.agent_id,
            closed.role,
            closed.instance,
        )
        now = time.time()
        self.counters["connection_deaths"] += 1
        for t in self.health.connection_closed(closed.agent_id, now):
            self._transition(t.agent_id, t.new, now, "connection closed")

    def _lost(self, agent_id: str, now: float, reason: str) -> None:
        self.incarnations.pop(agent_id, None)
        last = self.registry.remove(agent_id)  # its skills, for the backups standing in
        self.ledger.withdraw(agent_id)
        was_backup = self.backups.pop(agent_id, None) is not None
        if last is not None and not was_backup:
            self.dead[agent_id] = (now, last.specializations)
            while len(self.dead) > 1000:
                self.dead.pop(next(iter(self.dead)))
        requeued = self.graph.agent_lost(agent_id, now=now)
        if requeued:
            log.warning(
                "agent %s lost (%s); reassigning %d task(s)", agent_id, reason, len(requeued)
            )
            self.counters["reassigned"] += len(requeued)
            # Stale assignments would only make the agent redo fenced work.
            self._spawn(self._purge(topo.work_queue(agent_id)))
        self.health.forget(agent_id)
        self._wake.set()

    async def _purge(self, queue: str) -> None:
        with contextlib.suppress(Exception):
            await self.agent.transport.purge(queue)

    # -- the pump ----------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self._step(time.time())
            except Exception:
                log.exception("coordinator step failed")

    async def _step(self, now: float) -> None:
        for t in self.health.tick(now):
            self._transition(t.agent_id, t.new, now, t.reason)
        for task_id in self.graph.expire(now):
            self.ledger.release_request(task_id)
        self._spawn_all(self._advance(now))
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_S
            self._sweep_reservations()

    def _advance(self, now: float) -> list[Coroutine[Any, Any, None]]:
        """Assign what is ready and finish what is done, right now.

        Called straight from the submission and result handlers (saving the
        pump's wake-up on the critical path) and by the pump. It never awaits,
        so no other handler can interleave with it.

        Returns:
            The publishes to make, for the caller to run in this order:
            progress notices, one assignment message per agent, one final
            per root task finished.
        """
        # One message per agent per round: a burst costs one publish per agent.
        by_agent: dict[str, list[AssignMsg]] = {}
        priority: dict[str, int] = {}
        for a in dispatch(self.graph, self.registry, now=now, ledger=self.ledger):
            by_agent.setdefault(a.agent_id, []).append(
                AssignMsg(
                    a.task_id,
                    a.attempt,
                    self.epoch,
                    a.type,
                    a.payload,
                    dict(a.dep_results),
                    a.deadline,
                    self.agent.id,
                )
            )
            priority[a.agent_id] = max(priority.get(a.agent_id, 0), a.priority)
        work = [self._send_answer(env, reply_to) for env, reply_to in self._notices]
        self._notices.clear()
        work += [
            self._assign(msgs, agent_id, priority[agent_id]) for agent_id, msgs in by_agent.items()
        ]
        finished = [rec for rec in self.graph.pop_finished() if rec.spec.parent is None]
        return work + [self._finish_or_log(rec) for rec in finished]

    async def _advance_now(self, now: float) -> None:
        """:meth:`_advance` from a handler: a single publish runs in the handler's task.

        That is the lone task of a quiet system, whose latency matters most:
        a spawned task would cost it a turn of the event loop. Several
        publishes are spawned, so they go out concurrently (and the finals
        among them share one stream write).
        """
        work = self._advance(now)
        if len(work) == 1:
            await work[0]
        else:
            self._spawn_all(work)

    def _spawn_all(self, work: list[Coroutine[Any, Any, None]]) -> None:
        for coro in work:
            self._spawn(coro)

    async def _finish_or_log(self, rec: TaskRecord) -> None:
        try:
            await self._finish(rec)
        except Exception as exc:
            # The submission stays unacknowledged: the next coordinator reruns it.
            log.error("could not store the final result of %s: %s", rec.id, exc)

    async def _assign(self, msgs: list[AssignMsg], agent_id: str, priority: int) -> None:
        env = Envelope(
            "task.assign", [m.to_data() for m in msgs], receiver=agent_id, priority=priority
        )
        deadlines = [m.deadline for m in msgs if m.deadline is not None]
        # Expire with the batch's last deadline: an earlier one alone must not
        # drop the others; each task's own deadline is enforced by the agent.
        expiration = None
        if deadlines and len(deadlines) == len(msgs):
            expiration = max(max(deadlines) - time.time(), 0.001)
        try:
            await self.agent.outbox.publish_to_queue(
                env, topo.work_queue(agent_id), expiration_s=expiration, persistent=False
            )
            self.counters["assigned"] += len(msgs)
        except Exception as exc:
            log.warning("assignment of %d task(s) to %s failed: %s", len(msgs), agent_id, exc)
            for msg in msgs:
                self.registry.release(agent_id)
                with contextlib.suppress(RobeingError):
                    self.graph.fail(
                        msg.task_id,
                        msg.attempt,
                        f"assignment failed: {exc}",
                        now=time.time(),
                        transient=True,
                    )
            self._wake.set()

    async def _finish(self, rec: TaskRecord) -> None:
        state = {
            TaskState.SUCCEEDED: "succeeded",
            TaskState.FAILED: "failed",
            TaskState.EXPIRED: "expired",
        }.get(rec.state, "dead_lettered")
        batch = self.batches.pop(rec.id, None)
        final = FinalResult(
            rec.id,
            state,
            rec.result if state == "succeeded" else None,
            rec.reason,
            rec.attempt,
            time.time(),
            batch.submitter if batch else "",
        )
        self.counters[f"final_{state}"] += 1
        recipients = [(s, r) for s, r in self.watchers.pop(rec.id, []) if r]
        if batch is not None and batch.reply_to:
            recipients.append((batch.submitter, batch.reply_to))
        await self.finals_out.deliver(final, recipients)
        self.finals[final.task_id] = final
        if state == "dead_lettered":
            await self._dead_letter(rec)
        self.progress.pop(rec.id, None)
        for child in [*rec.children, rec.id]:
            self.ledger.release_request(child)
            with contextlib.suppress(RobeingError):
                self.graph.forget(child)
        if batch is not None:
            batch.waiting.discard(rec.id)
            if not batch.waiting and batch.delivery is not None:
                await batch.delivery.ack()

    async def _dead_letter(self, rec: TaskRecord) -> None:
        from ...protocol.envelope import pack

        body = pack(
            {
                "task_id": rec.id,
                "type": rec.spec.type,
                "payload": rec.spec.payload,
                "attempts": rec.attempt,
            }
        )
        with contextlib.suppress(Exception):
            await self.agent.transport.publish(
                topo.DEAD_EXCHANGE,
                topo.TASK_QUEUE,
                body,
                mandatory=False,
                headers={
                    topo.REASON_HEADER: "max_attempts",
                    topo.DETAIL_HEADER: (rec.reason or "")[:500],
                    topo.SOURCE_HEADER: topo.TASK_QUEUE,
                },
            )

    async def _notify_final(self, final: FinalResult, submitter: str, reply_to: str | None) -> None:
        if reply_to:
            await self.finals_out.notify(final, [(submitter, reply_to)])

    async def _send_answer(self, env: Envelope, reply_to: str) -> None:
        try:
            await self.agent.outbox.publish_to_queue(
                env, reply_to, persistent=False, confirm=False, mandatory=False
            )
        except Exception as exc:
            log.debug("could not notify %s: %s", env.receiver, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def report(self) -> dict[str, Any]:
        """What the coordinator announces in its heartbeats (read by `robeing status`)."""
        now = time.time()
        health = {h.agent_id: h.state.value for h in self.health.snapshot(now)[:500]}
        for agent_id in list(self.dead)[-100:]:
            health.setdefault(agent_id, "dead")
        in_flight = {a.id: self.graph.assigned_to(a.id) for a in self.registry}
        return {
            "coordinator": {
                "epoch": self.epoch,
                "active": self.active,
                "tasks": len(self.graph),
                "agents": len(self.registry),
                "health": health,
                "in_flight": {k: v for k, v in in_flight.items() if v},
                "backups_idle": sorted(b for b in self.backups if b not in self.registry),
                "resources": {
                    "capacity": self.ledger.capacity().to_mapping(),
                    "available": self.ledger.available().to_mapping(),
                    "reservations": len(self.ledger.allocations()),
                },
                **dict(self.counters),
            }
        }


def install(agent: Agent) -> None:
    """Install the coordinator's behaviour on ``agent``."""
    coordinator = Coordinator(agent)
    agent.app.on_start(coordinator.start)
    agent.app.on_stop(coordinator.stop)
    agent.heartbeat_extras.append(coordinator.report)
    agent.app.handler("task.result")(coordinator.on_result)

    @agent.app.handler("coordinator.status")
    def status(msg: Message) -> dict[str, Any]:
        return coordinator.report()
