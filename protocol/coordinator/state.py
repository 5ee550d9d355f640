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
    * No assignment goes to an agent declared lost or quarantined (it left the registry).
    * Reservations in the ledger never exceed what agents contribute, and a
      task holds at most one, freed when its attempt ends.
    * A submission is acknowledged only after every task in it has a final
      stored (:class:`~.events.FinalsStored`); a failed store is retried, so
      an accepted task is never acknowledged without its result on record.
      A resubmission waits too, for each task it names whose final is unstored.
    * Every submitted task ends: it succeeds, fails, dead-letters after its
      attempts, expires at its deadline, or is cancelled (:mod:`.cancels`).
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..clusters.names import DEFAULT_CLUSTER
from ..envelope import pack
from ..errors import RobeingError
from ..failure_detector import DetectorConfig
from ..leases import LEASE_PREFIX
from ..performance import PerformanceTracker
from ..resources import Resources
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
from . import queries
from .actions import AckSubmission, Action, Assign, DeadLetterTask, DeliverFinals, PurgeAssignments
from .audit import Auditor
from .cancels import cancel
from .events import (
    AssignmentFailed,
    BecameActive,
    CancelRequested,
    ConnectionClosed,
    Event,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    QuarantineChanged,
    ResultsReceived,
    SubmissionReceived,
    SummaryReceived,
    Tick,
)
from .fleet import TASK_ROLES, FleetView, Lost
from .submissions import Submissions

log = logging.getLogger(__name__)

__all__ = ["CoordinatorConfig", "CoordinatorState"]

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
        attempt_timeout: an attempt with no result after this many seconds
            failed (and is retried): a lost or swallowed assignment ends even
            when its task has no deadline.
        max_horizon: the furthest deadline accepted, seconds ahead.
        max_result_bytes: the largest final result delivered; a larger one
            fails its task (no receiver would accept the message).
    """

    coordinator_id: str
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    max_attempts: int = 3
    sweep_interval: float = 10.0
    store_retry: float = 1.0
    task_roles: frozenset[str] = TASK_ROLES
    attempt_timeout: float = 3600.0
    max_horizon: float = 30 * 24 * 3600.0
    max_result_bytes: int = (1 << 20) - (64 << 10)


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
        self.submissions = Submissions()
        # Unpredictable to agents (the shell sets the rate from the guardians' heartbeats).
        self.auditor = Auditor(rng if rng is not None else random.SystemRandom())
        self.counters: Counter[str] = Counter()
        self._skills = dict(skills or {})
        self._out: list[Action] = []
        self._notices: list[Action] = []
        self._next_sweep = 0.0
        self._next_store_retry = 0.0
        self._attempts: list[tuple[float, str, int]] = []  # (timeout at, task id, attempt)

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
        elif isinstance(event, SummaryReceived):
            self._agents_lost(self.fleet.summary(event.members, event.lost, now), now)
        elif isinstance(event, ResultsReceived):
            for res in event.results:
                self._on_result(res, event.sender, now)
        elif isinstance(event, SubmissionReceived):
            self._on_submission(event, now)
        elif isinstance(event, Tick):
            self._on_tick(now)
        elif isinstance(event, ConnectionClosed):
            lost = self.fleet.connection_closed(
                event.agent_id, event.incarnation, now, verified=event.verified
            )
            self._agents_lost(lost, now)
        elif isinstance(event, AssignmentFailed):
            self._on_assignment_failed(event, now)
        elif isinstance(event, FinalsStored):
            self._out += self.submissions.stored(event.task_ids)
        elif isinstance(event, FinalsNotStored):
            self._on_not_stored(event, now)
        elif isinstance(event, QuarantineChanged):
            self._agents_lost(self.fleet.quarantine(event.agent_id, event.quarantined), now)
        elif isinstance(event, CancelRequested):
            self._out += cancel(self, event, now)
        return self._advance(now)

    # -- events ---------------------------------------------------------------------

    def _become_active(self, event: BecameActive) -> None:
        if event.epoch < self.epoch:
            raise ValueError(f"epoch {event.epoch} is older than {self.epoch}")
        self.epoch = event.epoch
        self.submissions.restore(event.finals)
        self.active = True

    def _on_submission(self, event: SubmissionReceived, now: float) -> None:
        self.counters["submissions"] += 1
        intake = self.submissions.intake(
            event.token, event.submitter, event.submission, self._running_root
        )
        if intake.known:
            self._out.append(DeliverFinals(tuple(intake.known), store=False))
        if intake.refused is not None:
            self.counters["refused"] += len(intake.refused.tasks)
            self._out.append(intake.refused)
        if intake.ack:
            self._out.append(AckSubmission(event.token))
        bad = {t.id: why for t in intake.new if (why := self._problems(t, event.submitter, now))}
        new = [t for t in intake.new if t.id not in bad]
        ended = self.submissions.ended(new, self.graph)  # finished tasks depended on
        try:
            self.graph.submit([self._spec(t) for t in new], now=now, finished=ended)
        except (InvalidTask, RobeingError) as exc:
            bad.update((t.id, str(exc)) for t in new)
            new = []
        if bad:
            self._deliver(
                [_rejected(task_id, why, event.submitter, now) for task_id, why in bad.items()]
            )
        for t in new:
            self.submissions.started(t.id, len(self.graph.get(t.id).children))

    def _problems(self, t: TaskRequest, submitter: str, now: float) -> str:
        problems = t.problems()
        if t.deadline is not None and t.deadline > now + self.config.max_horizon:
            problems.append(f"deadline more than {self.config.max_horizon / 86400:g} days ahead")
        problems += self.submissions.foreign_dependencies(t, submitter)
        return "; ".join(problems)

    def _running_root(self, task_id: str) -> bool:
        # A split's subtask id is taken but not a task of its own: refused at submit.
        return task_id in self.graph and self.graph.get(task_id).spec.parent is None

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
            cluster_id=t.cluster or DEFAULT_CLUSTER,  # named clusters' members: theirs only
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
        met = rec.deadline is None or now <= rec.deadline
        self.perf.record(sender, now=now, success=res.ok, latency=res.duration, deadline_met=met)
        if res.ok and (audit := self.auditor.consider(rec, sender, res.result)) is not None:
            self._out.append(audit)
        root = rec.spec.parent
        if root is not None and res.ok:
            notice = self.submissions.part_done(root)
            if notice is not None:
                self._notices.append(notice)

    def _on_assignment_failed(self, event: AssignmentFailed, now: float) -> None:
        n, who = len(event.attempts), event.agent_id
        log.warning("assignment of %d task(s) to %s failed: %s", n, who, event.error)
        for task_id, attempt in event.attempts:
            if task_id not in self.graph:
                continue
            outcome = self.graph.fail(
                task_id,
                attempt,
                f"assignment failed: {event.error}",
                now=now,
                transient=not event.permanent,
                delivered=not event.undelivered,
            )
            if not outcome.discarded:
                self._end_attempt(task_id, event.agent_id)

    def _on_tick(self, now: float) -> None:
        self._agents_lost(self.fleet.tick(now), now)
        self._time_out_attempts(now)
        for task_id in self.graph.expire(now):
            self.fleet.ledger.release_request(task_id)
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval
            self._sweep_reservations()
        if now >= self._next_store_retry:
            retry = self.submissions.retry()
            if retry is not None:
                self._next_store_retry = now + self.config.store_retry
                self._out.append(retry)

    def _on_not_stored(self, event: FinalsNotStored, now: float) -> None:
        log.error("could not store %d final result(s): %s", len(event.task_ids), event.error)
        self.submissions.not_stored(event.task_ids)
        self._next_store_retry = now + self.config.store_retry

    def _time_out_attempts(self, now: float) -> None:
        """Fail attempts that went without a result for ``attempt_timeout``."""
        live = (TaskState.ASSIGNED, TaskState.RUNNING)
        while self._attempts and self._attempts[0][0] <= now:
            _, task_id, attempt = heapq.heappop(self._attempts)
            if task_id not in self.graph:
                continue
            rec = self.graph.get(task_id)
            if rec.attempt != attempt or rec.state not in live:
                continue
            agent_id = rec.agent
            timeout = self.config.attempt_timeout
            self.graph.fail(task_id, attempt, f"no result within {timeout:g} s", now=now)
            if agent_id is not None:
                self._end_attempt(task_id, agent_id)
            self.counters["attempts_timed_out"] += 1

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
        fleet, held = self.fleet, list[tuple[str, Resources]]()  # tasks waiting for resources
        for a in dispatch(self.graph, fleet.registry, now=now, ledger=fleet.ledger, waiting=held):
            by_agent.setdefault(a.agent_id, []).append(
                AssignMsg(a.task_id, a.attempt, self.epoch, a.type, a.payload,
                          dict(a.dep_results), a.deadline, self.config.coordinator_id)
            )  # fmt: skip
            priority[a.agent_id] = max(priority.get(a.agent_id, 0), a.priority)
            timeout_at = now + self.config.attempt_timeout
            heapq.heappush(self._attempts, (timeout_at, a.task_id, a.attempt))
        for task_id, need in held:  # lost a race for resources: say why, once
            if (note := self.submissions.waiting(task_id, need, fleet.ledger)) is not None:
                self._notices.append(note)
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
            state = rec.state.value
            attempts = self.graph.attempts(rec.id)
            result = rec.result if state == "succeeded" else None
            reason = queries.final_reason(self, rec, attempts, now)
            if result is not None and (size := len(pack(result))) > self.config.max_result_bytes:
                limit = self.config.max_result_bytes
                state, result = "failed", None
                reason = f"the result is {size} bytes, over the {limit} bytes a message may hold"
            finals.append(
                FinalResult(
                    rec.id,
                    state,
                    result,
                    reason,
                    attempts,
                    now,
                    self.submissions.submitter(rec.id),
                )
            )
            if state == "dead_lettered":
                self._out.append(
                    DeadLetterTask(
                        rec.id, rec.spec.type, rec.spec.payload, rec.attempt, rec.reason or ""
                    )
                )
            for child in [*rec.children, rec.id]:
                self.fleet.ledger.release_request(child)
                if child in self.graph:
                    self.graph.forget(child)
        self._deliver(finals)

    def _deliver(self, finals: list[FinalResult]) -> None:
        """Record ``finals`` and hand them to the shell to notify and store."""
        for final in finals:
            self.counters[f"final_{final.state}"] += 1
        self._out.append(self.submissions.finished(finals))

    def _end_attempt(self, task_id: str, agent_id: str) -> None:
        self.fleet.ledger.release_request(task_id)
        self.fleet.registry.release(agent_id)

    def _sweep_reservations(self) -> None:
        """Free reservations whose task is no longer assigned or running."""
        live = (TaskState.ASSIGNED, TaskState.RUNNING)
        ledger = self.fleet.ledger
        for allocation in ledger.allocations():
            task_id = allocation.request_id
            if task_id.startswith(LEASE_PREFIX):
                continue  # a pool lease: it ends on release or TTL
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
            "waiting": queries.waiting_counts(self, now),
            "backups_idle": fleet.idle_backups(),
            "quarantined": sorted(fleet.blocked)[:500],
            "resources": {
                "capacity": ledger.capacity().to_mapping(),
                "available": ledger.available().to_mapping(),
                "reservations": len(ledger.allocations()),
            },
            **dict(self.counters),
            **dict(fleet.counters),
        }


def _rejected(task_id: str, why: str, submitter: str, now: float) -> FinalResult:
    return FinalResult(
        task_id, "failed", error=f"rejected at submit: {why}", finished_at=now, submitter=submitter
    )


def _expiration(msgs: list[AssignMsg], now: float) -> float | None:
    """Expire an assignment message with its last deadline, within the broker's limit.

    An earlier deadline alone must not drop the others; each task's own
    deadline is enforced by the agent.
    """
    deadlines = [m.deadline for m in msgs if m.deadline is not None]
    if not deadlines or len(deadlines) != len(msgs):
        return None
    return min(max(max(deadlines) - now, 0.001), MAX_EXPIRATION_S)
