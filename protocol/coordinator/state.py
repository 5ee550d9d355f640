"""The coordinator's decisions as a pure state machine: events in, actions out.

:class:`CoordinatorState` owns everything a coordinator decides — which agent
runs which attempt (:mod:`~robeing.protocol.scheduling`), the task DAG with
attempts, retries and deadlines (:mod:`~robeing.protocol.taskgraph`), who is
alive (:mod:`.fleet`), the resource ledger, and when a submission may be
acknowledged. Its host (``robeing.agents.roles.coordinator``) holds the lock
and the epoch, turns deliveries into :mod:`.events` and performs the
:mod:`.actions`; a simulator drives it the same way with its own clock.

Invariants (checked by the seeded simulator in ``tests/unit``):
    * Nothing happens before :class:`~.events.BecameActive`; the epoch given
      there is stamped on every assignment, and only results carrying it count.
    * Exactly one final result per submitted task: a final is emitted once,
      when the task reaches a terminal state; resubmitting its id later is
      answered from the finals kept (``store=False``), resubmitting it while it
      runs adds the resubmitter as a recipient.
    * A result counts only if it is for the live attempt of the task, from
      the agent holding it, under our epoch (fencing); anything else is
      counted as stale and changes nothing.
    * No assignment goes to an agent declared lost (it left the registry).
    * Reservations in the ledger never exceed what agents contribute, and a
      task holds at most one, freed when its attempt ends.
    * A submission is acknowledged only after every task in it has a final
      stored (:class:`~.events.FinalsStored`); a failed store is retried, so
      an accepted task is never acknowledged without its result on record.
      A resubmission waits too, for each task it names whose final is unstored.
    * Every submitted task ends: it succeeds, fails, dead-letters after its
      attempts, or expires at its deadline.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RobeingError
from ..failure_detector import DetectorConfig
from ..performance import PerformanceTracker
from ..scheduling import dispatch
from ..taskgraph import (
    InvalidTask,
    RetryPolicy,
    SplitStrategy,
    TaskGraph,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from ..taskmsgs import AssignMsg, FinalResult, ResultMsg, TaskRequest
from .actions import (
    AckSubmission,
    Action,
    Assign,
    DeadLetterTask,
    DeliverFinals,
    PurgeAssignments,
    Recipient,
    SendProgress,
)
from .events import (
    AssignmentFailed,
    BecameActive,
    ConnectionClosed,
    Event,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    ResultsReceived,
    SubmissionReceived,
    Tick,
)
from .fleet import TASK_ROLES, FleetView, Lost

log = logging.getLogger(__name__)

__all__ = ["CoordinatorConfig", "CoordinatorState"]

_FINAL_STATE = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.EXPIRED: "expired",
    TaskState.DEAD_LETTERED: "dead_lettered",
}
MAX_EXPIRATION_S = (2**32 - 1) / 1000  # RabbitMQ refuses longer per-message TTLs


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Tuning of one coordinator.

    Attributes:
        coordinator_id: our agent id (results are sent to it).
        detector: failure detection tuning.
        max_attempts: default executions of a task before it is dead-lettered.
        sweep_interval: how often reservations of tasks no longer running are freed.
        store_retry: seconds between attempts to store finals that failed to store.
        task_roles: roles that may be given tasks.
    """

    coordinator_id: str
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    max_attempts: int = 3
    sweep_interval: float = 10.0
    store_retry: float = 1.0
    task_roles: frozenset[str] = TASK_ROLES


@dataclass(slots=True)
class _Batch:
    """One held submission and the root tasks it still waits for."""

    token: int
    waiting: set[str]


class CoordinatorState:
    """A coordinator's state; feed it :meth:`handle` and perform what it returns.

    Args:
        config: tuning.
        strategies: split/merge per task type.
        skills: the specialization each task type needs when a task names none.
        rng: randomness for retry jitter (seed it for reproducible runs).
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        strategies: Mapping[str, SplitStrategy] | None = None,
        skills: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.epoch = 0
        self.active = False
        self.perf = PerformanceTracker()
        self.graph = TaskGraph(
            retry=RetryPolicy(max_attempts=config.max_attempts),
            strategies=strategies,
            rng=rng or random.Random(),
        )
        self.fleet = FleetView(
            config.detector, self.perf, self.graph.assigned_to, config.task_roles
        )
        self.finals: dict[str, FinalResult] = {}
        self.counters: Counter[str] = Counter()
        self._skills = dict(skills or {})
        self._submitters: dict[str, Recipient] = {}  # root id -> who submitted it
        self._batches: dict[str, list[_Batch]] = {}  # root id -> held submissions naming it
        self._watchers: dict[str, list[Recipient]] = {}  # root id -> resubmitters
        self._progress: dict[str, tuple[int, int]] = {}  # root id -> (done, total)
        self._unstored: dict[str, FinalResult] = {}  # finals whose store failed
        self._storing: set[str] = set()  # finals handed to the shell, not yet confirmed
        self._out: list[Action] = []
        self._notices: list[Action] = []
        self._next_sweep = 0.0
        self._next_store_retry = 0.0

    # -- the one entry point -----------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply ``event`` at time ``now``; returns the actions to perform, in order."""
        if isinstance(event, BecameActive):
            self._become_active(event)
        elif not self.active:
            return []
        elif isinstance(event, HeartbeatReceived):
            self._agents_lost(
                self.fleet.heartbeat(event.agent_id, event.role, event.beat, now), now
            )
        elif isinstance(event, ResultsReceived):
            for res in event.results:
                self._on_result(res, event.sender, now)
        elif isinstance(event, SubmissionReceived):
            self._on_submission(event, now)
        elif isinstance(event, Tick):
            self._on_tick(now)
        elif isinstance(event, ConnectionClosed):
            self._agents_lost(
                self.fleet.connection_closed(event.agent_id, event.incarnation, now), now
            )
        elif isinstance(event, AssignmentFailed):
            self._on_assignment_failed(event, now)
        elif isinstance(event, FinalsStored):
            self._on_stored(event.task_ids)
        elif isinstance(event, FinalsNotStored):
            self._on_not_stored(event, now)
        return self._advance(now)

    # -- events ---------------------------------------------------------------------

    def _become_active(self, event: BecameActive) -> None:
        if event.epoch < self.epoch:
            raise ValueError(f"epoch {event.epoch} is older than {self.epoch}")
        self.epoch = event.epoch
        for final in event.finals:
            self.finals[final.task_id] = final
        self.active = True

    def _on_submission(self, event: SubmissionReceived, now: float) -> None:
        self.counters["submissions"] += 1
        sub, submitter = event.submission, event.submitter
        recipient = (submitter, sub.reply_to or "")
        new: list[TaskRequest] = []
        known: list[tuple[FinalResult, tuple[Recipient, ...]]] = []
        pending: set[str] = set()  # known ids whose final is not stored yet
        for t in sub.tasks:
            if t.id in self.finals:  # idempotent resubmission: answer from the store
                known.append((self.finals[t.id], (recipient,)))
                if t.id in self._storing or t.id in self._unstored:
                    pending.add(t.id)
            elif t.id in self.graph and self.graph.get(t.id).spec.parent is None:
                # Running: told with its final. (A split's subtask id is taken: refused below.)
                self._watchers.setdefault(t.id, []).append(recipient)
                pending.add(t.id)
            else:
                new.append(t)
        if known:
            self._out.append(DeliverFinals(tuple(known), store=False))
        batch = _Batch(event.token, pending | {t.id for t in new})
        if not batch.waiting:
            self._out.append(AckSubmission(event.token))
            return
        for task_id in batch.waiting:
            self._batches.setdefault(task_id, []).append(batch)
        self._submitters.update((t.id, recipient) for t in new)
        if not new:
            return
        try:
            self.graph.submit([self._spec(t) for t in new], now=now)
        except (InvalidTask, RobeingError) as exc:
            finals = [
                FinalResult(
                    t.id,
                    "failed",
                    error=f"rejected at submit: {exc}",
                    finished_at=now,
                    submitter=submitter,
                )
                for t in new
            ]
            self._deliver(finals, now)
            return
        for t in new:
            self._progress[t.id] = (0, max(1, len(self.graph.get(t.id).children)))

    def _spec(self, t: TaskRequest) -> TaskSpec:
        skills = t.skills or ((self._skills[t.type],) if self._skills.get(t.type) else ())
        return TaskSpec(
            id=t.id,
            type=t.type,
            payload=t.payload,
            skills=frozenset(skills),
            agents=t.agents,
            deadline=t.deadline,
            priority=t.priority,
            depends_on=t.depends_on,
            max_attempts=t.max_attempts,
            resources=t.resources,
        )

    def _on_result(self, res: ResultMsg, sender: str, now: float) -> None:
        if res.epoch != self.epoch or res.task_id not in self.graph:
            self.counters["stale_results"] += 1
            return
        rec = self.graph.get(res.task_id)
        if rec.agent != sender or rec.attempt != res.attempt:  # before the deadline's check too
            self.counters["stale_results"] += 1
            return
        if rec.deadline is not None and now >= rec.deadline:
            # Past the deadline the task is expired, whatever the agent says.
            self._end_attempt(res.task_id, sender)
            self.graph.expire(now)
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
        self._end_attempt(res.task_id, sender)
        self.perf.record(
            sender,
            now=now,
            success=res.ok,
            latency=res.duration,
            deadline_met=rec.deadline is None or now <= rec.deadline,
        )
        root = rec.spec.parent
        if root is not None and root in self._progress and res.ok:
            done, total = self._progress[root]
            self._progress[root] = (done + 1, total)
            recipient = self._submitters.get(root)
            if recipient is not None and recipient[1]:
                self._notices.append(SendProgress(recipient, root, done + 1, total))

    def _on_assignment_failed(self, event: AssignmentFailed, now: float) -> None:
        log.warning(
            "assignment of %d task(s) to %s failed: %s",
            len(event.attempts),
            event.agent_id,
            event.error,
        )
        for task_id, attempt in event.attempts:
            if task_id not in self.graph:
                continue
            outcome = self.graph.fail(
                task_id, attempt, f"assignment failed: {event.error}", now=now, transient=True
            )
            if not outcome.discarded:
                self._end_attempt(task_id, event.agent_id)

    def _on_tick(self, now: float) -> None:
        self._agents_lost(self.fleet.tick(now), now)
        for task_id in self.graph.expire(now):
            self.fleet.ledger.release_request(task_id)
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval
            self._sweep_reservations()
        if self._unstored and now >= self._next_store_retry:
            self._next_store_retry = now + self.config.store_retry
            retry = [(final, ()) for final in self._unstored.values()]
            self._storing.update(self._unstored)
            self._unstored.clear()
            self._out.append(DeliverFinals(tuple(retry)))

    def _on_stored(self, task_ids: tuple[str, ...]) -> None:
        for task_id in task_ids:
            self._storing.discard(task_id)
            for batch in self._batches.pop(task_id, ()):
                batch.waiting.discard(task_id)
                if not batch.waiting:
                    self._out.append(AckSubmission(batch.token))

    def _on_not_stored(self, event: FinalsNotStored, now: float) -> None:
        log.error("could not store %d final result(s): %s", len(event.task_ids), event.error)
        for task_id in event.task_ids:
            self._storing.discard(task_id)
            final = self.finals.get(task_id)
            if final is not None:
                self._unstored[task_id] = final
        self._next_store_retry = now + self.config.store_retry

    def _agents_lost(self, lost: list[Lost], now: float) -> None:
        for item in lost:
            self.fleet.forget(item.agent_id, now)
            requeued = self.graph.agent_lost(item.agent_id, now=now)
            if requeued:
                log.warning(
                    "agent %s lost (%s); reassigning %d task(s)",
                    item.agent_id,
                    item.reason,
                    len(requeued),
                )
                self.counters["reassigned"] += len(requeued)
                # Stale assignments would only make the agent redo fenced work.
                self._out.append(PurgeAssignments(item.agent_id))
            for task_id in requeued:
                self.fleet.ledger.release_request(task_id)

    # -- dispatch and finishing ---------------------------------------------------------

    def _advance(self, now: float) -> list[Action]:
        """Assign what is ready and finish what is done; returns every action due.

        Order: progress notices (a notice that overtook its task's final would
        be dropped by the client), assignments (one message per agent per
        round), then everything else, finals last.
        """
        by_agent: dict[str, list[AssignMsg]] = {}
        priority: dict[str, int] = {}
        fleet = self.fleet
        for a in dispatch(self.graph, fleet.registry, now=now, ledger=fleet.ledger):
            by_agent.setdefault(a.agent_id, []).append(
                AssignMsg(
                    a.task_id,
                    a.attempt,
                    self.epoch,
                    a.type,
                    a.payload,
                    dict(a.dep_results),
                    a.deadline,
                    self.config.coordinator_id,
                )
            )
            priority[a.agent_id] = max(priority.get(a.agent_id, 0), a.priority)
        finished = [rec for rec in self.graph.pop_finished() if rec.spec.parent is None]
        if finished:
            self._finish(finished, now)
        out = self._notices
        out += [
            Assign(agent_id, tuple(msgs), priority[agent_id], _expiration(msgs, now))
            for agent_id, msgs in by_agent.items()
        ]
        out += self._out
        self.counters["assigned"] += sum(len(msgs) for msgs in by_agent.values())
        self._notices, self._out = [], []
        return out

    def _finish(self, records: list[TaskRecord], now: float) -> None:
        finals = []
        for rec in records:
            state = _FINAL_STATE.get(rec.state, "dead_lettered")
            submitter = self._submitters.get(rec.id, ("", ""))
            finals.append(
                FinalResult(
                    rec.id,
                    state,
                    rec.result if state == "succeeded" else None,
                    rec.reason,
                    rec.attempt,
                    now,
                    submitter[0],
                )
            )
            if state == "dead_lettered":
                self._out.append(
                    DeadLetterTask(
                        rec.id, rec.spec.type, rec.spec.payload, rec.attempt, rec.reason or ""
                    )
                )
            self._progress.pop(rec.id, None)
            for child in [*rec.children, rec.id]:
                self.fleet.ledger.release_request(child)
                if child in self.graph:
                    self.graph.forget(child)
        self._deliver(finals, now)

    def _deliver(self, finals: list[FinalResult], now: float) -> None:
        """Record ``finals`` and hand them to the shell to notify and store."""
        items = []
        for final in finals:
            self.counters[f"final_{final.state}"] += 1
            self.finals[final.task_id] = final
            self._storing.add(final.task_id)
            recipients = [r for r in self._watchers.pop(final.task_id, []) if r[1]]
            own = self._submitters.pop(final.task_id, None)
            if own is not None and own[1]:
                recipients.append(own)
            items.append((final, tuple(recipients)))
        self._out.append(DeliverFinals(tuple(items)))

    def _end_attempt(self, task_id: str, agent_id: str) -> None:
        self.fleet.ledger.release_request(task_id)
        self.fleet.registry.release(agent_id)

    def _sweep_reservations(self) -> None:
        """Free reservations whose task is no longer assigned or running."""
        live = (TaskState.ASSIGNED, TaskState.RUNNING)
        ledger = self.fleet.ledger
        for allocation in ledger.allocations():
            task_id = allocation.request_id
            if task_id not in self.graph or self.graph.get(task_id).state not in live:
                ledger.release(allocation.allocation_id)
                self.counters["reservations_swept"] += 1

    # -- queries ------------------------------------------------------------------------

    def report(self, now: float) -> dict[str, Any]:
        """What the coordinator announces in its heartbeats (read by ``robeing status``)."""
        fleet, ledger = self.fleet, self.fleet.ledger
        in_flight = {a.id: self.graph.assigned_to(a.id) for a in fleet.registry}
        return {
            "epoch": self.epoch,
            "active": self.active,
            "tasks": len(self.graph),
            "agents": len(fleet.registry),
            "health": fleet.health_report(now),
            "in_flight": {k: v for k, v in in_flight.items() if v},
            "backups_idle": fleet.idle_backups(),
            "resources": {
                "capacity": ledger.capacity().to_mapping(),
                "available": ledger.available().to_mapping(),
                "reservations": len(ledger.allocations()),
            },
            **dict(self.counters),
            **dict(fleet.counters),
        }


def _expiration(msgs: list[AssignMsg], now: float) -> float | None:
    """Expire an assignment message with its last deadline, within the broker's limit.

    An earlier deadline alone must not drop the others; each task's own
    deadline is enforced by the agent.
    """
    deadlines = [m.deadline for m in msgs if m.deadline is not None]
    if not deadlines or len(deadlines) != len(msgs):
        return None
    return min(max(max(deadlines) - now, 0.001), MAX_EXPIRATION_S)
