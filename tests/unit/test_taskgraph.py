"""Specification of robeing.protocol.taskgraph: the task DAG and its lifecycle."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import ConfigError
from robeing.protocol.taskgraph import (
    MAX_UNDELIVERED,
    Assignment,
    CycleError,
    DuplicateTask,
    InvalidTask,
    Outcome,
    RetryPolicy,
    SplitStrategy,
    StateError,
    TaskGraph,
    TaskSpec,
    TaskState,
    UnknownDependency,
    UnknownTask,
    merge_results,
    split_list,
)

S = TaskState
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def make_graph() -> Callable[..., TaskGraph]:
    def make(**kwargs: Any) -> TaskGraph:
        kwargs.setdefault("rng", random.Random(7))
        return TaskGraph(**kwargs)

    return make


@pytest.fixture
def graph(make_graph: Callable[..., TaskGraph]) -> TaskGraph:
    return make_graph()


def spec(task_id: str, *deps: str, **kwargs: Any) -> TaskSpec:
    return TaskSpec(id=task_id, type=kwargs.pop("type", "job"), depends_on=deps, **kwargs)


def run(graph: TaskGraph, task_id: str, now: float = 0.0, agent: str = "w1") -> Assignment:
    """Assign a READY task and acknowledge it."""
    assignment = graph.assign(task_id, agent, now=now)
    assert graph.start(task_id, assignment.attempt, now=now) is Outcome.ACCEPTED
    return assignment


def finish(graph: TaskGraph, task_id: str, result: Any = None, now: float = 0.0) -> None:
    assignment = run(graph, task_id, now)
    assert graph.complete(task_id, assignment.attempt, result, now=now) is Outcome.ACCEPTED


# --- task descriptions --------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": ""},
        {"type": ""},
        {"agents": 0},
        {"priority": 10},
        {"priority": -1},
        {"deadline": math.nan},
        {"max_attempts": 0},
        {"skills": {""}},
        {"resources": {"cpu": -1}},
    ],
)
def test_invalid_spec_is_rejected(kwargs: dict[str, Any]) -> None:
    """Given a field out of range, When a TaskSpec is built, Expect InvalidTask (a ConfigError)."""
    fields: dict[str, Any] = {"id": "t", "type": "job", **kwargs}
    with pytest.raises(InvalidTask):
        TaskSpec(**fields)
    assert issubclass(InvalidTask, ConfigError)


def test_spec_normalizes_skills_and_duplicate_dependencies() -> None:
    """Given skills as a list and a repeated dependency, Expect a frozenset and one dependency."""
    skills: Any = ["nlp", "nlp"]
    task = TaskSpec(id="t", type="job", skills=skills, depends_on=("a", "a", "b"))
    assert task.skills == frozenset({"nlp"})
    assert task.depends_on == ("a", "b")


# --- submission and dependencies ---------------------------------------------


def test_task_without_dependencies_is_ready(graph: TaskGraph) -> None:
    """Given no dependencies, When submitted, Expect READY."""
    assert graph.submit(spec("a"), now=0) == ["a"]
    assert graph.get("a").state is S.READY


def test_subtask_becomes_ready_only_when_all_dependencies_finished(graph: TaskGraph) -> None:
    """Given c depends on a and b, When only a finishes, Expect c PENDING; When b too, READY
    with both results."""
    graph.submit([spec("a"), spec("b"), spec("c", "a", "b")], now=0)
    finish(graph, "a", result=1)
    assert graph.get("c").state is S.PENDING
    finish(graph, "b", result=2)
    assert graph.get("c").state is S.READY
    assignment = graph.assign("c", "w1", now=0)
    assert assignment.dep_results == {"a": 1, "b": 2}


def test_dependency_declared_later_in_the_same_batch_is_accepted(graph: TaskGraph) -> None:
    """Given a batch whose first task depends on its second, Expect both accepted."""
    graph.submit([spec("b", "a"), spec("a")], now=0)
    assert (graph.get("a").state, graph.get("b").state) == (S.READY, S.PENDING)


def test_unknown_dependency_rejects_the_whole_batch(graph: TaskGraph) -> None:
    """Given a batch where one task depends on an unknown id, Expect UnknownDependency
    and nothing submitted."""
    with pytest.raises(UnknownDependency, match="'ghost'"):
        graph.submit([spec("a"), spec("b", "ghost")], now=0)
    assert len(graph) == 0


def test_duplicate_ids_are_rejected(graph: TaskGraph) -> None:
    """Given an existing id or an id repeated in a batch, Expect DuplicateTask."""
    graph.submit(spec("a"), now=0)
    with pytest.raises(DuplicateTask):
        graph.submit(spec("a"), now=0)
    with pytest.raises(DuplicateTask):
        graph.submit([spec("b"), spec("b")], now=0)
    assert len(graph) == 1


@pytest.mark.parametrize(
    ("batch", "cycle"),
    [
        ([spec("a", "a")], ("a", "a")),
        ([spec("a", "b"), spec("b", "a")], ("a", "b", "a")),
        ([spec("x"), spec("a", "c", "x"), spec("b", "a"), spec("c", "b")], ("a", "c", "b", "a")),
    ],
)
def test_cycles_are_rejected_at_submit(
    graph: TaskGraph, batch: list[TaskSpec], cycle: tuple[str, ...]
) -> None:
    """Given a batch whose dependencies loop, Expect CycleError naming the loop, nothing
    submitted."""
    with pytest.raises(CycleError) as caught:
        graph.submit(batch, now=0)
    assert caught.value.cycle == cycle
    assert isinstance(caught.value, ConfigError)
    assert len(graph) == 0


def test_dependency_on_a_finished_task_gets_its_result_at_once(graph: TaskGraph) -> None:
    """Given a succeeded task a, When b depending on a is submitted, Expect b READY with a's
    result."""
    graph.submit(spec("a"), now=0)
    finish(graph, "a", result="A")
    graph.submit(spec("b", "a"), now=1)
    assert graph.assign("b", "w1", now=1).dep_results == {"a": "A"}


def test_dependency_on_a_failed_task_fails_at_once(graph: TaskGraph) -> None:
    """Given a failed task a, When b depending on a is submitted, Expect b FAILED naming a."""
    graph.submit(spec("a"), now=0)
    graph.fail("a", run(graph, "a").attempt, "bad input", now=0, transient=False)
    graph.submit(spec("b", "a"), now=1)
    record = graph.get("b")
    assert record.state is S.FAILED
    assert record.reason == "dependency 'a' failed: bad input"


def test_failure_fails_dependents_transitively_naming_the_dependency(graph: TaskGraph) -> None:
    """Given a <- b <- c and an independent d, When a is rejected, Expect b and c FAILED with
    reasons naming their failed dependency and the root cause; d untouched."""
    graph.submit([spec("a"), spec("b", "a"), spec("c", "b"), spec("d")], now=0)
    graph.fail("a", run(graph, "a").attempt, "boom", now=1, transient=False)
    assert graph.get("b").reason == "dependency 'a' failed: boom"
    assert graph.get("c").reason == "dependency 'b' failed (root cause 'a' failed: boom)"
    assert graph.get("c").state is S.FAILED
    assert graph.get("d").state is S.READY


def test_assigning_a_task_that_is_not_ready_is_a_caller_error(graph: TaskGraph) -> None:
    """Given a PENDING task, When assigned, Expect StateError; unknown ids raise UnknownTask."""
    graph.submit([spec("a"), spec("b", "a")], now=0)
    with pytest.raises(StateError):
        graph.assign("b", "w1", now=0)
    with pytest.raises(UnknownTask):
        graph.assign("nope", "w1", now=0)
    with pytest.raises(UnknownTask):
        graph.complete("nope", 1, None, now=0)


# --- attempts, fencing, exactly one result -----------------------------------


def test_every_assignment_increments_the_attempt(graph: TaskGraph) -> None:
    """Given a task failing transiently, When reassigned, Expect attempts 1, 2, 3."""
    graph.submit(spec("a"), now=0)
    attempts = []
    for now in (0, 100, 200):
        list(graph.iter_ready(now))
        attempts.append(run(graph, "a", now).attempt)
        graph.fail("a", attempts[-1], "flaky", now=now)
    assert attempts == [1, 2, 3]


def test_stale_attempt_result_is_discarded(graph: TaskGraph) -> None:
    """Given attempt 1 was lost and attempt 2 is running, When attempt 1 reports a result,
    Expect STALE and no change; attempt 2's result is the task's result."""
    graph.submit(spec("a"), now=0)
    first = run(graph, "a", agent="w1")
    graph.agent_lost("w1", now=1)
    second = run(graph, "a", now=1, agent="w2")
    assert graph.complete("a", first.attempt, "old", now=2) is Outcome.STALE
    assert graph.get("a").state is S.RUNNING
    assert graph.complete("a", second.attempt, "new", now=3) is Outcome.ACCEPTED
    assert (graph.get("a").state, graph.get("a").result) == (S.SUCCEEDED, "new")


def test_result_of_a_revoked_attempt_is_stale_even_before_reassignment(graph: TaskGraph) -> None:
    """Given a task requeued after its agent was lost, When the lost attempt reports, Expect
    STALE and the task still READY."""
    graph.submit(spec("a"), now=0)
    attempt = run(graph, "a").attempt
    graph.agent_lost("w1", now=1)
    assert graph.complete("a", attempt, "late", now=2) is Outcome.STALE
    assert graph.start("a", attempt, now=2) is Outcome.STALE
    assert graph.get("a").state is S.READY


def test_exactly_one_final_result(graph: TaskGraph) -> None:
    """Given a completed task, When the result is delivered again or differs, Expect FINAL
    and the first result kept; the task is reported finished once."""
    graph.submit(spec("a"), now=0)
    attempt = run(graph, "a").attempt
    assert graph.complete("a", attempt, 1, now=1) is Outcome.ACCEPTED
    assert graph.complete("a", attempt, 2, now=2) is Outcome.FINAL
    assert graph.fail("a", attempt, "late", now=3) is Outcome.FINAL
    assert graph.get("a").result == 1
    assert [r.id for r in graph.pop_finished()] == ["a"]
    assert graph.pop_finished() == []


def test_bounded_attempts_dead_letter_with_reason(make_graph: Callable[..., TaskGraph]) -> None:
    """Given max_attempts=2, When both attempts fail transiently, Expect DEAD_LETTERED with a
    reason giving the count and the last error."""
    graph = make_graph(retry=RetryPolicy(max_attempts=2))
    graph.submit(spec("a"), now=0)
    graph.fail("a", run(graph, "a").attempt, "timeout", now=0)
    list(graph.iter_ready(1000))
    graph.fail("a", run(graph, "a", 1000).attempt, "timeout", now=1000)
    record = graph.get("a")
    assert record.state is S.DEAD_LETTERED
    assert record.reason == "gave up after 2 attempts: timeout"


def test_undelivered_assignments_do_not_use_up_attempts(
    make_graph: Callable[..., TaskGraph],
) -> None:
    """Given max_attempts=2, When assignments come back undelivered (the agent's work queue
    went with a broker node) many times, Expect the task still READY with its two real
    attempts left; and Expect the allowance bounded by MAX_UNDELIVERED."""
    graph = make_graph(retry=RetryPolicy(max_attempts=2))
    graph.submit(spec("a"), now=0)
    now = 0.0
    for _ in range(MAX_UNDELIVERED):
        now += 1000
        list(graph.iter_ready(now))
        attempt = graph.assign("a", "w1", now=now).attempt
        graph.fail("a", attempt, "no queue", now=now, delivered=False)
        assert graph.get("a").state in (S.READY, S.PENDING)
    now += 1000
    list(graph.iter_ready(now))
    graph.fail("a", run(graph, "a", now).attempt, "timeout", now=now)
    assert graph.get("a").state in (S.READY, S.PENDING), "one real attempt is left"
    now += 1000
    list(graph.iter_ready(now))
    graph.fail("a", graph.assign("a", "w1", now=now).attempt, "no queue", now=now, delivered=False)
    assert graph.get("a").state is S.DEAD_LETTERED, "past the allowance it counts"


def test_per_task_max_attempts_overrides_the_policy(graph: TaskGraph) -> None:
    """Given a task with max_attempts=1, When its one attempt fails, Expect DEAD_LETTERED."""
    graph.submit(spec("a", max_attempts=1), now=0)
    graph.fail("a", run(graph, "a").attempt, "oops", now=0)
    assert graph.get("a").state is S.DEAD_LETTERED


def test_agent_loss_requeues_at_once_and_counts_the_attempt(
    make_graph: Callable[..., TaskGraph],
) -> None:
    """Given two tasks on agent w1, When w1 is lost, Expect both READY again immediately;
    a task that keeps losing its agent is dead-lettered."""
    graph = make_graph(retry=RetryPolicy(max_attempts=2))
    graph.submit([spec("a"), spec("b")], now=0)
    run(graph, "a")
    run(graph, "b")
    assert graph.agent_lost("w1", now=1) == ["a", "b"]
    assert [r.id for r in graph.iter_ready(1)] == ["a", "b"]
    run(graph, "a", 1, agent="w2")
    graph.agent_lost("w2", now=2)
    assert graph.get("a").state is S.DEAD_LETTERED
    assert graph.get("a").reason == "gave up after 2 attempts: agent 'w2' lost"


def test_transient_failure_waits_for_backoff(make_graph: Callable[..., TaskGraph]) -> None:
    """Given a backoff of exactly 2 s, When attempt 1 fails at t=10, Expect the task not ready
    at t=11.9 and ready at t=12."""
    graph = make_graph(retry=RetryPolicy(base=2.0, jitter=0.0))
    graph.submit(spec("a"), now=0)
    graph.fail("a", run(graph, "a").attempt, "flaky", now=10)
    assert graph.get("a").state is S.PENDING
    assert list(graph.iter_ready(11.9)) == []
    assert [r.id for r in graph.iter_ready(12)] == ["a"]


def test_handler_requested_delay_overrides_backoff(graph: TaskGraph) -> None:
    """Given a handler raising Retry(delay=30), Expect the task ready again at t+30."""
    graph.submit(spec("a"), now=0)
    graph.fail("a", run(graph, "a").attempt, "later", now=5, delay=30)
    assert list(graph.iter_ready(34)) == []
    assert [r.id for r in graph.iter_ready(35)] == ["a"]


def test_backoff_is_exponential_capped_and_reproducible() -> None:
    """Given a policy without jitter, Expect base * 2**(n-1) up to the cap; with jitter,
    Expect values within [(1-j) d, d] and the same values for the same seed."""
    plain = RetryPolicy(base=1.0, cap=10.0, jitter=0.0)
    rng = random.Random(0)
    assert [plain.backoff(n, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert plain.backoff(10**9, rng) == 10  # no overflow on absurd attempt numbers
    jittered = RetryPolicy(base=1.0, cap=100.0, jitter=0.5)
    first = [jittered.backoff(n, random.Random(3)) for n in range(1, 6)]
    assert first == [jittered.backoff(n, random.Random(3)) for n in range(1, 6)]
    for n, delay in enumerate(first, start=1):
        assert 0.5 * 2 ** (n - 1) <= delay <= 2 ** (n - 1)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"jitter": 1.5}, {"factor": 0.5}, {"base": -1}]
)
def test_invalid_retry_policy_is_a_config_error(kwargs: dict[str, Any]) -> None:
    """Given a nonsensical retry policy, Expect ConfigError."""
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)


# --- deadlines -----------------------------------------------------------------


def test_expire_returns_expired_ids_and_fails_dependents(graph: TaskGraph) -> None:
    """Given a (deadline 10) <- b, and c (deadline 20), When expire(10), Expect a EXPIRED,
    b FAILED naming a, c untouched; finished tasks never expire."""
    graph.submit([spec("a", deadline=10), spec("b", "a"), spec("c", deadline=20)], now=0)
    graph.submit(spec("done", deadline=5), now=0)
    finish(graph, "done")
    assert graph.expire(9.99) == []
    assert graph.expire(10) == ["a"]
    assert graph.get("a").reason == "deadline passed"
    assert graph.get("b").state is S.FAILED
    assert graph.get("b").reason == "dependency 'a' expired: deadline passed"
    assert graph.get("c").state is S.READY
    assert graph.get("done").state is S.SUCCEEDED


def test_result_after_expiry_is_discarded(graph: TaskGraph) -> None:
    """Given a running task that expired, When its result arrives, Expect FINAL, still EXPIRED."""
    graph.submit(spec("a", deadline=10), now=0)
    attempt = run(graph, "a").attempt
    graph.expire(11)
    assert graph.complete("a", attempt, "late", now=12) is Outcome.FINAL
    assert graph.get("a").state is S.EXPIRED


def test_subtask_deadline_is_capped_by_the_parent(graph: TaskGraph) -> None:
    """Given a parent with deadline 50, When children with deadlines none/80/30 are submitted,
    Expect effective deadlines 50/50/30; When the parent expires, Expect them EXPIRED too."""
    graph.submit(spec("p", deadline=50), now=0)
    graph.submit(
        [
            spec("p.x", parent="p"),
            spec("p.y", parent="p", deadline=80),
            spec("p.z", parent="p", deadline=30),
        ],
        now=0,
    )
    assert [graph.get(t).deadline for t in ("p.x", "p.y", "p.z")] == [50, 50, 30]
    assert graph.expire(50) == ["p.z", "p", "p.x", "p.y"]


def test_child_of_a_failed_parent_fails_at_once(graph: TaskGraph) -> None:
    """Given a rejected task p, When a child of p is submitted, Expect it FAILED naming p."""
    graph.submit(spec("p"), now=0)
    graph.fail("p", run(graph, "p").attempt, "nope", now=0, transient=False)
    graph.submit(spec("p.late", parent="p"), now=1)
    assert graph.get("p.late").state is S.FAILED
    assert graph.get("p.late").reason == "parent 'p' failed: nope"


def test_unknown_parent_is_rejected(graph: TaskGraph) -> None:
    """Given a parent id not known nor earlier in the batch, Expect UnknownDependency."""
    with pytest.raises(UnknownDependency):
        graph.submit([spec("c", parent="p"), spec("p")], now=0)


# --- priorities ----------------------------------------------------------------


def test_ready_queue_orders_by_priority_then_submission(graph: TaskGraph) -> None:
    """Given tasks with priorities 1, 9, 5, 9, Expect 9 (first), 9 (second), 5, 1."""
    graph.submit([spec("low", priority=1), spec("hi1", priority=9), spec("mid", priority=5)], now=0)
    graph.submit(spec("hi2", priority=9), now=0)
    assert [r.id for r in graph.iter_ready(0)] == ["hi1", "hi2", "mid", "low"]


def test_tasks_can_be_assigned_while_iterating(graph: TaskGraph) -> None:
    """Given three ready tasks, When each is assigned during iteration, Expect all assigned
    once and none left ready."""
    graph.submit([spec("a"), spec("b"), spec("c")], now=0)
    for record in graph.iter_ready(0):
        graph.assign(record.id, "w1", now=0)
    assert list(graph.iter_ready(0)) == []


# --- splitting and merging -----------------------------------------------------


def test_split_into_subtasks_and_merge_by_concatenation(graph: TaskGraph) -> None:
    """Given a task over 5 items needing 2 agents, Expect subtasks t.0=[1,2,3] and t.1=[4,5]
    with the parent's dependencies; When both finish, Expect t SUCCEEDED with the lists
    concatenated in subtask order."""
    graph.submit(spec("before"), now=0)
    finish(graph, "before", result="B")
    ids = graph.submit(spec("t", "before", payload=[1, 2, 3, 4, 5], agents=2), now=0)
    assert ids == ["t", "t.0", "t.1"]
    assert graph.get("t.0").spec.payload == [1, 2, 3]
    assert graph.get("t.1").spec.depends_on == ("before",)
    assert graph.get("t").deps == ("t.0", "t.1")
    second = run(graph, "t.1")
    first = run(graph, "t.0")
    assert first.dep_results == {"before": "B"}
    graph.complete("t.1", second.attempt, ["d", "e"], now=1)
    graph.complete("t.0", first.attempt, ["a", "b", "c"], now=1)
    assert (graph.get("t").state, graph.get("t").result) == (S.SUCCEEDED, list("abcde"))


def test_custom_split_and_merge_are_used_for_their_type(
    make_graph: Callable[..., TaskGraph],
) -> None:
    """Given a strategy for type 'range' that splits a range and takes the max, Expect it used."""

    def split(payload: Any, n: int) -> list[Any]:
        return [(i, payload) for i in range(n)]

    graph = make_graph(
        strategies={"range": SplitStrategy(split=split, merge=lambda r: max(r.values()))}
    )
    graph.submit(spec("t", type="range", payload=10, agents=3), now=0)
    assert graph.get("t.2").spec.payload == (2, 10)
    for i in range(3):
        finish(graph, f"t.{i}", result=i * 7)
    assert graph.get("t").result == 14


def test_failing_split_or_empty_split_rejects_the_task(
    make_graph: Callable[..., TaskGraph],
) -> None:
    """Given split functions that raise or return nothing, Expect InvalidTask and nothing
    submitted."""

    def broken(payload: Any, n: int) -> list[Any]:
        raise ValueError("unsplittable")

    graph = make_graph(
        strategies={
            "bad": SplitStrategy(split=broken),
            "empty": SplitStrategy(split=lambda p, n: []),
        }
    )
    with pytest.raises(InvalidTask, match="cannot split"):
        graph.submit(spec("t", type="bad", agents=2), now=0)
    with pytest.raises(InvalidTask, match="no subtasks"):
        graph.submit(spec("t", type="empty", agents=2), now=0)
    assert len(graph) == 0


def test_failing_merge_fails_the_task(make_graph: Callable[..., TaskGraph]) -> None:
    """Given a merge that raises, When all subtasks succeed, Expect the task FAILED saying so."""

    def merge(results: Any) -> Any:
        raise ValueError("cannot merge")

    graph = make_graph(strategies={"job": SplitStrategy(merge=merge)})
    graph.submit(spec("t", payload=[1, 2], agents=2), now=0)
    finish(graph, "t.0", [1])
    finish(graph, "t.1", [2])
    assert graph.get("t").state is S.FAILED
    assert "merge failed" in (graph.get("t").reason or "")


def test_failed_subtask_fails_the_task_and_cancels_siblings(graph: TaskGraph) -> None:
    """Given a task split in 3, When t.0 is rejected, Expect t FAILED naming t.0 and the
    unfinished siblings FAILED too (their late results discarded)."""
    graph.submit(spec("t", payload=[1, 2, 3], agents=3), now=0)
    running = run(graph, "t.1")
    graph.fail("t.0", run(graph, "t.0").attempt, "bad chunk", now=1, transient=False)
    assert graph.get("t").reason == "dependency 't.0' failed: bad chunk"
    assert graph.get("t.2").state is S.FAILED
    assert graph.get("t.2").reason == "parent 't' failed (root cause 't.0' failed: bad chunk)"
    assert graph.complete("t.1", running.attempt, [2], now=2) is Outcome.FINAL


@pytest.mark.parametrize(
    ("payload", "n", "chunks"),
    [
        ([1, 2, 3, 4, 5], 2, [[1, 2, 3], [4, 5]]),
        ([1, 2], 4, [[1], [2]]),
        ([], 3, [[]]),
        ((1, 2, 3), 3, [[1], [2], [3]]),
        ("whole", 2, ["whole", "whole"]),
    ],
)
def test_default_split(payload: Any, n: int, chunks: list[Any]) -> None:
    """Given a list, Expect at most n ordered chunks differing by at most one item; given
    anything else, Expect the payload for each of the n subtasks."""
    assert split_list(payload, n) == chunks


@pytest.mark.parametrize(
    ("results", "merged"),
    [
        ({"t.0": [1], "t.1": [2, 3]}, [1, 2, 3]),
        ({"t.0": 2, "t.1": 0.5}, 2.5),
        ({"t.0": "a", "t.1": 1}, {"t.0": "a", "t.1": 1}),
        ({"t.0": True, "t.1": True}, {"t.0": True, "t.1": True}),
    ],
)
def test_default_merge(results: dict[str, Any], merged: Any) -> None:
    """Given lists, Expect one list; numbers, their sum; anything else, the results by id."""
    assert merge_results(results) == merged


# --- housekeeping ----------------------------------------------------------------


def test_forget_only_finished_tasks(graph: TaskGraph) -> None:
    """Given a finished and an unfinished task, Expect only the finished one forgettable."""
    graph.submit([spec("a"), spec("b")], now=0)
    finish(graph, "a")
    graph.forget("a")
    assert "a" not in graph
    with pytest.raises(StateError):
        graph.forget("b")
    with pytest.raises(UnknownDependency):
        graph.submit(spec("c", "a"), now=0)


def test_a_forgotten_id_can_be_submitted_again(graph: TaskGraph) -> None:
    """Given a task that was requeued, finished and forgotten, When its id is submitted again,
    Expect a fresh task listed once among the ready ones."""
    graph.submit(spec("a"), now=0)
    run(graph, "a")
    graph.agent_lost("w1", now=0)
    finish(graph, "a")
    graph.forget("a")
    graph.submit(spec("a", deadline=5), now=1)
    assert [r.id for r in graph.iter_ready(1)] == ["a"]
    assert graph.get("a").attempt == 0
    assert graph.expire(5) == ["a"]


def test_expiry_stays_exact_while_finished_tasks_are_cleaned_up(graph: TaskGraph) -> None:
    """Given 200 tasks with a deadline of which 150 finish early, When the deadline passes,
    Expect exactly the 50 unfinished ones expired."""
    graph.submit([spec(f"t{i:03}", deadline=1000) for i in range(200)], now=0)
    for i in range(150):
        finish(graph, f"t{i:03}")
    assert graph.expire(1000) == [f"t{i:03}" for i in range(150, 200)]


# --- properties --------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.integers(0, 9), min_size=1, max_size=40))
def test_property_ready_queue_respects_priorities(priorities: list[int]) -> None:
    """Given ready tasks of random priorities, Expect iteration by priority descending and,
    within a priority, in submission order."""
    graph = TaskGraph(rng=random.Random(0))
    for i, p in enumerate(priorities):
        graph.submit(spec(f"t{i:03}", priority=p), now=0)
    order = [(r.spec.priority, r.id) for r in graph.iter_ready(0)]
    assert order == sorted(order, key=lambda item: (-item[0], item[1]))


@st.composite
def dags(draw: st.DrawFn) -> list[TaskSpec]:
    """Random DAGs: each task may depend on earlier ones; some need several agents."""
    specs: list[TaskSpec] = []
    for i in range(draw(st.integers(1, 14))):
        earlier = [s.id for s in specs]
        deps = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        specs.append(
            TaskSpec(
                id=f"t{i}",
                type="job",
                payload=list(range(draw(st.integers(0, 4)))),
                agents=draw(st.sampled_from([1, 1, 1, 2, 3])),
                priority=draw(st.integers(0, 9)),
                deadline=draw(st.none() | st.floats(1, 60)),
                depends_on=tuple(deps),
            )
        )
    # Dependencies point backwards, so submitting in reverse order still forms no cycle.
    return specs[::-1] if draw(st.booleans()) else specs


ACTIONS = [
    "dispatch",
    "dispatch",
    "complete",
    "fail",
    "fail",
    "reject",
    "stale",
    "lose",
    "tick",
    "expire",
]


@PROPERTY
@given(dags(), st.data())
def test_property_random_dags_with_random_failures_end_in_one_terminal_state(
    specs: list[TaskSpec], data: st.DataObject
) -> None:
    """Given a random DAG and a random sequence of assignments, results, failures, lost
    agents, stale reports and expiries, Expect: no task is ever assigned before all its
    dependencies succeeded; stale reports never change anything; a terminal state and its
    result never change; every task ends in exactly one terminal state and is reported
    finished exactly once."""
    graph = TaskGraph(retry=RetryPolicy(max_attempts=2, base=1.0), rng=random.Random(1))
    created = graph.submit(specs, now=0)
    now = 0.0
    live: dict[str, Assignment] = {}
    old: list[Assignment] = []
    first_final: dict[str, tuple[TaskState, Any]] = {}

    def assign_ready() -> None:
        for record in graph.iter_ready(now):
            assert all(graph.get(d).state is S.SUCCEEDED for d in record.deps)
            agent = data.draw(st.sampled_from(["w1", "w2", "w3"]))
            live[record.id] = graph.assign(record.id, agent, now=now)

    def observe() -> None:
        for record in graph.pop_finished():
            assert record.id not in first_final, f"{record.id} finished twice"
            first_final[record.id] = (record.state, record.result)
        for task_id, (state, result) in first_final.items():
            assert (graph.get(task_id).state, graph.get(task_id).result) == (state, result)
        for task_id in list(live):
            if graph.get(task_id).state not in (S.ASSIGNED, S.RUNNING):
                old.append(live.pop(task_id))

    for _ in range(data.draw(st.integers(0, 40))):
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "dispatch":
            assign_ready()
        elif action in ("complete", "fail", "reject") and live:
            a = live.pop(data.draw(st.sampled_from(sorted(live))))
            if action == "complete":
                outcome = graph.complete(a.task_id, a.attempt, [a.task_id], now=now)
            else:
                outcome = graph.fail(
                    a.task_id, a.attempt, "boom", now=now, transient=action == "fail"
                )
            assert outcome is Outcome.ACCEPTED
            old.append(a)
        elif action == "stale" and old:
            a = data.draw(st.sampled_from(old))
            before = graph.get(a.task_id)
            snapshot = (before.state, before.result, before.attempt)
            assert graph.complete(a.task_id, a.attempt, "stale!", now=now).discarded
            assert (before.state, before.result, before.attempt) == snapshot
        elif action == "lose":
            graph.agent_lost(data.draw(st.sampled_from(["w1", "w2", "w3"])), now=now)
        elif action == "tick":
            now += data.draw(st.floats(0.1, 10))
        elif action == "expire":
            graph.expire(now)
        observe()

    # Drain: from here on every attempt succeeds, time runs far ahead.
    for _ in range(100):
        if all(graph.get(t).state.terminal for t in created):
            break
        now += 1000
        graph.expire(now)
        observe()
        assign_ready()
        for task_id, a in list(live.items()):
            graph.complete(task_id, a.attempt, [task_id], now=now)
        observe()
    assert all(graph.get(t).state.terminal for t in created)
    assert sorted(first_final) == sorted(created)


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["complete", "fail", "lose", "start"]), st.integers(0, 5)),
        max_size=30,
    )
)
def test_property_only_the_live_attempt_changes_a_task(ops: list[tuple[str, int]]) -> None:
    """Given one task and reports carrying arbitrary attempt numbers, Expect a report to be
    ACCEPTED only for the live attempt of an assigned/running task, and the first accepted
    result to be the task's only result."""
    graph = TaskGraph(
        retry=RetryPolicy(max_attempts=10, base=0.0, jitter=0.0), rng=random.Random(0)
    )
    graph.submit(spec("a"), now=0)
    result = None
    for step, (op, attempt) in enumerate(ops):
        if graph.get("a").state is S.READY:
            graph.assign("a", "w1", now=step)
        record = graph.get("a")
        live = record.state in (S.ASSIGNED, S.RUNNING) and attempt == record.attempt
        before = (record.state, record.result)
        if op == "complete":
            outcome = graph.complete("a", attempt, step, now=step)
            if outcome is Outcome.ACCEPTED:
                assert result is None
                result = step
        elif op == "fail":
            outcome = graph.fail("a", attempt, "x", now=step, delay=0)
        elif op == "start":
            outcome = graph.start("a", attempt, now=step)
        else:
            graph.agent_lost("w1", now=step)
            list(graph.iter_ready(step))
            continue
        assert (outcome is Outcome.ACCEPTED) == live
        if not live:
            assert (record.state, record.result) == before
        list(graph.iter_ready(step))
    assert graph.get("a").result == result
