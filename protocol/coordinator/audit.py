"""Which finished attempts a guardian validates: the coordinator samples them (pure).

The coordinator alone sees every result as reported, so it samples: a
fraction ``rate`` of successful attempts (the highest ``--verify-rate`` the
live guardians announce; 0 while there is none), drawn with the machine's
own randomness so no agent can tell which of its results will be checked.
Task types registered with ``verify=False`` (non-deterministic handlers)
are never sampled. A sampled attempt becomes an :class:`Audit` action; the
shell signs the coordinator's claim about it and hands it to a guardian.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..taskgraph import TaskRecord
from ..validation import sampled

__all__ = ["Audit", "Auditor"]


@dataclass(frozen=True, slots=True)
class Audit:
    """Have a guardian validate what ``agent_id`` reported for one attempt."""

    task_id: str
    attempt: int
    agent_id: str
    type: str
    payload: Any
    result: Any
    skills: frozenset[str]


@dataclass(slots=True)
class Auditor:
    """Samples successful attempts for validation.

    Attributes:
        rate: the fraction sampled (0 disables).
        skip: task types never sampled.
    """

    rng: random.Random
    rate: float = 0.0
    skip: frozenset[str] = frozenset()
    sampled: int = field(default=0)

    def consider(self, rec: TaskRecord, agent_id: str, result: Any) -> Audit | None:
        """An audit of ``rec``'s attempt by ``agent_id``, if it is sampled."""
        spec = rec.spec
        # A task that depends on others ran on their results too: not re-runnable alone.
        if spec.type in self.skip or spec.depends_on or not sampled(self.rng, self.rate):
            return None
        self.sampled += 1
        return Audit(rec.id, rec.attempt, agent_id, spec.type, spec.payload, result, spec.skills)
