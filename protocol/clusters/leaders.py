"""Who leads a named cluster: the original weighted score, with a margin against flapping.

Each member is scored from what its own signed heartbeats say, normalised
within the cluster to ``[0, 1]`` per criterion, and weighted as in the
original ``elect_leader``::

    score = 0.3 * experience + 0.3 * reliability + 0.2 * resources + 0.2 * availability

* **experience** — tasks it completed (its ``attempts.succeeded`` count)
  divided by the most any live member completed; 0 for everyone when
  nobody completed any.
* **reliability** — its success rate with a prior of one success and one
  failure, ``(succeeded + 1) / (succeeded + failed + 2)`` (0.5 with no
  history), divided by ``1 + restarts``, where ``restarts`` counts the new
  process starts (``started_at``) the observer saw of it.
* **resources** — its share of what the live members contribute to the
  pool: for each dimension (cpu, memory, storage, bandwidth) that someone
  contributes, its amount over the cluster's total, averaged over those
  dimensions; 0 for everyone when nobody contributes.
* **availability** — ``1 - load / capacity``, clipped to ``[0, 1]``.

Only live members (state ``alive``) are scored; the leader is the highest
total, ties to the lower id. A sitting leader that is still live keeps the
lead unless the best challenger beats it by more than ``margin``
(:data:`DEFAULT_MARGIN`), so a leader does not change with every heartbeat's
load.

Invariants:
    * Pure and deterministic: the same views, sitting leader and margin give
      the same scores and the same leader for every observer.
    * Every criterion and the total are in ``[0, 1]``.
    * The leader, when any, is a live member; with no live member there is none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..heartbeat import Heartbeat
from ..resources import DIMENSIONS, Resources

__all__ = [
    "DEFAULT_MARGIN",
    "WEIGHTS",
    "LeaderScore",
    "MemberView",
    "choose_leader",
    "member_view",
    "score_members",
]

WEIGHTS = {"experience": 0.3, "reliability": 0.3, "resources": 0.2, "availability": 0.2}
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class MemberView:
    """What an observer knows of one member, from its latest heartbeat.

    Attributes:
        agent_id: the member. alive: its heartbeats say ``alive``.
        succeeded, failed: task attempts it completed and failed (its counters).
        restarts: new process starts the observer saw of it.
        load, capacity: in-flight units and how many it accepts.
        resources: what it contributes to the pool (None: nothing).
    """

    agent_id: str
    alive: bool = True
    succeeded: int = 0
    failed: int = 0
    restarts: int = 0
    load: int = 0
    capacity: int = 1
    resources: Resources | None = None


@dataclass(frozen=True, slots=True)
class LeaderScore:
    """A member's four normalised criteria and their weighted total."""

    experience: float
    reliability: float
    resources: float
    availability: float

    @property
    def total(self) -> float:
        return (
            WEIGHTS["experience"] * self.experience
            + WEIGHTS["reliability"] * self.reliability
            + WEIGHTS["resources"] * self.resources
            + WEIGHTS["availability"] * self.availability
        )

    def to_data(self) -> dict[str, float]:
        return {
            "experience": round(self.experience, 4),
            "reliability": round(self.reliability, 4),
            "resources": round(self.resources, 4),
            "availability": round(self.availability, 4),
            "total": round(self.total, 4),
        }


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def score_members(members: Iterable[MemberView]) -> dict[str, LeaderScore]:
    """The score of every live member (see the module doc for each criterion)."""
    live = sorted((m for m in members if m.alive), key=lambda m: m.agent_id)
    most = max((max(0, m.succeeded) for m in live), default=0)
    totals = {d: 0.0 for d in DIMENSIONS}
    for m in live:
        if m.resources is not None:
            for d in DIMENSIONS:
                totals[d] += float(getattr(m.resources, d))
    dims = [d for d in DIMENSIONS if totals[d] > 0]
    out = {}
    for m in live:
        ok, bad = max(0, m.succeeded), max(0, m.failed)
        share = 0.0
        if dims and m.resources is not None:
            share = sum(float(getattr(m.resources, d)) / totals[d] for d in dims) / len(dims)
        out[m.agent_id] = LeaderScore(
            experience=ok / most if most else 0.0,
            reliability=_clip((ok + 1) / (ok + bad + 2) / (1 + max(0, m.restarts))),
            resources=_clip(share),
            availability=_clip(1 - m.load / m.capacity) if m.capacity > 0 else 0.0,
        )
    return out


def choose_leader(
    scores: Mapping[str, LeaderScore], sitting: str | None = None, margin: float = DEFAULT_MARGIN
) -> str | None:
    """The leader given ``scores`` (live members only) and the ``sitting`` leader.

    Returns:
        The best scored member (ties to the lower id), unless ``sitting`` is
        scored and the best beats it by no more than ``margin``: then
        ``sitting``. None when nobody is scored.
    """
    if not scores:
        return None
    best = min(scores, key=lambda a: (-scores[a].total, a))
    held = scores.get(sitting) if sitting is not None else None
    if held is not None and scores[best].total - held.total <= margin:
        return sitting
    return best


def member_view(agent_id: str, beat: Heartbeat, restarts: int = 0) -> MemberView:
    """A member as its heartbeat describes it (task counts from its ``attempts`` section).

    A malformed ``tasks`` section counts as no history: the section is the
    agent's own claim, and a lie there can only make it look less experienced.
    """
    section = beat.extras.get("attempts", {})
    ok, bad = section.get("succeeded", 0), section.get("failed", 0)
    valid = all(type(v) is int and 0 <= v < 2**53 for v in (ok, bad))
    return MemberView(
        agent_id,
        alive=beat.state == "alive",
        succeeded=ok if valid else 0,
        failed=bad if valid else 0,
        restarts=restarts,
        load=beat.load,
        capacity=beat.capacity,
        resources=beat.resources,
    )
