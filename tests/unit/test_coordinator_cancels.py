"""Specification of cancelling tasks and of depending on finished ones (protocol/coordinator).

The seeded simulation (``test_coordinator_sim.py``) checks the same rules
under faults; these tests show each rule on its own.
"""

from __future__ import annotations

from test_coordinator_state import EPOCH, Coordinator, of, task

from robeing.protocol.coordinator import (
    Assign,
    CancelAnswered,
    CancelAttempts,
    CancelRequested,
    DeliverFinals,
)


def answer(actions: list) -> CancelAnswered:
    (only,) = of(CancelAnswered, actions)
    return only


def test_the_submitter_cancels_a_running_task_and_its_agent_is_told() -> None:
    """Given t1 running on w1, When its submitter cancels it, Expect w1 told to stop attempt 1,
    the answer 'cancelled', one final 'cancelled by c', w1's load freed and a late result stale."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.submit(task("t1"))
    out = c.handle(CancelRequested("c", "t1"))
    assert of(CancelAttempts, out) == [CancelAttempts("w1", (("t1", 1),))]
    assert answer(out).outcome == "cancelled" and answer(out).detail == "cancelled by c"
    final = c.finals(out)["t1"]
    assert final.state == "cancelled" and final.error == "cancelled by c" and final.attempts == 1
    assert c.m.fleet.registry.get("w1").load == 0
    c.submit(task("t2"))  # w1 has room again
    assert c.holder("t2") == "w1"
    stale = c.m.counters["stale_results"]
    assert c.finals(c.result("w1", "t1")) == {} and c.m.counters["stale_results"] == stale + 1


def test_cancelling_ends_the_dependants_with_a_reason_naming_the_cancelled_task() -> None:
    """Given t2 depending on t1, When t1 is cancelled, Expect t2 cancelled too, its reason
    naming t1, and its own final to its submitter."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"), task("t2", depends_on=("t1",)))
    finals = c.finals(c.handle(CancelRequested("c", "t1")))
    assert finals["t2"].state == "cancelled"
    assert finals["t2"].error == "dependency 't1' cancelled: cancelled by c"


def test_cancelling_a_split_task_stops_every_running_part() -> None:
    """Given a task split over two agents, When it is cancelled, Expect both agents told, one
    final for the task (none for its parts)."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.join("w2", capacity=1)
    c.submit(task("t", agents=2, payload=[1, 2]))
    out = c.handle(CancelRequested("c", "t"))
    told = {a.agent_id: a.attempts for a in of(CancelAttempts, out)}
    assert sorted(told) == ["w1", "w2"]
    assert sorted(p for attempts in told.values() for p, _ in attempts) == ["t.0", "t.1"]
    assert list(c.finals(out)) == ["t"] and c.finals(out)["t"].state == "cancelled"


def test_only_the_submitter_may_cancel_and_only_a_whole_task() -> None:
    """Given c's split task, When d cancels it, or c cancels one of its parts, Expect 'refused'
    and nothing changed; unknown ids are 'unknown', ended tasks 'finished'."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t", agents=2, payload=[1, 2]))
    refused = c.handle(CancelRequested("d", "t"))
    assert answer(refused).outcome == "refused" and "another submitter" in answer(refused).detail
    part = c.handle(CancelRequested("c", "t.0"))
    assert answer(part).outcome == "refused" and "part of 't'" in answer(part).detail
    assert not c.finals(refused) and not c.finals(part) and not c.m.graph.get("t").state.terminal
    assert answer(c.handle(CancelRequested("c", "nosuch"))).outcome == "unknown"
    c.handle(CancelRequested("c", "t"))
    again = c.handle(CancelRequested("c", "t"))
    assert answer(again).outcome == "finished" and not c.finals(again)


# --- depending on finished tasks --------------------------------------------------------


def test_a_task_may_depend_on_a_finished_task_and_gets_its_stored_result() -> None:
    """Given t1 succeeded (and forgotten by the graph), When t2 depending on it is submitted,
    Expect t2 assigned with t1's result (not refused as an unknown dependency)."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    c.result("w1", "t1")
    assert "t1" not in c.m.graph
    out = c.submit(task("t2", depends_on=("t1",)), reply_to="q2")
    (assign,) = of(Assign, out)
    assert assign.messages[0].dep_results == {"t1": "t1 by w1"}


def test_a_dependency_that_ended_badly_fails_the_new_dependant_with_its_reason() -> None:
    """Given t1 failed, When t2 depending on it is submitted, Expect t2 failed, naming t1."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    c.result("w1", "t1", ok=False, error={"type": "Reject", "message": "boom"})
    final = c.finals(c.submit(task("t2", depends_on=("t1",))))["t2"]
    assert final.state == "failed" and final.error == "dependency 't1' failed: Reject: boom"


def test_a_task_may_not_depend_on_another_submitters_task() -> None:
    """Given d's finished task and d's running task, When c submits tasks depending on them,
    Expect both rejected at submit, and neither given d's result."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.submit(task("done"), who="d")
    c.result("w1", "done")
    c.submit(task("busy"), who="d")
    out = c.submit(task("x", depends_on=("done",)), task("y", depends_on=("busy",)))
    finals = c.finals(out)
    for name, dep in (("x", "done"), ("y", "busy")):
        assert finals[name].state == "failed"
        assert f"depends on task {dep!r} of another submitter" in (finals[name].error or "")
    assert not of(Assign, out)


# --- what a final says -------------------------------------------------------------------


def test_a_split_tasks_final_counts_its_parts_attempts() -> None:
    """Given a task split over two agents, When both parts succeed, Expect attempts 1 (not 0)."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.join("w2", capacity=1)
    c.submit(task("t", agents=2, payload=[1, 2]))
    c.result(c.holder("t.0") or "", "t.0", result=[1])
    final = c.finals(c.result(c.holder("t.1") or "", "t.1", result=[2]))["t"]
    assert final.state == "succeeded" and final.attempts == 1


def test_a_task_that_expires_before_running_says_what_held_it_back() -> None:
    """Given no live agent with skill 'nosuch', When a task needing it passes its deadline,
    Expect its final to say it never ran and why."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t", skills=("nosuch",), deadline=2.0))
    final = c.finals(c.tick(2.5))["t"]
    assert final.state == "expired" and final.attempts == 0
    assert final.error == (
        "deadline passed; it never ran: waiting for a skill no live agent has: nosuch"
    )


def test_cancelled_finals_go_out_once_and_are_stored() -> None:
    """Given a cancelled task, Expect its final in one stored delivery, then the answer from
    the finals kept when it is resubmitted."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t"))
    (delivery,) = of(DeliverFinals, c.handle(CancelRequested("c", "t")))
    assert delivery.store
    again = of(DeliverFinals, c.submit(task("t")))
    assert [d.store for d in again] == [False] and again[0].finals[0][0].state == "cancelled"
    assert EPOCH == c.m.epoch
