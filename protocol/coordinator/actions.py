"""What a coordinator does: the actions :class:`~.state.CoordinatorState` returns.

The shell performs them in the order given (progress notices, then
assignments, then finals), reporting back the outcomes that matter to the
machine: a refused assignment (:class:`~.events.AssignmentFailed`) and whether
finals were stored (:class:`~.events.FinalsStored` / ``FinalsNotStored``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..taskmsgs import AssignMsg, FinalResult
from .audit import Audit

__all__ = [
    "AckSubmission",
    "Action",
    "Assign",
    "Audit",
    "CancelAnswered",
    "CancelAttempts",
    "DeadLetterTask",
    "DeliverFinals",
    "PurgeAssignments",
    "Recipient",
    "RefuseTasks",
    "SendProgress",
]

Recipient = tuple[str, str]
"""``(submitter id, reply queue)``: where a final or a progress notice goes."""


@dataclass(frozen=True, slots=True)
class Assign:
    """Hand ``messages`` to ``agent_id``'s work queue in one envelope.

    ``expiration_s`` (when every message has a deadline) bounds how long the
    broker keeps the envelope; each task's own deadline is enforced by the agent.
    """

    agent_id: str
    messages: tuple[AssignMsg, ...]
    priority: int
    expiration_s: float | None = None


@dataclass(frozen=True, slots=True)
class SendProgress:
    """Tell a submitter how many parts of a split task are done (``note``: why it waits)."""

    recipient: Recipient
    task_id: str
    done: int
    total: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class DeliverFinals:
    """Notify each final's recipients; with ``store``, then write them to the results stream.

    A stored delivery must be answered with ``FinalsStored`` or ``FinalsNotStored``
    for every task id in it: the submissions wait for it to be acknowledged.
    """

    finals: tuple[tuple[FinalResult, tuple[Recipient, ...]], ...]
    store: bool = True

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(final.task_id for final, _ in self.finals)


@dataclass(frozen=True, slots=True)
class RefuseTasks:
    """Tell a submitter why some of its tasks were not taken (no final: they are not its)."""

    recipient: Recipient
    tasks: tuple[tuple[str, str], ...]  # (task id, reason)


@dataclass(frozen=True, slots=True)
class AckSubmission:
    """Every task of submission ``token`` has a stored final: acknowledge it."""

    token: int


@dataclass(frozen=True, slots=True)
class DeadLetterTask:
    """A task used up its attempts: keep it in the dead-letter queue with the reason."""

    task_id: str
    type: str
    payload: Any
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class PurgeAssignments:
    """Drop what waits in a lost agent's work queue (its tasks were reassigned)."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class CancelAttempts:
    """Tell ``agent_id`` to stop running ``attempts`` (``(task id, attempt)``): they were cancelled.

    A courtesy: their results would be discarded as stale anyway.
    """

    agent_id: str
    attempts: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CancelAnswered:
    """The answer to a :class:`~.events.CancelRequested`.

    ``outcome``: ``cancelled`` (the task's final, state ``cancelled``, goes out
    with the same actions), ``finished`` (it had already ended), ``unknown``
    (no task of that id), ``refused`` (not the requester's, or a part of a
    split task); ``detail`` says it in words.
    """

    task_id: str
    outcome: str
    detail: str


Action = (
    Assign
    | SendProgress
    | DeliverFinals
    | RefuseTasks
    | AckSubmission
    | DeadLetterTask
    | PurgeAssignments
    | Audit
    | CancelAttempts
    | CancelAnswered
)
