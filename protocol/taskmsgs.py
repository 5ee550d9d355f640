"""Payloads of the task messages, validated on the way in.

Message types (all inside signed envelopes):

==================  ==============================  =====================================
type                from → to                       payload
==================  ==============================  =====================================
``task.submit``     client → task topic (durable)   :class:`Submission` (one or a batch)
``task.assign``     coordinator → agent work queue  :class:`AssignMsg`
``task.result``     agent → coordinator inbox       :class:`ResultMsg`
``task.progress``   coordinator → submitter         ``{task_id, done, total, state}``
``task.final``      coordinator → submitter/stream  :class:`FinalResult`
``task.revoke``     client → task topic             :class:`TaskQuery` (the task to cancel)
``task.query``      client → task topic             :class:`TaskQuery` (show one, or list)
``task.cancel``     coordinator → agent inbox       ``{epoch, attempts: [[task_id, attempt]]}``
==================  ==============================  =====================================

``task.revoke`` and ``task.query`` travel like submissions (to the active
coordinator through its task queue, encrypted to the coordinators) and are
answered with an ACK carrying the answer.

The fencing token of an execution is ``(epoch, attempt)``: the coordinator's
epoch and the task's attempt number. A result whose token is not the current
one is discarded, so the submitter receives exactly one result per task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .clusters.names import MAX_CLUSTER_NAME, cluster_name_problem
from .envelope import DEFAULT_LIMITS, pack
from .errors import ConfigError, DecodeError
from .fields import count, need, strings, text
from .resources import InvalidResources, Resources


def _fields(msg: Any) -> dict[str, Any]:
    """A message's fields as a map, values as they are.

    Not ``dataclasses.asdict``, which deep-copies every payload and result
    on the hot path (one copy per message, thrown away once packed).
    """
    return {name: getattr(msg, name) for name in msg.__slots__}


TERMINAL_STATES = ("succeeded", "failed", "expired", "dead_lettered", "cancelled")

# Bounds of what a task may ask for. Every field read from the wire is held to
# them before it reaches a loop bound, a broker argument or the task graph.
MAX_TASK_ID = 256
MAX_TYPE = 128
MAX_SKILLS = 64
MAX_AGENTS = 1000  # splits; the CLI has the same cap
MAX_DEPENDENCIES = 1000
MAX_ATTEMPTS = 100
MAX_DEADLINE = 2.0**40  # epoch seconds; coordinators bound deadlines relative to now
MAX_TASKS = 10_000  # tasks in one submission
# One task must fit in a submission with room for the envelope around it.
MAX_TASK_BYTES = DEFAULT_LIMITS.max_message_bytes - (64 << 10)


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One task as a submitter describes it.

    Attributes:
        id: task id (client-supplied ids make resubmission idempotent).
        type: the task type (handler name).
        payload: the handler's input.
        skills: specializations needed (any one qualifies an agent).
        agents: split across this many agents (1: not split).
        priority: 0-9, higher first when agents are scarce.
        deadline: absolute time (epoch seconds) or None.
        depends_on: ids of tasks (of the same batch or earlier) whose results it needs.
        max_attempts: executions before the task is dead-lettered (None: default).
        resources: what one execution needs from the resource pool, by
            dimension (:class:`~robeing.protocol.resources.Resources` wire
            form); it runs only on an agent with that much free.
        cluster: run it on members of this cluster (None: the default
            cluster, which the coordinator leads).
    """

    id: str
    type: str
    payload: Any = None
    skills: tuple[str, ...] = ()
    agents: int = 1
    priority: int = 5
    deadline: float | None = None
    depends_on: tuple[str, ...] = ()
    max_attempts: int | None = None
    resources: dict[str, Any] = field(default_factory=dict, hash=False)
    cluster: str | None = None

    def to_data(self) -> dict[str, Any]:
        data = _fields(self)
        data["skills"] = list(self.skills)
        data["depends_on"] = list(self.depends_on)
        if not self.resources:
            del data["resources"]  # the common case stays as small as before
        if self.cluster is None:
            del data["cluster"]
        return data

    def problems(self) -> list[str]:
        """What is out of bounds in this request (empty when nothing is).

        The one check of a task's fields: clients refuse such a request
        before sending it, coordinators fail such a task with the reason.
        """
        out = []
        if not 1 <= len(self.id) <= MAX_TASK_ID:
            out.append(f"id must be 1 to {MAX_TASK_ID} characters")
        if not 1 <= len(self.type) <= MAX_TYPE:
            out.append(f"type must be 1 to {MAX_TYPE} characters")
        if len(self.skills) > MAX_SKILLS or not all(0 < len(s) <= MAX_TYPE for s in self.skills):
            out.append(f"at most {MAX_SKILLS} skills of 1 to {MAX_TYPE} characters")
        if _bad_int(self.agents, 1, MAX_AGENTS):
            out.append(f"agents must be 1 to {MAX_AGENTS}, got {self.agents!r}")
        if _bad_int(self.priority, 0, 9):
            out.append(f"priority must be 0 to 9, got {self.priority!r}")
        if self.max_attempts is not None and _bad_int(self.max_attempts, 1, MAX_ATTEMPTS):
            out.append(f"max_attempts must be 1 to {MAX_ATTEMPTS}, got {self.max_attempts!r}")
        if self.deadline is not None and not (
            isinstance(self.deadline, int | float)
            and math.isfinite(self.deadline)
            and 0 < self.deadline < MAX_DEADLINE
        ):
            out.append(f"deadline must be a finite time, got {self.deadline!r}")
        if len(self.depends_on) > MAX_DEPENDENCIES:
            out.append(f"at most {MAX_DEPENDENCIES} dependencies")
        if self.cluster is not None and (problem := cluster_name_problem(self.cluster)):
            out.append(problem)
        return out

    @staticmethod
    def from_data(data: Any) -> TaskRequest:
        """Read a task description received from the wire (types only).

        Out-of-bounds values are kept for :meth:`problems` to report, so the
        coordinator can fail the task with the reason instead of refusing the
        whole submission.

        Raises:
            DecodeError: a field is missing or has the wrong type.
        """
        skills = strings(need(data, "skills", list, []), "skills", max_items=MAX_SKILLS + 1)
        deps = strings(
            need(data, "depends_on", list, []), "depends_on", max_items=MAX_DEPENDENCIES + 1
        )
        deadline = need(data, "deadline", (int, float), None)
        return TaskRequest(
            id=need(data, "id", str),
            type=need(data, "type", str),
            payload=data.get("payload"),
            skills=skills,
            agents=need(data, "agents", int, 1),
            priority=need(data, "priority", int, 5),
            deadline=float(deadline) if deadline is not None else None,
            depends_on=deps,
            max_attempts=need(data, "max_attempts", int, None),
            resources=_resources(data),
            cluster=text(need(data, "cluster", str, ""), "cluster", MAX_CLUSTER_NAME + 1) or None,
        )


def _bad_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high


def _resources(data: dict[str, Any]) -> dict[str, Any]:
    raw = need(data, "resources", dict, {})
    try:
        return Resources.from_mapping(raw).to_mapping()
    except InvalidResources as exc:
        raise DecodeError(f"task field 'resources': {exc}") from None


@dataclass(frozen=True, slots=True)
class Submission:
    """A batch of tasks submitted together (dependencies may span the batch)."""

    tasks: tuple[TaskRequest, ...]
    reply_to: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"tasks": [t.to_data() for t in self.tasks], "reply_to": self.reply_to}

    @staticmethod
    def from_data(data: Any) -> Submission:
        """Raises:
        DecodeError: malformed batch.
        """
        tasks = need(data, "tasks", list)
        if not tasks or len(tasks) > MAX_TASKS:
            raise DecodeError(f"a submission holds 1 to {MAX_TASKS} tasks")
        return Submission(
            tuple(TaskRequest.from_data(t) for t in tasks), need(data, "reply_to", str, None)
        )


MAX_QUERY_ROWS = 1000  # rows in one answer: they must fit in one message


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What a submitter asks the coordinator about its tasks (``task.query``, ``task.revoke``).

    Attributes:
        task_id: the task to show or cancel; None lists tasks.
        states: for a list, keep tasks in these states or kinds (empty: unfinished).
        everyone: list every submitter's tasks, not only the asker's.
        limit: at most this many rows.
    """

    task_id: str | None = None
    states: tuple[str, ...] = ()
    everyone: bool = False
    limit: int = MAX_QUERY_ROWS

    def to_data(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "states": list(self.states),
            "everyone": self.everyone,
            "limit": self.limit,
        }

    @staticmethod
    def from_data(data: Any) -> TaskQuery:
        """Raises:
        DecodeError: a field is missing, of the wrong type or out of bounds.
        """
        task_id = need(data, "task_id", str, None)
        return TaskQuery(
            task_id=None if task_id is None else text(task_id, "task_id", MAX_TASK_ID),
            states=strings(need(data, "states", list, []), "states", max_items=16, max_len=32),
            everyone=need(data, "everyone", bool, False),
            limit=count(
                need(data, "limit", int, MAX_QUERY_ROWS), "limit", low=1, high=MAX_QUERY_ROWS
            ),
        )


@dataclass(frozen=True, slots=True)
class AssignMsg:
    """An execution handed to an agent."""

    task_id: str
    attempt: int
    epoch: int
    type: str
    payload: Any
    dep_results: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    coordinator: str = ""

    def to_data(self) -> dict[str, Any]:
        return _fields(self)

    @staticmethod
    def from_data(data: Any) -> AssignMsg:
        """Raises:
        DecodeError: malformed assignment.
        """
        deadline = need(data, "deadline", (int, float), None)
        deps = need(data, "dep_results", dict, {})
        return AssignMsg(
            task_id=need(data, "task_id", str),
            attempt=need(data, "attempt", int),
            epoch=need(data, "epoch", int),
            type=need(data, "type", str),
            payload=data.get("payload"),
            dep_results=deps,
            deadline=float(deadline) if deadline is not None else None,
            coordinator=need(data, "coordinator", str),
        )


@dataclass(frozen=True, slots=True)
class ResultMsg:
    """An agent's report of one execution.

    ``error`` is data (``{"type", "message"}``), never a pickle; ``transient``
    says whether another attempt may succeed.
    """

    task_id: str
    attempt: int
    epoch: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    transient: bool = False
    duration: float = 0.0

    def to_data(self) -> dict[str, Any]:
        return _fields(self)

    @staticmethod
    def from_data(data: Any) -> ResultMsg:
        """Raises:
        DecodeError: malformed result.
        """
        return ResultMsg(
            task_id=need(data, "task_id", str),
            attempt=need(data, "attempt", int),
            epoch=need(data, "epoch", int),
            ok=need(data, "ok", bool),
            result=data.get("result"),
            error=need(data, "error", dict, None),
            transient=need(data, "transient", bool, False),
            duration=float(need(data, "duration", (int, float), 0.0)),
        )


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The one result a submitter receives for a task."""

    task_id: str
    state: str
    result: Any = None
    error: str | None = None
    attempts: int = 0
    finished_at: float = 0.0
    submitter: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    def to_data(self) -> dict[str, Any]:
        return _fields(self)

    @staticmethod
    def from_data(data: Any) -> FinalResult:
        """Raises:
        DecodeError: malformed final result.
        """
        state = need(data, "state", str)
        if state not in TERMINAL_STATES:
            raise DecodeError(f"unknown final state {state!r}")
        return FinalResult(
            task_id=need(data, "task_id", str),
            state=state,
            result=data.get("result"),
            error=need(data, "error", str, None),
            attempts=need(data, "attempts", int, 0),
            finished_at=float(need(data, "finished_at", (int, float), 0.0)),
            submitter=need(data, "submitter", str, ""),
        )


def check_submittable(requests: Sequence[TaskRequest]) -> None:
    """Refuse, before anything is sent, what no coordinator would take.

    Raises:
        ConfigError: a request out of bounds (:meth:`TaskRequest.problems`), or
            one over :data:`MAX_TASK_BYTES` encoded.
    """
    for r in requests:
        if problems := r.problems():
            raise ConfigError(f"task {r.id!r}: {'; '.join(problems)}")
        try:
            size = len(pack(r.to_data()))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"task {r.id!r}: its payload cannot be sent: {exc}") from None
        if size > MAX_TASK_BYTES:
            raise ConfigError(
                f"task {r.id!r} is {size} bytes, over the {MAX_TASK_BYTES} a submission allows"
            )
