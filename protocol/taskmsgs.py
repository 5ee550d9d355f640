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
==================  ==============================  =====================================

The fencing token of an execution is ``(epoch, attempt)``: the coordinator's
epoch and the task's attempt number. A result whose token is not the current
one is discarded, so the submitter receives exactly one result per task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import DecodeError
from .fields import need, strings
from .resources import InvalidResources, Resources

TERMINAL_STATES = ("succeeded", "failed", "expired", "dead_lettered")


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

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["skills"] = list(self.skills)
        data["depends_on"] = list(self.depends_on)
        if not self.resources:
            del data["resources"]  # the common case stays as small as before
        return data

    @staticmethod
    def from_data(data: Any) -> TaskRequest:
        """Validate a task description received from the wire.

        Raises:
            DecodeError: a field is missing or has the wrong type.
        """
        skills = strings(need(data, "skills", list, []), "skills")
        deps = strings(need(data, "depends_on", list, []), "depends_on")
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
        )


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
        if not tasks or len(tasks) > 10_000:
            raise DecodeError("a submission holds 1 to 10000 tasks")
        return Submission(
            tuple(TaskRequest.from_data(t) for t in tasks), need(data, "reply_to", str, None)
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
        return asdict(self)

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
        return asdict(self)

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
        return asdict(self)

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
