"""Cancelling a task: who may, what ends with it, whom to tell.

Rules:
    * Only a task's submitter may cancel it, and only a whole task (a part of
      a split task is refused: cancel the task it belongs to).
    * An unfinished task ends ``cancelled`` with the reason ``cancelled by
      <submitter>``; so do its unfinished parts and its dependants (with a
      reason naming the cancelled task). Its submitter gets the one final,
      as for any other end.
    * Agents running an attempt of it are told (:class:`~.actions.CancelAttempts`);
      what they still report is stale, and their reservations are freed at once.
    * Every request gets one answer (:class:`~.actions.CancelAnswered`):
      ``cancelled``, ``finished`` (it had ended: nothing changes), ``refused``
      or ``unknown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .actions import Action, CancelAnswered, CancelAttempts
from .events import CancelRequested

if TYPE_CHECKING:
    from .state import CoordinatorState

__all__ = ["cancel"]


def cancel(state: CoordinatorState, event: CancelRequested, now: float) -> list[Action]:
    """Apply ``event`` to ``state``; returns the agents to tell and the answer, in order."""
    task_id, graph = event.task_id, state.graph
    rec = graph.get(task_id) if task_id in graph else None
    owner = state.submissions.owner(task_id)
    final = state.submissions.finals.get(task_id)
    out: list[Action] = []
    if rec is not None and rec.spec.parent is not None:
        outcome = "refused", f"{task_id!r} is a part of {rec.spec.parent!r}: cancel that task"
    elif owner is not None and owner != event.requester:
        outcome = "refused", f"task {task_id!r} belongs to another submitter"
    elif rec is not None and not rec.state.terminal:
        reason = f"cancelled by {event.requester}"
        by_agent: dict[str, list[tuple[str, int]]] = {}
        for part, attempt, agent_id in graph.cancel(task_id, reason, now=now):
            by_agent.setdefault(agent_id, []).append((part, attempt))
            state.fleet.ledger.release_request(part)
            state.fleet.registry.release(agent_id)
        out += [CancelAttempts(agent_id, tuple(items)) for agent_id, items in by_agent.items()]
        state.counters["cancelled"] += 1
        outcome = "cancelled", reason
    elif final is not None:
        outcome = "finished", f"task {task_id!r} already ended: {final.state}"
    else:
        outcome = "unknown", f"no task {task_id!r} (never submitted, or its final is gone)"
    out.append(CancelAnswered(task_id, *outcome))
    return out
