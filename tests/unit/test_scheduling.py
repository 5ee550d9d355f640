"""Specification of robeing.protocol.scheduling: the agent registry and selection."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import ConfigError
from robeing.protocol.performance import PerformanceTracker
from robeing.protocol.scheduling import (
    AgentInfo,
    AgentRegistry,
    InvalidAgent,
    PerformanceSource,
    Requirements,
    UnknownAgent,
    dispatch,
    score,
)
from robeing.protocol.taskgraph import TaskGraph, TaskSpec, TaskState

SKILLS = ["nlp", "vision", "sql", "math"]


class FixedPerformance:
    """Performance scores set by the test; counts how often it is asked."""

    def __init__(self, scores: dict[str, float] | None = None) -> None:
        self.scores = scores or {}
        self.calls = 0

    def score(self, agent_id: str, now: float | None = None) -> float:
        self.calls += 1
        return self.scores.get(agent_id, 0.5)


@pytest.fixture
def make_registry() -> Callable[..., AgentRegistry]:
    def make(*agents: AgentInfo, performance: PerformanceSource | None = None) -> AgentRegistry:
        registry = AgentRegistry(performance)
        for agent in agents:
            registry.upsert(agent)
        return registry

    return make


def worker(agent_id: str, *skills: str, **kwargs: Any) -> AgentInfo:
    kwargs.setdefault("capacity", 4)
    return AgentInfo(agent_id, kwargs.pop("role", "worker"), frozenset(skills), **kwargs)


def ids(agents: list[AgentInfo]) -> list[str]:
    return [a.id for a in agents]


# --- agents and requirements ---------------------------------------------------


def test_agent_info_validates_and_normalizes() -> None:
    """Given skills as a list, Expect a frozenset; given a negative load or an empty id,
    Expect InvalidAgent (a ConfigError)."""
    skills: Any = ["x", "x"]
    assert AgentInfo("a", "worker", skills).specializations == frozenset({"x"})
    bad_fields: list[dict[str, Any]] = [
        {"id": ""},
        {"load": -1},
        {"capacity": -1},
        {"specializations": {""}},
    ]
    for bad in bad_fields:
        with pytest.raises(InvalidAgent):
            AgentInfo(**{"id": "a", "role": "worker", **bad})
    assert issubclass(InvalidAgent, ConfigError)


def test_requirements_from_task() -> None:
    """Given a task, Expect its skills, agents, resources, deadline, priority and cluster."""
    task = TaskSpec(
        id="t",
        type="job",
        skills=frozenset({"nlp"}),
        agents=3,
        resources={"cpu": 2},
        deadline=99.0,
        priority=7,
        cluster_id="eu",
    )
    assert Requirements.from_task(task) == Requirements(
        skills=frozenset({"nlp"}),
        agents=3,
        resources={"cpu": 2},
        deadline=99.0,
        priority=7,
        cluster_id="eu",
        task_type="job",
    )


@pytest.mark.parametrize("kwargs", [{"agents": 0}, {"priority": 10}, {"skills": {""}}])
def test_invalid_requirements(kwargs: dict[str, Any]) -> None:
    """Given requirements out of range, Expect ConfigError."""
    with pytest.raises(ConfigError):
        Requirements(**kwargs)


def test_score_counts_each_matched_skill_load_and_performance() -> None:
    """Given a worker with 2 of 3 required skills, load 3, performance 0.75, Expect
    50*2 - 10*3 + 20*0.75 + 15*1 (a worker's role rank) = 100; without required
    skills the match and role terms are 0."""
    agent = worker("a", "nlp", "sql", "vision", load=3)
    needs = Requirements(skills=frozenset({"nlp", "sql", "math"}))
    assert score(agent, needs, 0.75) == 100
    assert score(agent, Requirements(), 0.75) == -15


def test_a_specialist_outranks_a_worker_with_the_same_skill_and_load() -> None:
    """Given a specialist (priority 2) and a worker (3) with the same skill, Expect the
    specialist first at equal load and with one task more in flight, the worker first
    when the specialist has two more; for a task without skills, no role edge."""
    needs = Requirements(skills=frozenset({"analysis"}))
    registry = AgentRegistry()
    registry.upsert(worker("w", "analysis", priority=3))
    registry.upsert(worker("s", "analysis", role="specialist", priority=2))
    assert ids(registry.select(needs, 2)) == ["s", "w"]
    registry.reserve("s")
    assert ids(registry.select(needs, 1)) == ["s"]
    registry.reserve("s")
    assert ids(registry.select(needs, 1)) == ["w"]
    assert score(worker("s", role="specialist", priority=2), Requirements(), 0.5) == score(
        worker("w", priority=3), Requirements(), 0.5
    )


def test_proficiency_weights_the_match() -> None:
    """Given two workers with the skill, one claiming 0.5 in it, Expect the other first;
    a proficiency of 0.5 is worth 25 points less."""
    needs = Requirements(skills=frozenset({"nlp"}))
    registry = AgentRegistry()
    registry.upsert(worker("a", "nlp", proficiency={"nlp": 0.5}))
    registry.upsert(worker("b", "nlp"))
    assert ids(registry.select(needs, 2)) == ["b", "a"]
    assert score(worker("b", "nlp"), needs, 0.5) - score(
        worker("a", "nlp", proficiency={"nlp": 0.5}), needs, 0.5
    ) == pytest.approx(25)


def test_only_agents_with_the_task_types_handler_qualify() -> None:
    """Given an agent announcing its task types without 'whoami', one announcing it and one
    that announced none (an older agent), Expect the first never chosen for 'whoami'."""
    registry = AgentRegistry()
    registry.upsert(worker("a", "x", tasks=frozenset({"sort"})))
    registry.upsert(worker("b", "x", tasks=frozenset({"whoami"}), load=2))
    registry.upsert(worker("c", "x", load=3))
    needs = Requirements(skills=frozenset({"x"}), task_type="whoami")
    assert ids(registry.select(needs, 3)) == ["b", "c"]
    assert ids(registry.select(Requirements(task_type="sort"), 3)) == ["a", "c"]


# --- registry -----------------------------------------------------------------------


def test_upsert_replaces_and_remove_forgets(make_registry: Callable[..., AgentRegistry]) -> None:
    """Given an agent, When a heartbeat changes its skills, Expect selection by the new ones;
    When removed, Expect it gone and never selected."""
    registry = make_registry(worker("a", "nlp"))
    registry.upsert(worker("a", "sql"))
    assert ids(registry.select(Requirements(skills=frozenset({"sql"})), 1)) == ["a"]
    assert registry.select(Requirements(skills=frozenset({"nlp"})), 1) == []
    assert registry.remove("a") == worker("a", "sql")
    assert registry.remove("a") is None
    assert "a" not in registry and len(registry) == 0
    assert registry.select(Requirements(), 5) == []
    with pytest.raises(UnknownAgent):
        registry.get("a")


# --- selection -----------------------------------------------------------------------


def test_select_only_agents_with_a_required_skill(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given agents with various skills, When a task needs nlp or math, Expect only those
    with one of them, the one with both first."""
    registry = make_registry(
        worker("a", "nlp"), worker("b", "sql"), worker("c", "nlp", "math"), worker("d", "math")
    )
    chosen = registry.select(Requirements(skills=frozenset({"nlp", "math"})), 10)
    assert ids(chosen) == ["c", "a", "d"]


def test_without_skills_any_worker_qualifies_but_never_other_roles(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given a worker, a specialist, a coordinator and a guardian, When a task needs no skill,
    Expect the worker and the specialist only."""
    registry = make_registry(
        worker("w", "x"),
        worker("s", "y", role="specialist"),
        worker("c", role="coordinator"),
        worker("g", "x", role="guardian"),
    )
    assert ids(registry.select(Requirements(), 10)) == ["s", "w"]
    assert ids(registry.select(Requirements(skills=frozenset({"x"})), 10)) == ["w"]


def test_lower_load_and_better_performance_rank_first(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given equal skills, Expect load to dominate (10 per unit) and performance (up to 20)
    to decide between equal loads."""
    perf = FixedPerformance({"busy": 1.0, "good": 0.9, "poor": 0.1})
    registry = make_registry(
        worker("busy", "x", load=3), worker("good", "x"), worker("poor", "x"), performance=perf
    )
    assert ids(registry.select(Requirements(skills=frozenset({"x"})), 3)) == [
        "good",
        "poor",
        "busy",
    ]


def test_ties_are_broken_by_id(make_registry: Callable[..., AgentRegistry]) -> None:
    """Given identical agents registered in any order, Expect them by ascending id."""
    registry = make_registry(*(worker(i, "x") for i in ("c", "a", "d", "b")))
    assert ids(registry.select(Requirements(skills=frozenset({"x"})), 3)) == ["a", "b", "c"]


def test_a_busier_agent_that_ties_still_wins_on_its_id(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given b idle with performance 0 (score 0) and a at load 2 with performance 1 (score
    -20 + 20 = 0), When one agent is selected, Expect a: the search may not stop at the first
    load level when a later one can still tie."""
    perf = FixedPerformance({"a": 1.0, "b": 0.0})
    registry = make_registry(worker("b"), worker("a", load=2), performance=perf)
    assert ids(registry.select(Requirements(), 1)) == ["a"]


def test_agents_at_capacity_and_excluded_agents_are_not_eligible(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given a full agent, an excluded agent and a free one, Expect only the free one."""
    registry = make_registry(
        worker("full", "x", load=2, capacity=2), worker("skip", "x"), worker("free", "x", load=1)
    )
    assert ids(registry.select(Requirements(skills=frozenset({"x"})), 5, exclude=["skip"])) == [
        "free"
    ]


def test_cluster_restriction(make_registry: Callable[..., AgentRegistry]) -> None:
    """Given agents in clusters eu and us, When the task requires eu, Expect eu agents only."""
    registry = make_registry(worker("a", cluster_id="us"), worker("b", cluster_id="eu"))
    assert ids(registry.select(Requirements(cluster_id="eu"), 5)) == ["b"]


def test_edge_cases_of_n_and_unknown_skills(make_registry: Callable[..., AgentRegistry]) -> None:
    """Given two agents, Expect n=0 to select nobody, n beyond the fleet to select all and an
    unknown skill to select nobody."""
    registry = make_registry(worker("a", "x"), worker("b", "x"))
    assert registry.select(Requirements(), 0) == []
    assert len(registry.select(Requirements(), 99)) == 2
    assert registry.select(Requirements(skills=frozenset({"nope"})), 1) == []


def test_reserve_spreads_a_burst_and_release_undoes_it(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given three idle agents of capacity 2, When six one-agent tasks are placed one by one,
    each reserving its agent, Expect a round robin, then nobody left; When a unit is released
    or a heartbeat reports the real load, Expect the agent eligible again."""
    registry = make_registry(*(worker(i, "x", capacity=2) for i in ("a", "b", "c")))
    needs = Requirements(skills=frozenset({"x"}))
    placed = []
    for _ in range(6):
        (agent,) = registry.select(needs, 1)
        registry.reserve(agent.id)
        placed.append(agent.id)
    assert placed == ["a", "b", "c", "a", "b", "c"]
    assert registry.select(needs, 1) == []
    released = registry.release("b")
    assert released is not None and released.load == 1
    assert ids(registry.select(needs, 3)) == ["b"]
    registry.upsert(worker("c", "x", capacity=2, load=0))
    assert ids(registry.select(needs, 3)) == ["c", "b"]
    assert registry.release("ghost") is None
    with pytest.raises(UnknownAgent):
        registry.reserve("ghost")


def test_selection_scores_only_candidates_it_needs(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given 1000 agents over 10 skills (100 each), When a task needs one skill, Expect at
    most its 100 agents scored; When a task needs no skill and most agents are busy, Expect
    the idle ones scored and the rest never looked at."""
    perf = FixedPerformance()
    registry = make_registry(
        *(
            worker(f"a{i:04}", f"s{i % 10}", load=0 if i < 20 else 5, capacity=8)
            for i in range(1000)
        ),
        performance=perf,
    )
    assert len(registry.select(Requirements(skills=frozenset({"s3"})), 5)) == 5
    assert perf.calls <= 100
    perf.calls = 0
    assert ids(registry.select(Requirements(), 3)) == ["a0000", "a0001", "a0002"]
    assert perf.calls == 20


def test_learned_performance_changes_the_choice(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given two equal agents, When one keeps failing, Expect the other one chosen."""
    tracker = PerformanceTracker()
    registry = make_registry(worker("a", "x"), worker("b", "x"), performance=tracker)
    for t in range(5):
        tracker.record("a", now=t, success=False)
        tracker.record("b", now=t, success=True)
    assert ids(registry.select(Requirements(skills=frozenset({"x"})), 1, now=5)) == ["b"]


def naive_select(
    agents: dict[str, AgentInfo],
    requirements: Requirements,
    n: int,
    exclude: set[str],
    perf: PerformanceSource,
) -> list[str]:
    """The reference: score every agent, sort them all."""
    eligible = [
        a
        for a in agents.values()
        if a.role in ("worker", "specialist")
        and a.load < a.capacity
        and a.id not in exclude
        and (not requirements.skills or a.specializations & requirements.skills)
        and (requirements.cluster_id is None or a.cluster_id == requirements.cluster_id)
        and (a.tasks is None or requirements.task_type in (None, *a.tasks))
    ]
    eligible.sort(key=lambda a: (-score(a, requirements, perf.score(a.id)), a.id))
    return [a.id for a in eligible[:n]]


AGENT_IDS = [f"a{i}" for i in range(30)]
agent_infos = st.builds(
    AgentInfo,
    id=st.sampled_from(AGENT_IDS),
    role=st.sampled_from(["worker", "worker", "specialist", "coordinator"]),
    specializations=st.frozensets(st.sampled_from(SKILLS), max_size=3),
    load=st.integers(0, 5),
    capacity=st.integers(0, 8),
    cluster_id=st.sampled_from([None, "eu", "us"]),
    priority=st.integers(1, 9),
    tasks=st.none() | st.frozensets(st.sampled_from(["t1", "t2"]), max_size=2),
    proficiency=st.dictionaries(st.sampled_from(SKILLS), st.sampled_from([0.0, 0.3, 0.9, 1.0])),
)
operations = st.one_of(
    st.tuples(st.just("upsert"), agent_infos),
    st.tuples(st.sampled_from(["remove", "reserve", "release"]), st.sampled_from(AGENT_IDS)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fleet=st.lists(agent_infos, min_size=1, max_size=40),
    ops=st.lists(operations, max_size=40),
    performance=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=30, max_size=30),
    skills=st.frozensets(st.sampled_from([*SKILLS, "rare"]), max_size=3),
    cluster=st.sampled_from([None, None, "eu"]),
    n=st.integers(1, 8),
    exclude=st.sets(st.sampled_from(AGENT_IDS), max_size=4),
    task_type=st.sampled_from([None, "t1", "t2"]),
)
def test_property_select_matches_a_full_sort(
    fleet: list[AgentInfo],
    ops: list[tuple[str, Any]],
    performance: list[float],
    skills: frozenset[str],
    cluster: str | None,
    n: int,
    exclude: set[str],
    task_type: str | None,
) -> None:
    """Given any fleet and any sequence of heartbeats, removals, reservations and releases,
    Expect select to return exactly what scoring and sorting every agent would, and so never
    an agent at capacity, excluded, of a non-task role or without a required skill."""
    perf = FixedPerformance(dict(zip(AGENT_IDS, performance, strict=True)))
    registry = AgentRegistry(perf)
    for agent in fleet:
        registry.upsert(agent)
    for op, arg in ops:
        if op == "upsert":
            registry.upsert(arg)
        elif op == "remove":
            registry.remove(arg)
        elif op == "reserve" and arg in registry:
            registry.reserve(arg)
        elif op == "release":
            registry.release(arg)
    requirements = Requirements(skills=skills, cluster_id=cluster, task_type=task_type)
    expected = naive_select({a.id: a for a in registry}, requirements, n, exclude, perf)
    assert ids(registry.select(requirements, n, exclude=exclude)) == expected


# --- dispatch ------------------------------------------------------------------------


def test_dispatch_assigns_higher_priority_first_when_agents_are_scarce(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given one free slot and tasks of priority 1, 9 and 5, Expect the priority-9 task
    assigned and the others left READY."""
    graph = TaskGraph(rng=random.Random(0))
    graph.submit([TaskSpec("low", "job", priority=1), TaskSpec("high", "job", priority=9)], now=0)
    graph.submit(TaskSpec("mid", "job", priority=5), now=0)
    registry = make_registry(worker("w", capacity=1))
    assert [(a.task_id, a.agent_id) for a in dispatch(graph, registry, now=0)] == [("high", "w")]
    assert [r.id for r in graph.iter_ready(0)] == ["mid", "low"]


def test_dispatch_does_not_let_an_unplaceable_task_block_others(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given a high-priority task needing a skill nobody has and a low-priority one anyone
    can run, Expect the low-priority one assigned and the other still READY."""
    graph = TaskGraph(rng=random.Random(0))
    graph.submit(
        [
            TaskSpec("rare", "job", skills=frozenset({"quantum"}), priority=9),
            TaskSpec("plain", "job", priority=0),
        ],
        now=0,
    )
    made = dispatch(graph, make_registry(worker("w")), now=0)
    assert [a.task_id for a in made] == ["plain"]
    assert graph.get("rare").state is TaskState.READY


def test_dispatch_spreads_subtasks_and_honours_the_limit(
    make_registry: Callable[..., AgentRegistry],
) -> None:
    """Given a task split over 3 agents and three idle workers, Expect one subtask on each;
    with limit=2, Expect two assignments."""
    graph = TaskGraph(rng=random.Random(0))
    graph.submit(TaskSpec("t", "job", payload=[1, 2, 3], agents=3), now=0)
    registry = make_registry(*(worker(i) for i in ("a", "b", "c")))
    assert len(dispatch(graph, registry, now=0, limit=2)) == 2
    made = dispatch(graph, registry, now=0)
    assert [(a.task_id, a.agent_id) for a in made] == [("t.2", "c")]
    assert [registry.get(i).load for i in ("a", "b", "c")] == [1, 1, 1]
