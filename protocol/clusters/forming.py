"""Forming a cluster on demand: which live agents of the default cluster join it.

``robeing cluster form NAME --purpose … --skills a,b --size N`` reaches the
active coordinator, which calls :func:`choose_members` with the agents it
schedules on. The choice is the task scheduler's: an agent qualifies with any
one of the skills (any agent when none is given), and qualified agents are
ranked by :func:`robeing.protocol.scheduling.score` for a task needing those
skills, best first, ties to the lower id. Only agents of the default cluster
are taken: a member of another cluster is that cluster's.

Invariants:
    * Pure: the same candidates, performance and directory give the same
      members.
    * On any refusal nothing is chosen, so nothing moves; the error is one
      line saying what is available instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from ..errors import ConfigError
from ..scheduling import AgentInfo, Requirements, score
from .directory import ClusterDirectory
from .names import DEFAULT_CLUSTER, cluster_name_problem

__all__ = ["MAX_SIZE", "FormRefused", "choose_members"]

MAX_SIZE = 1000


class FormRefused(ConfigError):
    """A cluster cannot be formed as asked; the message says what is available."""


def choose_members(
    name: str,
    skills: Iterable[str],
    size: int,
    candidates: Iterable[AgentInfo],
    directory: ClusterDirectory,
    announced: Mapping[str, str],
    performance: Callable[[str], float],
) -> tuple[str, ...]:
    """The ``size`` best agents of the default cluster for a cluster of ``skills``.

    Args:
        name: the new cluster's name.
        skills: the skills it is formed for (empty: any agent qualifies).
        size: how many members.
        candidates: the live agents the coordinator schedules on.
        directory: the defined clusters.
        announced: every live agent's announced cluster (``CLUSTER_ID``).
        performance: an agent's learned performance in ``[0, 1]``.

    Returns:
        The chosen agents' ids, best first.

    Raises:
        FormRefused: an invalid or taken name, a size out of range, a skill
            no live agent of the default cluster has, or fewer such agents
            than ``size`` (nothing is chosen).
    """
    if (problem := cluster_name_problem(name)) is not None:
        raise FormRefused(problem)
    if name == DEFAULT_CLUSTER:
        raise FormRefused("'default' is the coordinator's own cluster; choose another name")
    if name in directory.clusters:
        c = directory.clusters[name]
        raise FormRefused(f"cluster {name!r} exists ({len(c.members)} members, formed by "
                          f"{c.formed_by}); dissolve it first or choose another name")  # fmt: skip
    if name in directory.names(announced):
        raise FormRefused(f"cluster {name!r} exists (live agents announce it as their CLUSTER_ID)")
    if not 1 <= size <= MAX_SIZE:
        raise FormRefused(f"size must be 1 to {MAX_SIZE}, got {size}")
    wanted = frozenset(skills)
    pool = [
        a
        for a in candidates
        if directory.cluster_of(a.id, announced.get(a.id, a.cluster_id or DEFAULT_CLUSTER))
        == DEFAULT_CLUSTER
    ]
    have: Counter[str] = Counter(s for a in pool for s in a.specializations)
    unknown = sorted(s for s in wanted if s not in have)
    if unknown:
        available = ", ".join(f"{s} ({n})" for s, n in sorted(have.items())) or "none"
        raise FormRefused(
            f"no live agent of the default cluster has skill(s) {', '.join(unknown)}; "
            f"available skills: {available}"
        )
    qualified = [a for a in pool if not wanted or a.specializations & wanted]
    if len(qualified) < size:
        which = f"with skills {', '.join(sorted(wanted))}" if wanted else "in all"
        ids = ", ".join(sorted(a.id for a in qualified)[:20]) or "none"
        raise FormRefused(
            f"asked for {size} agents {which}; {len(qualified)} available in the default "
            f"cluster: {ids}"
        )
    req = Requirements(skills=wanted)
    ranked = sorted(qualified, key=lambda a: (-score(a, req, performance(a.id)), a.id))
    return tuple(a.id for a in ranked[:size])
