"""Coordinator: the I/O shell around the pure coordinator state machine.

:class:`~robeing.protocol.coordinator.CoordinatorState` makes every decision —
who runs what, fencing, retries, deadlines, failure handling, when a
submission may be acknowledged. This module holds the broker side of it: the
lock and the epoch, turning deliveries into events, performing the actions.

Leadership (the lock and the epoch) is :mod:`.leadership`'s.

Durability. A ``task.submit`` delivery stays unacknowledged in the durable
quorum queue ``robeing.coordinator.tasks`` (the handler defers it) until every
task in it has a final result stored in the ``robeing.results`` stream. If the
coordinator dies, the broker hands the submissions to the next one, which
runs them again under its new epoch; results of the old epoch are discarded
(fencing), and resubmission of a finished task id is answered from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from typing import Any

from ....broker import topology as topo
from ....protocol.coordinator import (
    AckSubmission,
    Action,
    Assign,
    AssignmentFailed,
    Audit,
    BecameActive,
    CancelAnswered,
    CancelAttempts,
    CancelRequested,
    ConnectionClosed,
    CoordinatorConfig,
    CoordinatorState,
    DeadLetterTask,
    DeliverFinals,
    Event,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    PurgeAssignments,
    QuarantineChanged,
    RefuseTasks,
    ResultsReceived,
    SendProgress,
    SubmissionReceived,
    Tick,
    queries,
)
from ....protocol.envelope import Envelope, pack
from ....protocol.errors import DecodeError, ProtocolError, TooLarge, Unroutable
from ....protocol.evidence import ed25519_signer
from ....protocol.heartbeat import Heartbeat
from ....protocol.taskgraph import SplitStrategy, merge_results, split_list
from ....protocol.taskmsgs import ResultMsg, Submission, TaskQuery
from ....protocol.validation import Claim
from ...context import AgentContext, Message, Receipt
from ...stats import Latency
from ...tasking.finals import FinalsOutbox, read_finals
from .clusters import ClusterHost
from .leadership import foreign_consumers, take_the_lead

log = logging.getLogger(__name__)

SUBMISSION_PREFETCH = 10_000
RESULTS_WINDOW_S = 24 * 3600.0
TICK_S = 0.1
CONSUMER_CHECK_S = 10.0  # how often we look for other consumers on our queues
GUARDIAN_SILENCE_S = 5.0  # a guardian not heard from for this long asks for no validation
MAX_REMEMBERED_BEATS = 100_000  # senders whose last heartbeat payload is kept


class Coordinator:
    """Hosts a :class:`CoordinatorState` on an agent and carries out its actions."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.state: CoordinatorState | None = None
        self.serving = False
        self.finals_out = FinalsOutbox(agent)
        self._held: dict[int, Receipt] = {}  # token -> deferred submission
        self.invalid_records = 0  # results records that did not verify at the last load
        self.foreign_consumers: dict[str, int] = {}  # our queue -> other consumers on it
        self._tokens = 0
        self.decisions = Latency()  # time the machine takes per event
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self.guardians: dict[str, tuple[float, float]] = {}  # id -> (verify rate, last seen)
        # sender -> (its last heartbeat payload, as read): an idle agent sends the same
        # payload beat after beat, and comparing maps costs a fraction of reading one.
        self._beats: dict[str, tuple[Any, Heartbeat]] = {}
        self._audits = 0
        self._sign = ed25519_signer(agent.identity.signing_key)
        self.clusters = ClusterHost(agent, self._spawn, self._feed)

    def _machine(self) -> CoordinatorState:
        """Built at start, once the app's task types are known."""
        st, defs = self.agent.settings, self.agent.task_defs.values()
        detector = st.detector()
        state = CoordinatorState(
            CoordinatorConfig(
                self.agent.id, detector, st.max_attempts, attempt_timeout=st.attempt_timeout
            ),
            strategies={
                d.type: SplitStrategy(d.split or split_list, d.merge or merge_results) for d in defs
            },
            skills={d.type: d.specialization for d in defs if d.specialization},
        )
        state.auditor.skip = frozenset(d.type for d in defs if not d.verify)
        return state

    # -- leadership ------------------------------------------------------------

    async def start(self, agent: AgentContext) -> None:
        """Compete for the lead in the background (the agent keeps starting)."""
        self.state = self._machine()
        self._background.append(asyncio.create_task(self._lead()))

    async def _lead(self) -> None:
        try:
            await self._become_active()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("coordinator %s could not become active; stopping", self.agent.id)
            self.agent.request_stop()

    async def _become_active(self) -> None:
        agent, topology = self.agent, self.agent.settings.topology
        epoch = await take_the_lead(agent)
        agent.on_reconnect(self._on_reconnect)
        finals: list[Any] = []
        read = await read_finals(agent, RESULTS_WINDOW_S, finals.append)
        log.info(
            "loaded %d final results (%d records, %d not authentic) from the results stream",
            len(finals),
            read.records,
            read.invalid,
        )
        self.invalid_records = read.invalid
        self._feed(BecameActive(epoch, tuple(finals)))
        assert self.state is not None, "the machine is built at start"
        await self.clusters.load(self.state)
        # The guardians' orders held now, then every change: no work for a quarantined agent.
        for target in agent.quarantine.quarantined():
            self._feed(QuarantineChanged(target, True))
        agent.quarantine.listeners.append(self._on_quarantine)
        await agent.watch_connections(self._on_connection_closed)
        await agent.consume(
            topo.heartbeat_queue_spec(topology),
            {"heartbeat": self._on_heartbeat, **self.clusters.summaries.handlers()},
            bindings=[(topo.EVENTS_EXCHANGE, topo.SUMMARY_BINDING)],  # leaders' summaries
            prefetch=1000,
            work=False,
            load=False,
            exclusive=True,  # nobody else may take heartbeats or submissions from us
            # A heartbeat is worthless once read: a quarter second of acks in one
            # frame costs nothing if the connection drops (redelivered, then dropped).
            ack_delay=0.25,
        )
        await agent.consume(
            topo.task_queue_spec(topology),
            {
                "task.submit": self._on_submit,
                "task.revoke": self._on_revoke,
                "task.query": self._on_query,
                **self.clusters.handlers(),
            },
            prefetch=SUBMISSION_PREFETCH,
            load=False,
            exclusive=True,
        )
        self._background.append(asyncio.create_task(self._pump()))
        # Only now, with results loaded and both queues consumed, do we serve.
        self.serving = True
        log.info("coordinator %s active with epoch %d", agent.id, epoch)

    def _on_reconnect(self) -> None:
        # Our lock died with the old connection; a standby may own it now.
        log.error(
            "coordinator %s lost its broker connection and with it the lead; "
            "restarting with a fresh state",
            self.agent.id,
        )
        self.agent.request_stop("lost_lead")

    async def stop(self, agent: AgentContext) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- inputs: deliveries and broker events become events ------------------------

    def _on_heartbeat(self, msg: Message) -> None:
        # The envelope was verified (signature, window, replay) like any other;
        # only the reading of an unchanged payload is skipped. Equal maps mean
        # equal values (1 == 1.0 == True), so the earlier reading stands for it.
        last = self._beats.get(msg.sender)
        if last is not None and last[0] == msg.payload:
            beat = last[1]
        else:
            try:
                beat = Heartbeat.from_data(msg.payload)
            except DecodeError as exc:
                if self.state is not None:
                    self.state.counters["bad_heartbeats"] += 1
                log.debug("ignoring heartbeat of %s: %s", msg.sender, exc)
                return
            if len(self._beats) >= MAX_REMEMBERED_BEATS:
                self._beats.clear()  # bound memory against identity churn
            self._beats[msg.sender] = (msg.payload, beat)
        if msg.sender_role == "guardian":
            self._guardian_seen(msg.sender, beat)
        self._feed(HeartbeatReceived(msg.sender, msg.sender_role, beat))
        self.clusters.on_heartbeat(msg.sender, beat)

    def _guardian_seen(self, guardian: str, beat: Heartbeat) -> None:
        """Sample finished tasks at the highest rate a live guardian asks for."""
        now = time.time()
        section = beat.extras.get("guardian", {})
        rate = section.get("verify_rate", 0.0) if beat.state == "alive" else 0.0
        ok = type(rate) in (int, float) and 0 <= rate <= 1
        self.guardians[guardian] = (float(rate) if ok else 0.0, now)
        live = [r for r, seen in self.guardians.values() if now - seen < GUARDIAN_SILENCE_S]
        if self.state is not None:
            self.state.auditor.rate = max(live, default=0.0)

    async def _on_submit(self, msg: Message) -> dict[str, Any] | None:
        """Hold a ``task.submit`` until its finals are stored (malformed: dead-lettered).

        A submitter that asks (``requires_ack``) is answered at once with what
        became of each task (:func:`~robeing.protocol.coordinator.queries.intake_answer`).
        """
        submission = Submission.from_data(msg.payload)
        self._tokens += 1
        self._held[self._tokens] = msg.defer()
        await self._handle(SubmissionReceived(self._tokens, msg.sender, submission))
        if not msg.envelope.requires_ack or self.state is None:
            return None
        ids = [t.id for t in submission.tasks]
        return queries.intake_answer(self.state, ids, time.time())

    async def _on_revoke(self, msg: Message) -> dict[str, Any]:
        """``task.revoke``: cancel the sender's task; the answer says what happened."""
        query = TaskQuery.from_data(msg.payload)
        if query.task_id is None:
            raise DecodeError("task.revoke needs a task_id")
        answer: CancelAnswered | None = None
        for action in self._actions(CancelRequested(msg.sender, query.task_id)):
            if isinstance(action, CancelAnswered):
                answer = action
            else:
                self._spawn(self._perform(action))
        assert answer is not None, "the machine answers every cancel request"
        return {"task_id": answer.task_id, "outcome": answer.outcome, "detail": answer.detail}

    def _on_query(self, msg: Message) -> dict[str, Any]:
        """``task.query``: one of the sender's tasks, or a list (never payloads or results)."""
        query = TaskQuery.from_data(msg.payload)
        assert self.state is not None, "the machine is built at start"
        now = time.time()
        if query.task_id is not None:
            return queries.describe(self.state, msg.sender, query.task_id, now)
        rows = queries.list_tasks(
            self.state,
            msg.sender,
            now,
            states=query.states,
            everyone=query.everyone,
            limit=query.limit,
        )
        return {"tasks": rows}

    async def on_result(self, msg: Message) -> None:
        """``task.result`` from an agent: one result or a batch."""
        items = msg.payload if isinstance(msg.payload, list) else [msg.payload]
        results = []
        for item in items:
            try:
                results.append(ResultMsg.from_data(item))
            except ProtocolError as exc:
                log.warning("malformed result from %s: %s", msg.sender, exc)
        await self._handle(ResultsReceived(msg.sender, tuple(results)))

    def _on_quarantine(self, target: str, quarantined: bool) -> None:
        self._feed(QuarantineChanged(target, quarantined))

    def _on_connection_closed(self, agent_id: str, incarnation: str, user: str | None) -> None:
        # Proof only when the broker saw the agent's own per-agent user open it.
        self._feed(ConnectionClosed(agent_id, incarnation, verified=user == agent_id))
        self.clusters.summaries.on_connection_closed(agent_id)

    async def _pump(self) -> None:
        next_check = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._feed(Tick())
                self.clusters.tick()
            except Exception:
                log.exception("coordinator tick failed")
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CONSUMER_CHECK_S
                self.foreign_consumers = await foreign_consumers(self.agent)

    # -- performing actions -------------------------------------------------------------

    def _actions(self, event: Event) -> list[Action]:
        assert self.state is not None, "the machine is built at start"
        started = time.perf_counter()
        actions = self.state.handle(event, time.time())
        self.decisions.observe(time.perf_counter() - started)
        return actions

    async def _handle(self, event: Event) -> None:
        """From a handler: a single action runs in the handler's task.

        That is the lone task of a quiet system, whose latency matters most:
        a spawned task would cost it a turn of the event loop. Several actions
        are spawned in order, so they go out concurrently (and the finals
        among them share one stream write).
        """
        actions = self._actions(event)
        if len(actions) == 1:
            await self._perform(actions[0])
        else:
            self._spawn_all(actions)

    def _feed(self, event: Event) -> None:
        self._spawn_all(self._actions(event))

    def _spawn_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._spawn(self._perform(action))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _perform(self, action: Action) -> None:
        agent = self.agent
        if isinstance(action, Assign):
            await self._assign(action)
        elif isinstance(action, DeliverFinals):
            if not action.store:
                await self.finals_out.notify(action.finals)
                return
            try:
                await self.finals_out.deliver(action.finals)
            except Exception as exc:
                # The submissions stay held; the machine stores them again later.
                await self._handle(FinalsNotStored(action.task_ids, str(exc)))
            else:
                await self._handle(FinalsStored(action.task_ids))
        elif isinstance(action, AckSubmission):
            receipt = self._held.pop(action.token, None)
            if receipt is not None:
                await receipt.ack()
        elif isinstance(action, SendProgress):
            progress = {"task_id": action.task_id, "done": action.done, "total": action.total}
            if action.note:
                progress["note"] = action.note
            await self._tell(action.recipient, "task.progress", progress)
        elif isinstance(action, RefuseTasks):
            refused = [{"task_id": task_id, "reason": why} for task_id, why in action.tasks]
            await self._tell(action.recipient, "task.refused", refused)
        elif isinstance(action, DeadLetterTask):
            body = pack(
                {
                    "task_id": action.task_id,
                    "type": action.type,
                    "payload": action.payload,
                    "attempts": action.attempts,
                }
            )
            report = agent.sign_rejection(topo.TASK_QUEUE, body, "max_attempts")
            with contextlib.suppress(Exception):
                await agent.broker.dead_letter(
                    body,
                    topo.TASK_QUEUE,
                    "max_attempts",
                    action.reason,
                    {topo.REPORT_HEADER: bytearray(report)},
                )
        elif isinstance(action, Audit):
            await self._audit(action)
        elif isinstance(action, PurgeAssignments):
            with contextlib.suppress(Exception):
                await agent.broker.purge(topo.work_queue(action.agent_id))
        elif isinstance(action, CancelAttempts):
            await self._tell_agent(action)

    async def _tell_agent(self, action: CancelAttempts) -> None:
        """Ask an agent to stop cancelled attempts (a courtesy: their results are stale)."""
        assert self.state is not None
        payload = {"epoch": self.state.epoch, "attempts": [list(a) for a in action.attempts]}
        try:
            await self.agent.send(
                action.agent_id, "task.cancel", payload, priority=9, persistent=False
            )
        except Exception as exc:
            log.debug("could not tell %s to stop cancelled tasks: %s", action.agent_id, exc)

    async def _audit(self, action: Audit) -> None:
        """Hand a sampled attempt to a live guardian, with our signed claim of what was reported."""
        now = time.time()
        live = sorted(
            g for g, (r, seen) in self.guardians.items() if r and now - seen < GUARDIAN_SILENCE_S
        )
        if not live:
            return
        self._audits += 1
        guardian = live[self._audits % len(live)]
        claim = Claim.make(
            self.agent.id, action.task_id, action.agent_id, action.type, action.payload,
            action.result, self._sign,
        )  # fmt: skip
        audit = {
            "claim": claim.raw,
            "task_id": action.task_id,
            "type": action.type,
            "payload": action.payload,
            "skills": sorted(action.skills),
            "agent": action.agent_id,
        }
        try:
            await self.agent.send(guardian, "guardian.audit", audit, persistent=False)
        except Exception as exc:
            log.debug("could not hand %s to guardian %s: %s", action.task_id, guardian, exc)

    async def _tell(self, recipient: tuple[str, str], message_type: str, payload: Any) -> None:
        """A courtesy notice to a submitter's reply queue (lost with the submitter)."""
        submitter, reply_to = recipient
        if not reply_to:
            return
        env = Envelope(message_type, payload, receiver=submitter)
        try:
            await self.agent.send_to_queue(
                env, reply_to, persistent=False, confirm=False, mandatory=False
            )
        except Exception as exc:
            log.debug("could not tell %s (%s): %s", submitter, message_type, exc)

    async def _assign(self, action: Assign) -> None:
        env = Envelope(
            "task.assign",
            [m.to_data() for m in action.messages],
            receiver=action.agent_id,
            priority=action.priority,
        )
        try:
            await self.agent.send_to_queue(
                env,
                topo.work_queue(action.agent_id),
                expiration_s=action.expiration_s,
                persistent=False,
            )
        except TooLarge as exc:
            if len(action.messages) > 1:  # each may fit alone
                for m in action.messages:
                    await self._assign(dataclasses.replace(action, messages=(m,)))
                return
            # Its input alone (payload and dependency results) fits in no message.
            (m,) = action.messages
            too_big = AssignmentFailed(action.agent_id, ((m.task_id, m.attempt),), str(exc), True)
            self._feed(too_big)
        except Exception as exc:
            attempts = tuple((m.task_id, m.attempt) for m in action.messages)
            undelivered = isinstance(exc, Unroutable)
            self._feed(AssignmentFailed(action.agent_id, attempts, str(exc), False, undelivered))

    # -- reporting ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What the coordinator announces in its heartbeats (read by ``robeing status``)."""
        if self.state is None:
            return {"coordinator": {"active": False}}
        report = self.state.report(time.time())
        return {
            "coordinator": {
                **report,
                "active": self.serving,
                "invalid_records": self.invalid_records,
                "foreign_consumers": sum(self.foreign_consumers.values()),
                "decisions": self.decisions.to_data(),
            }
        }
