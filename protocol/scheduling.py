"""Which agents get a task: the registry of live agents, scoring and selection.

The score and the registry are kept in one piece: ``select`` inlines the
score and prunes on its bound, so the two must change together.

Score of an eligible agent for a task (higher is better)::

    50 * (sum of its proficiency in each required skill it has)
    - 10 * load                       (in-flight units)
    + 20 * performance                (learned, in [0, 1]; see robeing.protocol.performance)
    + 15 * role rank                  (only when it matched a skill; see below)

Match: each matched skill counts, weighted by the proficiency the agent
claims in it (``--specialization analysis:0.9``; none stated counts 1.0).
Role rank: ``4 - priority`` of the certified role (specialist 2, worker 1,
messenger 0), for domain work only (a task without skills has no role
term). At 15 a level, a specialist outranks a worker of the same skill and
load, still with one task more in flight (15 > 10) but not two (15 < 20):
deep work waits briefly for the expert, then spills over; it never
outweighs a skill (30 < 50). Only agents that run the task's type qualify
(those that announced no types: any). Ties go to the lower agent id.

Invariants:
    * Only agents whose role can run tasks (``task_roles``) are indexed; an
      agent at capacity (``load >= capacity``) is in no index bucket, so it
      is never selected.
    * Every other agent sits in exactly one load level of the general pool and
      of the pool of each of its specializations.
    * :meth:`AgentRegistry.select` returns exactly what a full sort of every
      eligible agent by ``(-score, id)`` would, truncated to ``n``, but it only
      looks at the pools of the required skills, lowest load first, and stops
      at the first load level where no agent left can enter the top ``n``.
      Scoring ``k`` visited candidates costs ``O(k)``, ranking ``O(k log n)``.
    * Pure: no clock and no I/O; heartbeats, assignments and ``now`` come in
      as arguments.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from robeing.protocol.errors import ConfigError, RobeingError
from robeing.protocol.ledger import Constraints, ResourceLedger
from robeing.protocol.resources import Resources

if TYPE_CHECKING:
    from robeing.protocol.taskgraph import Assignment, TaskGraph

__all__ = [
    "DEFAULT_WEIGHTS",
    "TASK_ROLES",
    "AgentInfo",
    "AgentRegistry",
    "InvalidAgent",
    "PerformanceSource",
    "Requirements",
    "ScoreWeights",
    "TaskLike",
    "UnknownAgent",
    "dispatch",
    "role_rank",
    "score",
]

TASK_ROLES = frozenset({"worker", "specialist"})
"""Roles that run tasks; coordinators, messengers and guardians never do."""

ROLE_RANK_TOP = 4  # rank = 4 - priority: specialist 2, worker 1, messenger 0


def role_rank(priority: int) -> int:
    return max(0, ROLE_RANK_TOP - priority)


class InvalidAgent(ConfigError):
    """An agent description (usually from a heartbeat) is malformed."""


class UnknownAgent(RobeingError, KeyError):
    """No live agent with this id is registered."""


class PerformanceSource(Protocol):
    """Anything that scores an agent's past performance.

    ``score`` must return a value within ``[0, 1]``: selection stops early on
    the bound that the performance term adds at most ``weights.performance``.
    """

    def score(self, agent_id: str, now: float | None = None) -> float: ...


class TaskLike(Protocol):
    """The fields of a task that selection looks at."""

    @property
    def skills(self) -> frozenset[str]: ...
    @property
    def agents(self) -> int: ...
    @property
    def resources(self) -> Mapping[str, float]: ...
    @property
    def deadline(self) -> float | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def cluster_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Weights of the score terms (defaults from the original design).

    Raises:
        ConfigError: a weight is negative.
    """

    match: float = 50.0
    load: float = 10.0
    performance: float = 20.0
    role: float = 15.0

    def __post_init__(self) -> None:
        if min(self.match, self.load, self.performance, self.role) < 0:
            raise ConfigError(f"score weights must be >= 0, got {self!r}")


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """A live agent as its heartbeats describe it.

    Attributes:
        id: agent id. role: its role (see ``TASK_ROLES``).
        specializations: skills it offers.
        load: in-flight work units. capacity: units it accepts at once.
        cluster_id: the cluster it belongs to, if any.
        priority: its certified role's priority (1 most important).
        tasks: the task types it can run (None: not announced, any).
        proficiency: claimed level in ``[0, 1]`` per skill (absent: 1).

    Raises:
        InvalidAgent: empty id or skill, negative load or capacity, a
            priority outside 1-9 or a proficiency outside ``[0, 1]``.
    """

    id: str
    role: str
    specializations: frozenset[str] = frozenset()
    load: int = 0
    capacity: int = 1
    cluster_id: str | None = None
    priority: int = 3
    tasks: frozenset[str] | None = None
    proficiency: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "specializations", frozenset(self.specializations))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", frozenset(self.tasks))
        if not self.id or not all(self.specializations):
            raise InvalidAgent(f"agent id and specializations must be non-empty: {self!r}")
        if self.load < 0 or self.capacity < 0:
            raise InvalidAgent(f"agent {self.id!r}: load and capacity must be >= 0")
        if not 1 <= self.priority <= 9 or not all(0 <= v <= 1 for v in self.proficiency.values()):
            raise InvalidAgent(f"agent {self.id!r}: priority 1-9, proficiency in [0, 1]")

    def level(self, skills: frozenset[str]) -> float:
        """The match of ``skills``: the sum of its proficiency in each it has."""
        return sum(self.proficiency.get(s, 1.0) for s in self.specializations & skills)

    def runs(self, task_type: str | None) -> bool:
        """Whether it can run tasks of ``task_type`` (None: any will do)."""
        return task_type is None or self.tasks is None or task_type in self.tasks

    @property
    def available(self) -> bool:
        """Whether the agent can take one more unit of work."""
        return self.load < self.capacity


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a task needs from the agents that run it.

    Attributes:
        skills: specializations; an agent qualifies with any one of them.
        agents: how many agents the task needs.
        resources: resources per execution (checked by the resource ledger).
        deadline: absolute deadline, if any. priority: 0-9.
        cluster_id: only agents of this cluster qualify, if set.
        task_type: only agents that run this type qualify, if set.

    Raises:
        ConfigError: ``agents < 1``, priority outside 0-9, or an empty skill.
    """

    skills: frozenset[str] = frozenset()
    agents: int = 1
    resources: Mapping[str, float] = field(default_factory=dict, hash=False)
    deadline: float | None = None
    priority: int = 0
    cluster_id: str | None = None
    task_type: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", frozenset(self.skills))
        if self.agents < 1 or not 0 <= self.priority <= 9 or not all(self.skills):
            raise ConfigError(f"invalid requirements {self!r}")

    @classmethod
    def from_task(cls, task: TaskLike) -> Requirements:
        """Requirements analysis: what selection needs to know about ``task``.

        Raises:
            ConfigError: the task's fields are out of range.
        """
        return cls(
            skills=task.skills,
            agents=task.agents,
            resources=dict(task.resources),
            deadline=task.deadline,
            priority=task.priority,
            cluster_id=task.cluster_id,
            task_type=getattr(task, "type", None),
        )


DEFAULT_WEIGHTS = ScoreWeights()


def score(
    agent: AgentInfo,
    requirements: Requirements,
    performance: float,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> float:
    """The selection score of ``agent`` for ``requirements`` (see module doc).

    ``performance``: the agent's learned performance in ``[0, 1]``.
    """
    matched = agent.level(requirements.skills) if requirements.skills else 0.0
    rank = role_rank(agent.priority) if matched else 0
    return (
        weights.match * matched
        - weights.load * agent.load
        + weights.performance * performance
        + weights.role * rank
    )


class _NeutralPerformance:
    __slots__ = ()

    def score(self, agent_id: str, now: float | None = None) -> float:
        return 0.5


# load level -> ids of the available agents at that load
_Pool = dict[int, set[str]]


class AgentRegistry:
    """Live agents, indexed by specialization and load, and task-to-agent selection.

    Args:
        performance: learned performance per agent; neutral (0.5) if omitted.
        weights: score weights.
        task_roles: roles that may run tasks.
    """

    __slots__ = ("_agents", "_by_skill", "_general", "_performance", "_roles", "_weights")

    def __init__(
        self,
        performance: PerformanceSource | None = None,
        *,
        weights: ScoreWeights | None = None,
        task_roles: Collection[str] = TASK_ROLES,
    ) -> None:
        self._performance: PerformanceSource = (
            _NeutralPerformance() if performance is None else performance
        )
        self._weights = DEFAULT_WEIGHTS if weights is None else weights
        self._roles = frozenset(task_roles)
        self._agents: dict[str, AgentInfo] = {}
        self._general: _Pool = {}
        self._by_skill: dict[str, _Pool] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def has_available(self) -> bool:
        """Whether any task-running agent can take one more unit of work. O(1)."""
        return bool(self._general)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __iter__(self) -> Iterator[AgentInfo]:
        return iter(list(self._agents.values()))

    def get(self, agent_id: str) -> AgentInfo:
        """The registered state of an agent.

        Raises:
            UnknownAgent: no such agent.
        """
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgent(agent_id) from None

    def upsert(self, agent: AgentInfo) -> None:
        """Register an agent or replace its state (from a heartbeat). O(skills)."""
        old = self._agents.get(agent.id)
        if old is not None:
            self._unindex(old)
        self._agents[agent.id] = agent
        self._index(agent)

    def remove(self, agent_id: str) -> AgentInfo | None:
        """Forget a dead or departed agent. O(skills).

        Returns:
            Its last state, or ``None`` if it was not registered.
        """
        old = self._agents.pop(agent_id, None)
        if old is not None:
            self._unindex(old)
        return old

    def reserve(self, agent_id: str, units: int = 1) -> AgentInfo:
        """Count ``units`` more in-flight work on an agent, so a burst spreads out.

        The next heartbeat replaces the load with the agent's own count.

        Raises:
            UnknownAgent: no such agent.
        """
        agent = self.get(agent_id)
        updated = replace(agent, load=agent.load + units)
        self.upsert(updated)
        return updated

    def release(self, agent_id: str, units: int = 1) -> AgentInfo | None:
        """Count ``units`` less in-flight work (never below 0); unknown ids are ignored."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return None
        updated = replace(agent, load=max(0, agent.load - units))
        self.upsert(updated)
        return updated

    def select(
        self,
        requirements: Requirements,
        n: int,
        *,
        exclude: Collection[str] = (),
        now: float | None = None,
        admit: Callable[[str], bool] | None = None,
    ) -> list[AgentInfo]:
        """The best ``n`` eligible agents, best first (fewer if not enough qualify).

        Args:
            requirements: what the task needs.
            n: how many agents to return.
            exclude: agent ids not to return (for example, ones that already failed it).
            now: time at which learned performance is evaluated.
            admit: a further test an agent must pass (for example, that the
                task's resources fit in what it has free).

        Returns:
            Agents of a task role, below capacity, with a required skill (any,
            when none is required), a handler for the required task type and
            in the required cluster.
        """
        if n <= 0:
            return []
        skills = requirements.skills
        pools = [p for s in skills if (p := self._by_skill.get(s))] if skills else [self._general]
        levels = sorted({level for pool in pools for level in pool})
        w = self._weights
        match_w, load_w, perf_w, role_w = w.match, w.load, w.performance, w.role
        # The best score any agent at load level L could still reach.
        ceiling = match_w * len(skills) + perf_w + (role_w * ROLE_RANK_TOP if skills else 0.0)
        task_type = requirements.task_type
        excluded = exclude if isinstance(exclude, set | frozenset | dict) else set(exclude)
        cluster = requirements.cluster_id
        perf = self._performance.score
        seen: set[str] = set()
        ranked: list[tuple[float, str, AgentInfo]] = []
        top: list[float] = []  # min-heap of the n best scores so far
        for level in levels:
            # Strict: an agent reaching exactly top[0] could still win on its id.
            if len(top) == n and ceiling - load_w * level < top[0]:
                break
            for pool in pools:
                for agent_id in pool.get(level, ()):
                    if agent_id in seen:
                        continue
                    seen.add(agent_id)
                    agent = self._agents[agent_id]
                    if (
                        agent_id in excluded
                        or (cluster is not None and agent.cluster_id != cluster)
                        or not agent.runs(task_type)
                        or (admit is not None and not admit(agent_id))
                    ):
                        continue
                    # score() inlined (the load is the level): it runs for every candidate.
                    matched = agent.level(skills) if skills else 0.0
                    value = match_w * matched - load_w * level + perf_w * perf(agent_id, now)
                    if matched:
                        value += role_w * role_rank(agent.priority)
                    ranked.append((-value, agent_id, agent))
                    if len(top) < n:
                        heapq.heappush(top, value)
                    elif value > top[0]:
                        heapq.heapreplace(top, value)
        return [agent for _, _, agent in heapq.nsmallest(n, ranked)]

    # --- index maintenance ---------------------------------------------------

    def _pools_of(self, agent: AgentInfo) -> Iterator[_Pool]:
        yield self._general
        for skill in agent.specializations:
            yield self._by_skill.setdefault(skill, {})

    def _index(self, agent: AgentInfo) -> None:
        if agent.role in self._roles and agent.available:
            for pool in self._pools_of(agent):
                pool.setdefault(agent.load, set()).add(agent.id)

    def _unindex(self, agent: AgentInfo) -> None:
        if agent.role in self._roles and agent.available:
            for pool in self._pools_of(agent):
                bucket = pool[agent.load]
                bucket.discard(agent.id)
                if not bucket:
                    del pool[agent.load]
            for skill in agent.specializations:
                if not self._by_skill[skill]:
                    del self._by_skill[skill]


def dispatch(
    graph: TaskGraph,
    registry: AgentRegistry,
    *,
    now: float,
    limit: int | None = None,
    ledger: ResourceLedger | None = None,
    waiting: list[tuple[str, Resources]] | None = None,
) -> list[Assignment]:
    """Assign READY tasks to agents, highest priority first, one agent each.

    A task nobody can take now stays READY and does not block lower-priority
    tasks that other agents can take. Each assignment reserves one unit of
    load on its agent, so a burst spreads across the fleet.

    A task that needs resources goes only to an agent of ``ledger`` with
    that much free, and reserves it there under the task's id (one live
    allocation per task: the caller releases it when the attempt ends, with
    ``ledger.release_request(task_id)``; one left from an earlier attempt is
    released here). Without a
    ledger, such a task waits.

    Args:
        graph: the tasks.
        registry: the live agents.
        now: current time.
        limit: assign at most this many tasks.
        ledger: the resource pool.
        waiting: gets ``(task id, need)`` of each task that waits for resources.

    Returns:
        The assignments made, in the order they were made.
    """
    made: list[Assignment] = []
    # Requirements that found no agent in this round; they will not find one later in it.
    hopeless: set[tuple[frozenset[str], str | None, Resources | None, str]] = set()
    if not registry.has_available():
        return made  # a full fleet: do not walk the ready queue at all
    for task in graph.iter_ready(now):
        if limit is not None and len(made) >= limit:
            break
        spec, need = task.spec, task.spec.need
        key = (spec.skills, spec.cluster_id, need, spec.type)
        if key in hopeless:
            if need is not None and waiting is not None:
                waiting.append((task.id, need))
            continue
        requirements = Requirements(
            skills=spec.skills, cluster_id=spec.cluster_id, task_type=spec.type
        )
        admit = None
        if need is not None:
            if ledger is None:
                hopeless.add(key)
                continue
            ledger.release_request(task.id)  # left from an earlier attempt, which is over
            admit = functools.partial(ledger.fits, request=need)
        chosen = registry.select(requirements, 1, now=now, admit=admit)
        if not chosen:
            hopeless.add(key)
            if need is not None and waiting is not None:
                waiting.append((task.id, need))
            continue
        agent_id = chosen[0].id
        if need is not None and ledger is not None:
            ledger.allocate(task.id, need, Constraints(agents=frozenset({agent_id})))
        made.append(graph.assign(task.id, agent_id, now=now))
        registry.reserve(agent_id)
        if not registry.has_available():
            break
    return made
