"""Tasks and subtasks as a DAG: dependencies, deadlines, attempts, retries, priorities.

The graph is kept in one piece (over 500 lines): its transitions cascade into
each other (a failure fails dependents and cancels children, a success may
activate a merge step that succeeds in turn), and the invariants below hold
only across all of them together.

Lifecycle (``→`` is a transition, ``*`` any non-terminal state)::

    PENDING → READY            all dependencies SUCCEEDED (and any retry backoff is over)
    READY → ASSIGNED           assign(): the attempt number (fencing token) increments
    ASSIGNED → RUNNING         start(): the agent acknowledged the attempt
    ASSIGNED|RUNNING → SUCCEEDED          complete()
    ASSIGNED|RUNNING → PENDING            fail(transient) or agent_lost() with attempts left
    ASSIGNED|RUNNING → DEAD_LETTERED      the same, with every attempt used
    ASSIGNED|RUNNING → FAILED             fail(transient=False), e.g. a handler's Reject
    * → EXPIRED                expire(now) at or after the task's deadline, or the parent expired
    * → CANCELLED              cancel(): its submitter withdrew it; or a dependency or the
                               parent ended CANCELLED
    * → FAILED                 a dependency ended FAILED/EXPIRED/DEAD_LETTERED, or the parent
                               ended FAILED/DEAD_LETTERED (unfinished children are cancelled)

Invariants:
    * Submission is atomic: every dependency names a known task, one of the
      same batch or one the caller says has finished (``finished=``), a parent
      is known or earlier in the batch, ids are unique and the batch adds no
      cycle (:class:`CycleError`); otherwise nothing changes.
    * A task is READY only when every dependency SUCCEEDED, and then its
      ``dep_results`` holds exactly those results.
    * Only the current attempt of an ASSIGNED or RUNNING task changes its
      state; anything else returns a discarded :class:`Outcome`, changing nothing.
    * Terminal states are final: each task reaches exactly one, its result and
      reason never change after it, and :meth:`TaskGraph.pop_finished` yields
      it exactly once.
    * A task's effective deadline is at most its parent's.
    * Failure reasons name the dependency (or parent) that ended the task and
      the root cause: ``dependency 'b' failed (root cause 'a' failed: boom)``.
    * :meth:`TaskGraph.iter_ready` yields higher priority first, FIFO by
      submission within a priority.

A task needing ``N > 1`` agents is split at submission into subtasks
``"{id}.0"`` … ``"{id}.{k-1}"`` (same dependencies, one agent each) and the task
itself becomes their merge step: it depends on every subtask and, when they
all succeed, the type's merge function runs inside the graph (no agent needed)
and its value is the task's one result.

Handlers run at least once: an attempt lost with its agent is run again, so
handlers should be idempotent; the fencing above keeps the result exactly
once. The graph keeps finished records until the caller has drained
:meth:`TaskGraph.pop_finished` and called :meth:`TaskGraph.forget`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from robeing.protocol.errors import ConfigError, RobeingError
from robeing.protocol.resources import InvalidResources, Resources

__all__ = [
    "Assignment", "CycleError", "DuplicateTask", "Finished", "InvalidTask", "Merger", "Outcome",
    "RetryPolicy", "SplitStrategy", "Splitter", "StateError", "TaskGraph", "TaskRecord",
    "TaskSpec", "TaskState", "UnknownDependency", "UnknownTask", "merge_results", "split_list",
]  # fmt: skip

Splitter = Callable[[Any, int], Sequence[Any]]
"""``split(payload, n)`` → the payloads of the subtasks, in order."""
Merger = Callable[[Mapping[str, Any]], Any]
"""``merge({subtask_id: result, ...})`` (in subtask order) → the task's result."""


class InvalidTask(ConfigError):
    """A task description or a submission is invalid; nothing was submitted."""


class DuplicateTask(InvalidTask):
    """A task id is already known or repeated in the batch."""


class UnknownDependency(InvalidTask):
    """A dependency or parent names no known task and none of the batch."""


class CycleError(InvalidTask):
    """The batch's dependencies form a cycle.

    Attributes:
        cycle: the task ids along the cycle, first id repeated at the end.
    """

    def __init__(self, cycle: Sequence[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = tuple(cycle)


class UnknownTask(RobeingError, KeyError):
    """No task with this id is known (never submitted, or forgotten)."""


class StateError(RobeingError):
    """The operation is not allowed in the task's current state (a caller bug)."""


class TaskState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the state is final."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.EXPIRED,
        TaskState.DEAD_LETTERED,
        TaskState.CANCELLED,
    }
)
_LIVE = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})


class Outcome(StrEnum):
    """What became of a report (start, result, failure) about an attempt."""

    ACCEPTED = "accepted"
    STALE = "stale"  # not the task's live attempt: superseded, requeued or bogus
    FINAL = "final"  # the task already ended; its one result stays as it was

    @property
    def discarded(self) -> bool:
        """Whether the report was ignored."""
        return self is not Outcome.ACCEPTED


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as submitted.

    Attributes:
        id: unique task id. type: handler name. payload: the handler's input.
        skills: specializations an agent needs (any one qualifies it).
        agents: number of agents; above 1 the task is split (see module doc).
        resources: resources one execution needs (admission is the ledger's job);
            ``need`` is the same, parsed, or None when it asks for nothing.
        deadline: absolute time after which the task expires; ``None``: never.
        priority: 0 (lowest) to 9 (highest).
        depends_on: ids whose results this task needs.
        parent: id of the task that spawned this one (caps the deadline).
        max_attempts: override of the graph's retry policy.
        cluster_id: restrict to agents of this cluster.

    Raises:
        InvalidTask: a field is out of range.
    """

    id: str
    type: str
    payload: Any = None
    skills: frozenset[str] = frozenset()
    agents: int = 1
    resources: Mapping[str, float] = field(default_factory=dict, hash=False)
    deadline: float | None = None
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    parent: str | None = None
    max_attempts: int | None = None
    cluster_id: str | None = None
    need: Resources | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise InvalidTask(f"task id must be a non-empty string, got {self.id!r}")
        if not self.type or not isinstance(self.type, str):
            raise InvalidTask(f"task {self.id!r}: type must be a non-empty string")
        object.__setattr__(self, "skills", frozenset(self.skills))
        object.__setattr__(self, "depends_on", tuple(dict.fromkeys(self.depends_on)))
        if any(not s or not isinstance(s, str) for s in self.skills):
            raise InvalidTask(f"task {self.id!r}: skills must be non-empty strings")
        if self.agents < 1:
            raise InvalidTask(f"task {self.id!r}: agents must be >= 1, got {self.agents}")
        if not 0 <= self.priority <= 9:
            raise InvalidTask(f"task {self.id!r}: priority must be 0-9, got {self.priority}")
        if self.deadline is not None and not math.isfinite(self.deadline):
            raise InvalidTask(f"task {self.id!r}: deadline must be finite")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise InvalidTask(f"task {self.id!r}: max_attempts must be >= 1")
        if self.resources:
            try:
                need = Resources.from_mapping(self.resources)
            except InvalidResources as exc:
                raise InvalidTask(f"task {self.id!r}: {exc}") from None
            if not need.is_zero():
                object.__setattr__(self, "need", need)


@dataclass(frozen=True, slots=True)
class Assignment:
    """An attempt handed to an agent: what the agent needs to run it."""

    task_id: str
    attempt: int
    agent_id: str
    type: str
    payload: Any
    dep_results: Mapping[str, Any]
    deadline: float | None
    priority: int


# Undelivered assignments of one task that are not counted as attempts: enough
# to ride out a broker node's loss, bounded so an agent whose work queue never
# comes back cannot keep a task forever.
MAX_UNDELIVERED = 20


@dataclass(slots=True, eq=False)
class TaskRecord:
    """The graph's view of one task. Read-only for callers.

    ``deps`` are the effective dependencies (a split task's are its subtasks),
    ``waiting`` counts those not yet SUCCEEDED, ``reason`` explains the last
    failure and ``cause`` names the task whose failure ended this one.
    ``undelivered`` counts attempts whose assignment reached no agent (its
    work queue was gone, e.g. with a lost broker node): they do not count
    against the attempts bound, up to :data:`MAX_UNDELIVERED`.
    """

    spec: TaskSpec
    seq: int
    deps: tuple[str, ...]
    deadline: float | None
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    agent: str | None = None
    result: Any = None
    reason: str | None = None
    cause: str | None = None
    assigned_at: float | None = None
    finished_at: float | None = None
    not_before: float = -math.inf
    dep_results: dict[str, Any] = field(default_factory=dict)
    waiting: int = 0
    dependents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    merge: Merger | None = None
    undelivered: int = 0

    @property
    def id(self) -> str:
        """The task id."""
        return self.spec.id


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts and exponential backoff with jitter for transient errors.

    Attributes:
        max_attempts: executions allowed before the task is dead-lettered.
        base: delay in seconds after the first failed attempt (before jitter).
        factor: growth per further attempt. cap: ceiling of the delay.
        jitter: share of the delay drawn at random: 0 none, 1 "full jitter".
    """

    max_attempts: int = 3
    base: float = 0.5
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ConfigError(f"invalid retry policy {self!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"jitter must be within [0, 1], got {self.jitter!r}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before retrying after failed attempt number ``attempt`` (1-based)."""
        # The exponent is clamped so huge attempt numbers cannot overflow a float.
        raw = min(self.cap, self.base * self.factor ** min(max(attempt - 1, 0), 64))
        return raw * (1.0 - self.jitter) + raw * self.jitter * rng.random()


def split_list(payload: Any, n: int) -> list[Any]:
    """Default split: a list/tuple into ``min(n, len)`` contiguous chunks (at least one).

    Chunk sizes differ by at most one and keep the order. Any other payload is
    given whole to each of the ``n`` subtasks.
    """
    if not isinstance(payload, list | tuple):
        return [payload] * n
    items = list(payload)
    k = max(1, min(n, len(items)))
    size, extra = divmod(len(items), k)
    chunks, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def merge_results(results: Mapping[str, Any]) -> Any:
    """Default merge: concatenate lists, sum numbers, else ``{subtask_id: result}``."""
    values = list(results.values())
    if values and all(isinstance(v, list | tuple) for v in values):
        return [item for v in values for item in v]
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sum(values)
    return dict(results)


@dataclass(frozen=True, slots=True)
class SplitStrategy:
    """How a task type is split into subtasks and how their results are merged."""

    split: Splitter = split_list
    merge: Merger = merge_results


_DEFAULT_STRATEGY = SplitStrategy()
# (record, new state, result, reason, root cause) waiting to be applied.
_Step = tuple[TaskRecord, TaskState, Any, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Finished:
    """A task that ended and was forgotten, as a later dependant sees it.

    Attributes:
        state: its terminal state. result: its result (when it succeeded).
        reason: why it did not succeed.
    """

    state: TaskState
    result: Any = None
    reason: str | None = None


class TaskGraph:
    """The coordinator's tasks, their DAG and their lifecycle.

    Args:
        retry: attempts bound and backoff for transient failures.
        strategies: split/merge functions per task type (default: lists/sums).
        rng: randomness for backoff jitter; pass a seeded one for reproducibility.
    """

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        strategies: Mapping[str, SplitStrategy] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._retry = RetryPolicy() if retry is None else retry
        self._strategies = dict(strategies) if strategies else {}
        self._rng = random.Random() if rng is None else rng
        self._records: dict[str, TaskRecord] = {}
        self._seq = 0
        # Heaps are cleaned lazily: an entry is live only while the record it
        # was pushed for (same seq) is in the state and attempt it was pushed in.
        self._ready: list[tuple[int, int, int, str]] = []  # (-priority, seq, attempt, id)
        self._delayed: list[tuple[float, int, int, str]] = []  # (not_before, seq, attempt, id)
        self._deadlines: list[tuple[float, int, str]] = []  # (deadline, seq, id)
        self._dead_deadlines = 0  # entries of finished tasks still in _deadlines (at most)
        self._by_agent: dict[str, set[str]] = {}
        self._finished: list[TaskRecord] = []

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: str) -> TaskRecord:
        """The record of a task.

        Raises:
            UnknownTask: no such task.
        """
        try:
            return self._records[task_id]
        except KeyError:
            raise UnknownTask(task_id) from None

    # --- submission --------------------------------------------------------

    def submit(
        self,
        specs: TaskSpec | Iterable[TaskSpec],
        *,
        now: float,
        finished: Mapping[str, Finished] | None = None,
    ) -> list[str]:
        """Add tasks (and the subtasks of those needing several agents) atomically.

        ``finished``: tasks that ended and were forgotten, which the batch may
        depend on: a dependant gets the result of one that succeeded, and ends
        as a dependant of a failed (or cancelled) task does.

        Returns:
            Ids of every record created, subtasks included, in creation order.

        Raises:
            DuplicateTask: an id (or a derived subtask id) already exists.
            UnknownDependency: a dependency or parent is not known.
            CycleError: the dependencies form a cycle.
            InvalidTask: a split function failed.
        """
        batch = [specs] if isinstance(specs, TaskSpec) else list(specs)
        plan = [item for spec in batch for item in self._expand(spec)]
        ended = finished or {}
        self._validate(plan, ended)
        created: list[TaskRecord] = []
        for spec, deps, merge in plan:
            deadline = spec.deadline
            if spec.parent is not None:
                cap = self._records[spec.parent].deadline
                if cap is not None and (deadline is None or cap < deadline):
                    deadline = cap
            self._seq += 1
            rec = TaskRecord(spec=spec, seq=self._seq, deps=deps, deadline=deadline, merge=merge)
            self._records[spec.id] = rec
            created.append(rec)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, rec.seq, rec.id))
        steps: list[_Step] = []
        for rec in created:
            for dep_id in rec.deps:
                if dep_id not in self._records:  # finished and forgotten (validated)
                    gone = ended[dep_id]
                    if gone.state is TaskState.SUCCEEDED:
                        rec.dep_results[dep_id] = gone.result
                    else:
                        cause = f"{dep_id!r} {gone.state}: {gone.reason}"
                        state = _follows(gone.state)
                        steps.append((rec, state, None, f"dependency {cause}", cause))
                    continue
                dep = self._records[dep_id]
                if dep.state is TaskState.SUCCEEDED:
                    rec.dep_results[dep_id] = dep.result
                elif dep.state.terminal:
                    steps.append(
                        (rec, _follows(dep.state), None, _blame(dep, "dependency"), dep.cause)
                    )
                else:
                    rec.waiting += 1
                    dep.dependents.append(rec.id)
            if rec.spec.parent is not None:
                parent = self._records[rec.spec.parent]
                parent.children.append(rec.id)
                if parent.state.terminal and parent.state is not TaskState.SUCCEEDED:
                    state = _child_follows(parent.state)
                    steps.append((rec, state, None, _blame(parent, "parent"), parent.cause))
        doomed = {step[0].id for step in steps}
        for rec in created:
            if rec.waiting == 0 and rec.id not in doomed:
                steps.extend(self._activate(rec))
        self._apply(steps, now)
        return [rec.id for rec in created]

    def _expand(self, spec: TaskSpec) -> list[tuple[TaskSpec, tuple[str, ...], Merger | None]]:
        if spec.agents == 1:
            return [(spec, spec.depends_on, None)]
        strategy = self._strategies.get(spec.type, _DEFAULT_STRATEGY)
        try:
            parts = list(strategy.split(spec.payload, spec.agents))
        except Exception as exc:
            raise InvalidTask(f"cannot split task {spec.id!r}: {exc!r}") from exc
        if not parts:
            raise InvalidTask(f"splitting task {spec.id!r} produced no subtasks")
        ids = tuple(f"{spec.id}.{i}" for i in range(len(parts)))
        return [(spec, ids, strategy.merge)] + [
            (
                replace(spec, id=sub_id, payload=part, agents=1, parent=spec.id),
                spec.depends_on,
                None,
            )
            for sub_id, part in zip(ids, parts, strict=True)
        ]

    def _validate(
        self,
        plan: Sequence[tuple[TaskSpec, tuple[str, ...], Any]],
        finished: Mapping[str, Finished],
    ) -> None:
        batch: dict[str, tuple[str, ...]] = {}
        for spec, deps, _ in plan:
            if spec.id in self._records or spec.id in batch:
                raise DuplicateTask(f"task {spec.id!r} already exists")
            parent = spec.parent
            if parent is not None and parent not in self._records and parent not in batch:
                raise UnknownDependency(f"task {spec.id!r}: unknown parent {spec.parent!r}")
            batch[spec.id] = deps
        for task_id, deps in batch.items():
            for dep in deps:
                if dep not in self._records and dep not in batch and dep not in finished:
                    raise UnknownDependency(f"task {task_id!r} depends on unknown task {dep!r}")
        # Kahn's algorithm over the batch: old tasks cannot depend on new ones,
        # so any cycle lies entirely inside the batch.
        missing = {t: sum(d in batch for d in deps) for t, deps in batch.items()}
        users: dict[str, list[str]] = {}
        for task_id, deps in batch.items():
            for dep in deps:
                if dep in batch:
                    users.setdefault(dep, []).append(task_id)
        todo = [t for t, n in missing.items() if n == 0]
        while todo:
            for user in users.get(todo.pop(), ()):
                missing[user] -= 1
                if missing[user] == 0:
                    todo.append(user)
        stuck = {t for t, n in missing.items() if n}
        if stuck:
            # Each stuck task has a stuck dependency: walking them must loop.
            path, at = [next(iter(sorted(stuck)))], {}
            while path[-1] not in at:
                at[path[-1]] = len(path) - 1
                path.append(next(d for d in batch[path[-1]] if d in stuck))
            raise CycleError(path[at[path[-1]] :])

    # --- ready queue and assignment ---------------------------------------

    def iter_ready(self, now: float) -> Iterator[TaskRecord]:
        """READY tasks, highest priority first, FIFO within a priority.

        Tasks whose retry backoff ended by ``now`` become READY first. The
        caller may :meth:`assign` tasks while iterating.
        """
        while self._delayed and self._delayed[0][0] <= now:
            _, seq, attempt, task_id = heapq.heappop(self._delayed)
            rec = self._records.get(task_id)
            if rec and rec.seq == seq and rec.state is TaskState.PENDING and rec.attempt == attempt:
                rec.state = TaskState.READY
                heapq.heappush(self._ready, (-rec.spec.priority, rec.seq, rec.attempt, task_id))
        # Pop lazily, so a caller that stops early (no free agent) pays only for
        # what it looked at; entries still READY afterwards go back in the heap.
        looked: list[tuple[int, int, int, str]] = []
        try:
            while self._ready:
                entry = heapq.heappop(self._ready)
                if not self._is_ready(entry):
                    continue  # stale: assigned, retried or finished since it was queued
                looked.append(entry)
                yield self._records[entry[3]]
        finally:
            for entry in looked:
                if self._is_ready(entry):
                    heapq.heappush(self._ready, entry)

    def _is_ready(self, entry: tuple[int, int, int, str]) -> bool:
        rec = self._records.get(entry[3])
        return (
            rec is not None
            and rec.seq == entry[1]
            and rec.state is TaskState.READY
            and rec.attempt == entry[2]
        )

    def assign(self, task_id: str, agent_id: str, *, now: float) -> Assignment:
        """Hand a READY task to an agent as a new attempt.

        Raises:
            UnknownTask: no such task.
            StateError: the task is not READY.
        """
        rec = self.get(task_id)
        if rec.state is not TaskState.READY:
            raise StateError(f"task {task_id!r} is {rec.state}, not ready")
        rec.attempt += 1
        rec.state, rec.agent, rec.assigned_at = TaskState.ASSIGNED, agent_id, now
        self._by_agent.setdefault(agent_id, set()).add(task_id)
        return Assignment(
            task_id=task_id,
            attempt=rec.attempt,
            agent_id=agent_id,
            type=rec.spec.type,
            payload=rec.spec.payload,
            dep_results=dict(rec.dep_results),
            deadline=rec.deadline,
            priority=rec.spec.priority,
        )

    # --- reports about attempts -------------------------------------------

    def _check(self, task_id: str, attempt: int) -> tuple[TaskRecord, Outcome]:
        rec = self.get(task_id)
        if attempt != rec.attempt:
            return rec, Outcome.STALE
        if rec.state.terminal:
            return rec, Outcome.FINAL
        return rec, Outcome.ACCEPTED if rec.state in _LIVE else Outcome.STALE

    def start(self, task_id: str, attempt: int, *, now: float) -> Outcome:
        """The agent acknowledged ``attempt`` and runs it (ASSIGNED → RUNNING).

        Raises:
            UnknownTask: no such task.
        """
        rec, outcome = self._check(task_id, attempt)
        if outcome is Outcome.ACCEPTED:
            rec.state = TaskState.RUNNING
        return outcome

    def complete(self, task_id: str, attempt: int, result: Any, *, now: float) -> Outcome:
        """Record the result of ``attempt``; only the live attempt's first result counts.

        Raises:
            UnknownTask: no such task.
        """
        rec, outcome = self._check(task_id, attempt)
        if outcome is Outcome.ACCEPTED:
            self._apply([(rec, TaskState.SUCCEEDED, result, None, None)], now)
        return outcome

    def fail(
        self,
        task_id: str,
        attempt: int,
        reason: str,
        *,
        now: float,
        transient: bool = True,
        delay: float | None = None,
        delivered: bool = True,
    ) -> Outcome:
        """Record that ``attempt`` failed.

        Args:
            task_id: the task. attempt: the attempt that failed.
            reason: why, kept on the record and in dead-letter reasons.
            now: current time.
            transient: retry if attempts are left; ``False`` fails the task for good.
            delay: retry delay asked for by the handler (``Retry(delay=)``);
                ``None`` uses the policy's backoff.
            delivered: ``False`` when the assignment provably reached no agent
                (the broker returned it unroutable): the attempt is retried
                without counting against the bound, at most
                :data:`MAX_UNDELIVERED` times per task.

        Raises:
            UnknownTask: no such task.
        """
        rec, outcome = self._check(task_id, attempt)
        if outcome is not Outcome.ACCEPTED:
            return outcome
        self._release_agent(rec)
        if not delivered and rec.undelivered < MAX_UNDELIVERED:
            rec.undelivered += 1
        limit = (rec.spec.max_attempts or self._retry.max_attempts) + rec.undelivered
        if not transient:
            self._apply([(rec, TaskState.FAILED, None, reason, None)], now)
        elif rec.attempt >= limit:
            why = f"gave up after {rec.attempt} attempts: {reason}"
            self._apply([(rec, TaskState.DEAD_LETTERED, None, why, None)], now)
        else:
            wait = self._retry.backoff(rec.attempt, self._rng) if delay is None else delay
            rec.reason, rec.not_before = reason, now + max(0.0, wait)
            if wait > 0:
                rec.state = TaskState.PENDING
                heapq.heappush(self._delayed, (rec.not_before, rec.seq, rec.attempt, rec.id))
            else:
                rec.state = TaskState.READY
                heapq.heappush(self._ready, (-rec.spec.priority, rec.seq, rec.attempt, rec.id))
        return outcome

    def agent_lost(self, agent_id: str, *, now: float) -> list[str]:
        """Requeue (without backoff) every live attempt of a dead agent.

        A lost attempt counts against the attempts bound, so a task that keeps
        killing its agents is dead-lettered.

        Returns:
            Ids of the affected tasks, sorted.
        """
        affected = sorted(self._by_agent.pop(agent_id, ()))
        for task_id in affected:
            rec = self._records[task_id]
            self.fail(task_id, rec.attempt, f"agent {agent_id!r} lost", now=now, delay=0.0)
        return affected

    def cancel(self, task_id: str, reason: str, *, now: float) -> list[tuple[str, int, str]]:
        """End an unfinished task as CANCELLED, with its unfinished subtasks and dependants.

        Returns:
            ``(task id, attempt, agent)`` of every attempt that was live (ASSIGNED or
            RUNNING) among them: their agents may stop, their results are stale.

        Raises:
            UnknownTask: no such task.
            StateError: the task has already finished.
        """
        rec = self.get(task_id)
        if rec.state.terminal:
            raise StateError(f"task {task_id!r} has already finished ({rec.state})")
        live = [
            (r.id, r.attempt, r.agent)
            for r in (rec, *map(self._records.get, rec.children))
            if r is not None and r.state in _LIVE and r.agent is not None
        ]
        self._apply([(rec, TaskState.CANCELLED, None, reason, None)], now)
        return live

    def attempts(self, task_id: str) -> int:
        """Attempts of a task; a split task's are the most any of its parts took.

        Raises:
            UnknownTask: no such task.
        """
        rec = self.get(task_id)
        parts = (self._records[c].attempt for c in rec.children if c in self._records)
        return max(rec.attempt, *parts, 0)

    def records(self) -> Iterator[TaskRecord]:
        """Every record the graph holds (finished ones until forgotten); read-only."""
        return iter(list(self._records.values()))

    # --- time, results, housekeeping ---------------------------------------

    def expire(self, now: float) -> list[str]:
        """Expire every unfinished task whose deadline is ``<= now``.

        Subtasks of an expired task expire with it; its dependents fail.

        Returns:
            Ids of the tasks that became EXPIRED, in deadline order.
        """
        steps: list[_Step] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq, task_id = heapq.heappop(self._deadlines)
            rec = self._records.get(task_id)
            if rec is not None and rec.seq == seq and not rec.state.terminal:
                steps.append((rec, TaskState.EXPIRED, None, "deadline passed", None))
        return [r.id for r in self._apply(steps, now) if r.state is TaskState.EXPIRED]

    def pop_finished(self) -> list[TaskRecord]:
        """Records that reached a terminal state since the previous call, in order."""
        finished, self._finished = self._finished, []
        return finished

    def assigned_to(self, agent_id: str) -> int:
        """How many live (ASSIGNED or RUNNING) attempts ``agent_id`` holds."""
        return len(self._by_agent.get(agent_id, ()))

    def forget(self, task_id: str) -> None:
        """Drop a finished task; later submissions may no longer depend on it.

        Raises:
            UnknownTask: no such task.
            StateError: the task has not finished.
        """
        if not self.get(task_id).state.terminal:
            raise StateError(f"task {task_id!r} has not finished")
        del self._records[task_id]

    # --- internals ---------------------------------------------------------

    def _release_agent(self, rec: TaskRecord) -> None:
        if rec.agent is not None:
            tasks = self._by_agent.get(rec.agent)
            if tasks is not None:
                tasks.discard(rec.id)
                if not tasks:
                    del self._by_agent[rec.agent]
        rec.agent = None

    def _drop_deadline(self) -> None:
        # Tasks usually finish long before their deadline; rebuilding the heap
        # once half of it is dead keeps it proportional to unfinished tasks at
        # amortized O(1) per finished task.
        self._dead_deadlines += 1
        if self._dead_deadlines > 64 and 2 * self._dead_deadlines > len(self._deadlines):
            self._deadlines = [
                entry
                for entry in self._deadlines
                if (rec := self._records.get(entry[2])) is not None
                and rec.seq == entry[1]
                and not rec.state.terminal
            ]
            heapq.heapify(self._deadlines)
            self._dead_deadlines = 0

    def _activate(self, rec: TaskRecord) -> list[_Step]:
        # All dependencies succeeded: a merge step runs here, anything else queues.
        if rec.merge is None:
            rec.state = TaskState.READY
            heapq.heappush(self._ready, (-rec.spec.priority, rec.seq, rec.attempt, rec.id))
            return []
        try:
            merged = rec.merge({d: rec.dep_results[d] for d in rec.deps})
        except Exception as exc:
            return [(rec, TaskState.FAILED, None, f"merge failed: {exc!r}", None)]
        return [(rec, TaskState.SUCCEEDED, merged, None, None)]

    def _apply(self, steps: list[_Step], now: float) -> list[TaskRecord]:
        """Apply terminal transitions and everything they cascade into, in order."""
        done: list[TaskRecord] = []
        stack = list(reversed(steps))
        while stack:
            rec, state, result, reason, cause = stack.pop()
            if rec.state.terminal:
                continue
            self._release_agent(rec)
            rec.state, rec.result, rec.reason, rec.finished_at = state, result, reason, now
            rec.dep_results.clear()
            done.append(rec)
            self._finished.append(rec)
            if rec.deadline is not None:
                self._drop_deadline()
            follow: list[_Step] = []
            users = [
                u for u in map(self._records.get, rec.dependents) if u and not u.state.terminal
            ]
            if state is TaskState.SUCCEEDED:
                for user in users:
                    user.dep_results[rec.id] = result
                    user.waiting -= 1
                    if user.waiting == 0 and user.state is TaskState.PENDING:
                        follow.extend(self._activate(user))
            else:
                rec.cause = cause or f"{rec.id!r} {state}: {reason}"
                why = _blame(rec, "dependency")
                follows = _follows(state)
                follow.extend((user, follows, None, why, rec.cause) for user in users)
                # Unfinished children are cancelled; a child's deadline is at most
                # its parent's, so when the parent expired the child has expired too.
                child_state = _child_follows(state)
                why = _blame(rec, "parent")
                for child in map(self._records.get, rec.children):
                    if child is not None and not child.state.terminal:
                        follow.append((child, child_state, None, why, rec.cause))
            stack.extend(reversed(follow))
        return done


def _follows(state: TaskState) -> TaskState:
    """How a dependant ends when a dependency ended in ``state`` (not SUCCEEDED)."""
    return TaskState.CANCELLED if state is TaskState.CANCELLED else TaskState.FAILED


def _child_follows(state: TaskState) -> TaskState:
    """How an unfinished subtask ends when its parent ended in ``state`` (not SUCCEEDED)."""
    if state in (TaskState.EXPIRED, TaskState.CANCELLED):
        return state
    return TaskState.FAILED


def _blame(rec: TaskRecord, relation: str) -> str:
    """Reason for a task ended by ``rec``'s failure, naming ``rec`` and the root cause."""
    own = f"{rec.id!r} {rec.state}: {rec.reason}"
    if rec.cause == own:
        return f"{relation} {own}"
    return f"{relation} {rec.id!r} {rec.state} (root cause {rec.cause})"
