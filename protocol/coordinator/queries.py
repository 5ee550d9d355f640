"""What a coordinator can tell about its tasks without changing them: pure queries.

``robeing task show|list`` and the answer to a submission ask these of the
active coordinator's :class:`~.state.CoordinatorState`; its heartbeat report
counts the unfinished tasks by what they wait for (:func:`waiting_counts`).

Every unfinished task is of one *kind*, the first that applies:

============  ==========================================================
kind          the task
============  ==========================================================
dependencies  waits for tasks it depends on to succeed
retry         failed an attempt and waits out its backoff
parts         is split, and waits for its parts (each has its own kind)
skill         is ready, but no live agent has a skill it needs
resources     is ready, but no agent has the resources it needs free
queued        is ready; agents that could take it are busy
running       runs on an agent (an attempt is assigned)
============  ==========================================================

Rules:
    * A task id belongs to its submitter: a task, its parts and its final are
      described only to the submitter; a list of everyone's tasks names their
      kind but no reason or error (those may quote payloads).
    * Queries never return payloads or results (``robeing result`` fetches a
      result from the results stream, decrypted by the submitter only).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..resources import Resources, to_vec, vec_fits
from ..taskgraph import TaskRecord, TaskState

if TYPE_CHECKING:
    from ..taskmsgs import FinalResult
    from .state import CoordinatorState

__all__ = [
    "KINDS",
    "Fleet",
    "cause",
    "describe",
    "final_reason",
    "intake_answer",
    "kind",
    "list_tasks",
    "never_ran",
    "waiting_counts",
]

KINDS = ("dependencies", "retry", "parts", "skill", "resources", "queued", "running")
FINISHED = "finished"  # a filter for every terminal state
MAX_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the queries need of the fleet, gathered once per query.

    Attributes:
        agents: live agents that run tasks (the scheduler's registry).
        skills: every skill one of them offers.
        clusters: every cluster one of them is in.
        capacity: what each agent contributes to the resource pool.
        free: what each agent has free in the pool now.
    """

    agents: int
    skills: frozenset[str]
    clusters: frozenset[str | None]
    capacity: dict[str, Resources]
    free: dict[str, Resources]

    @classmethod
    def of(cls, state: CoordinatorState) -> Fleet:
        registry, ledger = state.fleet.registry, state.fleet.ledger
        agents = list(registry)
        members = ledger.agents()
        return cls(
            len(agents),
            frozenset(s for a in agents for s in a.specializations),
            frozenset(a.cluster_id for a in agents),
            {a: ledger.capacity(a) for a in members},
            {a: ledger.available(a) for a in members},
        )

    def lacks(self, skills: Collection[str], cluster: str | None = None) -> bool:
        """Whether no live agent could ever take a task needing ``skills`` (in ``cluster``)."""
        if cluster is not None and cluster not in self.clusters:
            return True
        return not self.agents or (bool(skills) and not self.skills & set(skills))

    def never_fits(self, need: Resources) -> bool:
        """Whether no agent contributes as much as ``need`` (free or not)."""
        want = to_vec(need, up=True)
        return not any(vec_fits(want, to_vec(c, up=False)) for c in self.capacity.values())

    def fits_now(self, need: Resources) -> bool:
        want = to_vec(need, up=True)
        return any(vec_fits(want, to_vec(f, up=False)) for f in self.free.values())


def kind(rec: TaskRecord, fleet: Fleet, now: float) -> str:
    """The kind of an unfinished task (see the module doc); its state for a finished one."""
    state = rec.state
    if state.terminal:
        return state.value
    if state in (TaskState.ASSIGNED, TaskState.RUNNING):
        return "running"
    if rec.merge is not None:
        return "parts"
    if state is TaskState.PENDING:
        return "dependencies" if rec.waiting else "retry"
    if fleet.lacks(rec.spec.skills, rec.spec.cluster_id):
        return "skill"
    need = rec.spec.need
    if need is not None and not fleet.fits_now(need):
        return "resources"
    return "queued"


def cause(state: CoordinatorState, rec: TaskRecord, fleet: Fleet, now: float) -> str:
    """One line saying what ``rec`` waits for, or what it does."""
    what = kind(rec, fleet, now)
    spec, graph = rec.spec, state.graph
    if what == "running":
        since = now - (rec.assigned_at if rec.assigned_at is not None else now)
        return f"running on {rec.agent}, attempt {rec.attempt}, for {since:.1f} s"
    if what == "parts":
        parts = [graph.get(c) for c in rec.children if c in graph]
        done = sum(p.state is TaskState.SUCCEEDED for p in parts)
        return f"waiting for its parts: {done} of {len(rec.children)} done"
    if what == "dependencies":
        return _unmet(state, rec.deps) or "waiting for dependencies"
    if what == "retry":
        return f"retrying in {max(0.0, rec.not_before - now):.1f} s after: {rec.reason}"
    if what == "skill":
        return _no_skill(fleet, spec.skills, spec.cluster_id)
    if what == "resources":
        return _no_room(fleet, spec.need or Resources())
    if what == "queued":
        return "queued: the agents that could take it are busy"
    return f"{what}: {rec.reason}" if rec.reason else what


def final_reason(state: CoordinatorState, rec: TaskRecord, attempts: int, now: float) -> str | None:
    """A finished task's reason; one that expired before it ever ran says what held it back."""
    if rec.state is TaskState.EXPIRED and attempts == 0:
        return f"{rec.reason}; it never ran: {never_ran(state, rec, now)}"
    return rec.reason


def never_ran(state: CoordinatorState, rec: TaskRecord, now: float) -> str:
    """What held back a task that ended before any attempt (it expired waiting)."""
    unmet = _unmet(state, rec.spec.depends_on)
    if unmet:
        return unmet
    fleet, need = Fleet.of(state), rec.spec.need
    if fleet.lacks(rec.spec.skills, rec.spec.cluster_id):
        return _no_skill(fleet, rec.spec.skills, rec.spec.cluster_id)
    if need is not None and not fleet.fits_now(need):
        return _no_room(fleet, need)
    return "the agents that could take it were busy"


def _unmet(state: CoordinatorState, deps: Iterable[str]) -> str:
    graph = state.graph
    waiting = [
        f"{d!r} ({graph.get(d).state.value})"
        for d in deps
        if d in graph and graph.get(d).state is not TaskState.SUCCEEDED
    ]
    return "waiting for dependencies: " + ", ".join(waiting) if waiting else ""


def _no_skill(fleet: Fleet, skills: Collection[str], cluster: str | None = None) -> str:
    if cluster is not None and cluster not in fleet.clusters:
        return f"waiting for a live member of cluster {cluster}: it has none"
    if not fleet.agents:
        return "waiting for an agent: no live agent runs tasks"
    return "waiting for a skill no live agent has: " + ", ".join(sorted(skills))


def _no_room(fleet: Fleet, need: Resources) -> str:
    if fleet.never_fits(need):
        largest = _largest(fleet.capacity.values())
        return (
            f"waiting for resources no agent offers: needs {_fmt(need)}; "
            f"the most one agent contributes is {largest}"
        )
    return f"waiting for resources: needs {_fmt(need)}, free now {_largest(fleet.free.values())}"


def waiting_counts(state: CoordinatorState, now: float) -> dict[str, int]:
    """Unfinished tasks (parts included) by kind: every kind, zeros too."""
    fleet = Fleet.of(state)
    counts = Counter({k: 0 for k in KINDS})
    for rec in state.graph.records():
        if not rec.state.terminal:
            counts[kind(rec, fleet, now)] += 1
    return dict(counts)


def describe(state: CoordinatorState, requester: str, task_id: str, now: float) -> dict[str, Any]:
    """``robeing task show``: one task, its parts, what each waits for.

    Returns:
        ``{"task_id", "found": False}`` for an id nobody submitted (or whose
        final is no longer kept), ``{"task_id", "found": True, "refused": why}``
        for someone else's, else the task's description.
    """
    graph = state.graph
    rec = graph.get(task_id) if task_id in graph else None
    root = rec.spec.parent if rec is not None and rec.spec.parent is not None else task_id
    owner = state.submissions.owner(root)
    if rec is None and task_id not in state.submissions.finals:
        return {"task_id": task_id, "found": False}
    if owner is not None and owner != requester:
        return {"task_id": task_id, "found": True, "refused": "it belongs to another submitter"}
    if rec is None:
        return {"found": True, **_final_row(state.submissions.finals[task_id])}
    fleet = Fleet.of(state)
    out = {"found": True, **_row(state, rec, fleet, now, detail=True)}
    out["submitter"] = owner or ""
    out["depends_on"] = list(rec.spec.depends_on)
    out["deadline"] = rec.deadline
    out["priority"] = rec.spec.priority
    if rec.children:
        out["parts"] = [
            _row(state, graph.get(c), fleet, now, detail=True) for c in rec.children if c in graph
        ]
    return out


def list_tasks(
    state: CoordinatorState,
    requester: str,
    now: float,
    *,
    states: Collection[str] = (),
    everyone: bool = False,
    limit: int = MAX_ROWS,
) -> list[dict[str, Any]]:
    """``robeing task list``: root tasks, oldest first, then finals kept, newest first.

    Args:
        states: keep rows whose state or kind is one of these (``finished``:
            every terminal state); empty keeps every unfinished task.
        everyone: every submitter's tasks (without reasons), not only the requester's.
        limit: at most this many rows.
    """
    wanted = set(states)
    fleet = Fleet.of(state)
    rows: list[dict[str, Any]] = []
    owner = state.submissions.owner
    for rec in state.graph.records():
        if rec.spec.parent is not None or rec.state.terminal:
            continue
        mine = owner(rec.id) == requester
        if not (mine or everyone):
            continue
        row = _row(state, rec, fleet, now, detail=mine)
        if not wanted or row["state"] in wanted or row["kind"] in wanted:
            rows.append({**row, "submitter": owner(rec.id) or ""})
            if len(rows) >= limit:
                return rows
    terminal = {s.value for s in TaskState if s.terminal}
    if not wanted & (terminal | {FINISHED}):
        return rows
    finals = sorted(state.submissions.finals.values(), key=lambda f: -f.finished_at)
    for final in finals:
        mine = final.submitter == requester
        if not (mine or everyone) or not (FINISHED in wanted or final.state in wanted):
            continue
        row = _final_row(final) if mine else _final_row(final, reason=False)
        rows.append({**row, "submitter": final.submitter})
        if len(rows) >= limit:
            break
    return rows


def intake_answer(
    state: CoordinatorState, task_ids: Iterable[str], now: float
) -> dict[str, dict[str, Any]]:
    """What a submitter is told right after its submission was taken, per task.

    ``parts`` (1 when not split), ``kind`` and, for a task that cannot start
    soon, ``warning``: no live agent has its skill, or no agent could ever
    hold the resources it needs. Finished ones (a resubmission) say their state.
    """
    fleet = Fleet.of(state)
    graph, finals = state.graph, state.submissions.finals
    out: dict[str, dict[str, Any]] = {}
    for task_id in task_ids:
        if task_id in graph:
            rec = graph.get(task_id)
            parts = [graph.get(c) for c in rec.children if c in graph] or [rec]
            entry: dict[str, Any] = {"parts": len(parts), "kind": kind(rec, fleet, now)}
            blocked = [p for p in parts if kind(p, fleet, now) in ("skill", "resources")]
            spec, need = rec.spec, rec.spec.need
            never = fleet.lacks(spec.skills, spec.cluster_id) or (need and fleet.never_fits(need))
            if blocked and never:
                entry["warning"] = cause(state, blocked[0], fleet, now)
            out[task_id] = entry
        elif task_id in finals:
            out[task_id] = {"state": finals[task_id].state}
    return out


# -- rows ------------------------------------------------------------------------


def _row(
    state: CoordinatorState, rec: TaskRecord, fleet: Fleet, now: float, *, detail: bool
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": rec.id,
        "type": rec.spec.type,
        "state": rec.state.value,
        "kind": kind(rec, fleet, now),
        "agent": rec.agent,
        "attempt": rec.attempt,
        "since": rec.assigned_at if rec.agent is not None else None,
    }
    if detail:
        row["detail"] = cause(state, rec, fleet, now)
    return row


def _final_row(final: FinalResult, reason: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": final.task_id,
        "state": final.state,
        "kind": final.state,
        "attempts": final.attempts,
        "finished_at": final.finished_at,
    }
    if reason and final.error:
        row["detail"] = final.error
    return row


def _fmt(r: Resources) -> str:
    return ",".join(f"{k}={v:g}" for k, v in r.to_mapping().items()) or "nothing"


def _largest(values: Iterable[Resources]) -> str:
    """The per-dimension largest of ``values`` (what one agent could offer at most)."""
    best: dict[str, float] = {}
    for r in values:
        for k, v in r.to_mapping().items():
            best[k] = max(best.get(k, 0), v)
    return ",".join(f"{k}={v:g}" for k, v in best.items()) or "nothing"
