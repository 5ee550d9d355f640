"""Specification of the coordinator state machine, one rule of its docstring at a time.

The seeded simulation (``test_coordinator_sim.py``) checks the same rules
under faults; these tests show each rule on its own.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import pytest

from robeing.protocol.coordinator import (
    AckSubmission,
    Action,
    Assign,
    AssignmentFailed,
    BecameActive,
    ConnectionClosed,
    CoordinatorConfig,
    CoordinatorState,
    DeadLetterTask,
    DeliverFinals,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    PurgeAssignments,
    RefuseTasks,
    ResultsReceived,
    SendProgress,
    SubmissionReceived,
    Tick,
    queries,
)
from robeing.protocol.coordinator.state import MAX_EXPIRATION_S
from robeing.protocol.failure_detector import DetectorConfig
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources
from robeing.protocol.taskgraph import TaskState
from robeing.protocol.taskmsgs import FinalResult, ResultMsg, Submission, TaskRequest

EPOCH = 7
DETECTOR = DetectorConfig(heartbeat_interval=1.0, acceptable_pause=1.0, dead_after=2.0)
A = TypeVar("A", bound=Action)


def of(kind: type[A], actions: list[Action]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


class Coordinator:
    """An active machine, a clock, and one-line helpers for the events the shell feeds."""

    def __init__(self, **config: Any) -> None:
        cfg = CoordinatorConfig("coord", DETECTOR, **config)
        self.m = CoordinatorState(cfg, rng=random.Random(0))
        self.now = 0.0
        self.tokens = 0
        self.handle(BecameActive(EPOCH))

    def handle(self, event: Any) -> list[Action]:
        return self.m.handle(event, self.now)

    def join(self, agent: str, *, started_at: float = 100.0, **beat: Any) -> list[Action]:
        beat.setdefault("specializations", ("a",))
        beat.setdefault("capacity", 4)
        role = beat.pop("role", "worker")
        hb = Heartbeat(role, beat.pop("state", "alive"), started_at=started_at, **beat)
        return self.handle(HeartbeatReceived(agent, role, hb))

    def submit(self, *tasks: TaskRequest, reply_to: str = "q1", who: str = "c") -> list[Action]:
        self.tokens += 1
        return self.handle(SubmissionReceived(self.tokens, who, Submission(tasks, reply_to)))

    def result(
        self, agent: str, task: str, attempt: int = 1, *, ok: bool = True, **fields: Any
    ) -> list[Action]:
        fields.setdefault("epoch", EPOCH)
        fields.setdefault("result", f"{task} by {agent}" if ok else None)
        return self.handle(ResultsReceived(agent, (ResultMsg(task, attempt, ok=ok, **fields),)))

    def tick(self, to: float) -> list[Action]:
        self.now = to
        return self.handle(Tick())

    def holder(self, task: str) -> str | None:
        return self.m.graph.get(task).agent

    def finals(self, actions: list[Action]) -> dict[str, FinalResult]:
        return {f.task_id: f for d in of(DeliverFinals, actions) for f, _ in d.finals}


def task(task_id: str, **fields: Any) -> TaskRequest:
    return TaskRequest(task_id, "work", **fields)


# --- activation and epochs ---------------------------------------------------------


def test_nothing_happens_before_the_machine_becomes_active() -> None:
    """Given a standby machine, When agents beat and tasks arrive, Expect no action at all."""
    m = CoordinatorState(CoordinatorConfig("coord"))
    beat = Heartbeat("worker", "alive", ("a",))
    assert m.handle(HeartbeatReceived("w1", "worker", beat), 0.0) == []
    sub = Submission((task("t1"),), "q1")
    assert m.handle(SubmissionReceived(1, "c", sub), 0.0) == []
    assert m.handle(Tick(), 1.0) == [] and len(m.graph) == 0


def test_an_epoch_never_goes_back() -> None:
    """Given an active machine at epoch 7, When told to become active at epoch 6, Expect refusal."""
    c = Coordinator()
    with pytest.raises(ValueError, match="older"):
        c.handle(BecameActive(EPOCH - 1))


def test_assignments_carry_the_epoch_and_results_of_another_epoch_are_stale() -> None:
    """Given a task assigned under epoch 7, When its holder reports it under epoch 6,
    Expect the result counted stale and the task still running."""
    c = Coordinator()
    c.join("w1")
    (assign,) = of(Assign, c.submit(task("t1")))
    assert [m.epoch for m in assign.messages] == [EPOCH]
    assert c.result("w1", "t1", epoch=EPOCH - 1) == []
    assert c.m.counters["stale_results"] == 1
    assert c.m.graph.get("t1").state is TaskState.ASSIGNED


# --- fencing of results ---------------------------------------------------------------


def test_a_result_from_an_agent_that_does_not_hold_the_task_is_stale() -> None:
    """Given t1 running on w1, When w2 reports t1 done, Expect it stale and no final;
    When w1 reports it, Expect the one final with w1's result."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    c.join("w2")
    assert c.result("w2", "t1") == [] and c.m.counters["stale_results"] == 1
    (final,) = c.finals(c.result("w1", "t1")).values()
    assert final.state == "succeeded" and final.result == "t1 by w1"


def test_a_duplicate_result_after_the_final_is_stale() -> None:
    """Given t1 finished, When the same result arrives again, Expect it stale, no second final."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    assert "t1" in c.finals(c.result("w1", "t1"))
    assert c.result("w1", "t1") == [] and c.m.counters["stale_results"] == 1


def test_a_late_result_of_an_earlier_attempt_is_stale() -> None:
    """Given t1's first attempt failed transiently and w1 runs attempt 2, When attempt 1's
    result arrives, Expect it stale and attempt 2 still live."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    c.result("w1", "t1", ok=False, error={"type": "Busy"}, transient=True)
    (assign,) = of(Assign, c.tick(5.0))
    assert assign.messages[0].attempt == 2
    assert c.result("w1", "t1", attempt=1) == []
    assert c.m.counters["stale_results"] == 1
    rec = c.m.graph.get("t1")
    assert (rec.state, rec.attempt, rec.agent) == (TaskState.ASSIGNED, 2, "w1")


# --- finals, acknowledgements, resubmissions ---------------------------------------------


def test_a_submission_is_acknowledged_only_after_its_finals_are_stored() -> None:
    """Given a batch of two tasks, When both finish, Expect finals to store and no ack;
    When the stream confirms one, Expect no ack; When it confirms the other, Expect the ack."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"), task("t2"))
    done = c.result("w1", "t1") + c.result("w1", "t2")
    assert [d.store for d in of(DeliverFinals, done)] == [True, True]
    assert of(AckSubmission, done) == []
    assert of(AckSubmission, c.handle(FinalsStored(("t1",)))) == []
    assert of(AckSubmission, c.handle(FinalsStored(("t2",)))) == [AckSubmission(1)]


def test_a_failed_store_is_retried_on_tick_and_then_acknowledged() -> None:
    """Given t1's final failed to store, When ticks come before and after ``store_retry``,
    Expect one retry (to no recipient: they were told) and the ack once it is stored."""
    c = Coordinator(store_retry=1.0)
    c.join("w1")
    c.submit(task("t1"))
    c.result("w1", "t1")
    assert c.handle(FinalsNotStored(("t1",), "stream down")) == []
    assert of(DeliverFinals, c.tick(0.5)) == []
    (retry,) = of(DeliverFinals, c.tick(1.5))
    assert retry.store and [(f.task_id, r) for f, r in retry.finals] == [("t1", ())]
    assert of(AckSubmission, c.handle(FinalsStored(("t1",)))) == [AckSubmission(1)]


def test_a_known_final_answers_a_resubmission_from_the_store() -> None:
    """Given t1 finished and stored, When it is submitted again from another reply queue,
    Expect the same final to that queue with store=False, an immediate ack, nothing run."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    first = c.finals(c.result("w1", "t1"))["t1"]
    c.handle(FinalsStored(("t1",)))
    again = c.submit(task("t1"), reply_to="q2")
    (answer,) = of(DeliverFinals, again)
    assert not answer.store and answer.finals == ((first, (("c", "q2"),)),)
    assert of(AckSubmission, again) == [AckSubmission(2)] and of(Assign, again) == []


def test_resubmitting_a_running_task_adds_the_resubmitter_as_a_recipient() -> None:
    """Given t1 running, When it is resubmitted from q2, Expect nothing run twice;
    When it finishes, Expect one final to both q1 and q2."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    assert of(Assign, c.submit(task("t1"), reply_to="q2")) == []
    (deliver,) = of(DeliverFinals, c.result("w1", "t1"))
    ((_, recipients),) = deliver.finals
    assert sorted(recipients) == [("c", "q1"), ("c", "q2")]


# --- agents lost, incarnations, backups -------------------------------------------------


def test_an_agent_lost_mid_task_gets_its_tasks_reassigned_and_its_queue_purged() -> None:
    """Given t1 on w1 and an idle w2, When the broker closes w1's connection, Expect t1
    reassigned to w2 as attempt 2 and w1's work queue purged; w1's late result is stale."""
    c = Coordinator()
    c.join("w1", incarnation="w1-a")
    c.submit(task("t1"))
    c.join("w2")
    lost = c.handle(ConnectionClosed("w1", "w1-a", verified=True))
    assert of(PurgeAssignments, lost) == [PurgeAssignments("w1")]
    (assign,) = of(Assign, lost)
    assert (assign.agent_id, assign.messages[0].attempt) == ("w2", 2)
    assert c.result("w1", "t1") == [] and c.m.counters["stale_results"] == 1


def test_an_unconfirmed_close_of_an_agent_that_keeps_beating_changes_nothing() -> None:
    """Given t1 on w1, When a close of w1's incarnation arrives that the broker cannot
    attribute to w1's own user (a shared login could forge it) and w1 beats again within
    the grace, Expect w1 only suspected: t1 stays on it, nothing purged or reassigned."""
    c = Coordinator()
    c.join("w1", incarnation="w1-a")
    c.submit(task("t1"))
    c.join("w2")
    assert of(Assign, c.handle(ConnectionClosed("w1", "w1-a", verified=False))) == []
    c.now = 1.0
    c.join("w1", incarnation="w1-a")
    assert of(PurgeAssignments, c.tick(2.5)) == [] and c.holder("t1") == "w1"
    assert c.m.fleet.counters["unconfirmed_closes"] == 1


def test_an_unconfirmed_close_becomes_a_death_when_the_heartbeats_stop() -> None:
    """Given t1 on w1, When an unconfirmed close of w1 arrives and w1 never beats again,
    Expect it lost once the grace (1.5 heartbeat intervals) has passed: t1 reassigned."""
    c = Coordinator()
    c.join("w1", incarnation="w1-a")
    c.submit(task("t1"))
    c.join("w2")
    c.handle(ConnectionClosed("w1", "w1-a", verified=False))
    assert of(PurgeAssignments, c.tick(1.0)) == []
    actions = c.tick(1.6)
    assert of(PurgeAssignments, actions) == [PurgeAssignments("w1")]
    assert c.holder("t1") == "w2"


def test_a_silent_agent_is_lost_and_gets_no_work_until_it_beats_again() -> None:
    """Given w1 silent past the detector's patience, When ticks come, Expect it lost and
    t1 left waiting; When it beats again, Expect t1 assigned to it."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    for step in range(1, 21):
        c.tick(step * 0.5)
    assert c.m.fleet.is_dead("w1")
    assert c.m.graph.get("t1").state is TaskState.READY
    (assign,) = of(Assign, c.join("w1"))
    assert assign.agent_id == "w1" and assign.messages[0].attempt == 2


def test_a_close_of_another_incarnation_changes_nothing() -> None:
    """Given w1 running t1 as incarnation w1-b, When the broker reports w1-a closed,
    Expect no loss, no purge and t1 still on w1."""
    c = Coordinator()
    c.join("w1", incarnation="w1-b")
    c.submit(task("t1"))
    assert c.handle(ConnectionClosed("w1", "w1-a", verified=True)) == []
    assert "w1" in c.m.fleet.registry and c.holder("t1") == "w1"


def test_backups_take_work_only_while_a_primary_they_stand_in_for_is_dead() -> None:
    """Given primary w1 and a backup b1 for it, When a task comes, Expect it on w1 only;
    When w1 dies, Expect b1 activated and given the task."""
    c = Coordinator()
    c.join("w1", capacity=1, incarnation="w1-a")
    c.join("b1", standby=True, backup_for="w1")
    c.submit(task("t1"))
    assert c.holder("t1") == "w1" and c.m.fleet.idle_backups() == ["b1"]
    assert (
        of(Assign, c.handle(ConnectionClosed("w1", "w1-a", verified=True))) == []
    )  # b1 is not active yet
    (assign,) = of(Assign, c.join("b1", standby=True, backup_for="w1"))
    assert assign.agent_id == "b1"


# --- resources, attempts, deadlines -----------------------------------------------------


def test_a_task_needing_resources_waits_for_room_and_frees_it_when_done() -> None:
    """Given w1 contributing 2 cpus, When two tasks need 2 cpus each, Expect one assigned,
    the other waiting, the reservation never above the contribution; When the first ends,
    Expect its cpus freed and the second assigned."""
    c = Coordinator()
    c.join("w1", resources=Resources(cpu=2.0))
    actions = c.submit(task("t1", resources={"cpu": 2}), task("t2", resources={"cpu": 2}))
    assert [m.task_id for a in of(Assign, actions) for m in a.messages] == ["t1"]
    ledger = c.m.fleet.ledger
    assert ledger.allocated("w1").cpu == ledger.capacity("w1").cpu == 2.0
    (assign,) = of(Assign, c.result("w1", "t1"))
    assert assign.messages[0].task_id == "t2"
    assert [a.request_id for a in ledger.allocations()] == ["t2"]


def test_a_task_that_keeps_failing_is_dead_lettered_after_its_attempts() -> None:
    """Given max_attempts=2, When both attempts fail transiently, Expect a dead_lettered
    final and a dead letter with the reason."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1", max_attempts=2))
    error = {"type": "Busy", "message": "try later"}
    c.result("w1", "t1", ok=False, error=error, transient=True)
    c.tick(5.0)
    out = c.result("w1", "t1", attempt=2, ok=False, error=error, transient=True)
    assert c.finals(out)["t1"].state == "dead_lettered"
    (letter,) = of(DeadLetterTask, out)
    assert letter.attempts == 2 and "Busy: try later" in letter.reason


def test_a_task_expires_at_its_deadline() -> None:
    """Given t1 due at 2.0 and no agent, When the clock passes 2.0, Expect an expired final."""
    c = Coordinator()
    c.submit(task("t1", deadline=2.0))
    assert c.finals(c.tick(1.9)) == {}
    assert c.finals(c.tick(2.0))["t1"].state == "expired"


def test_a_refused_assignment_is_retried() -> None:
    """Given t1 assigned to w1, When the broker refuses the assignment, Expect t1 assigned
    again (attempt 2) after its backoff."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    assert of(Assign, c.handle(AssignmentFailed("w1", (("t1", 1),), "unroutable"))) == []
    (assign,) = of(Assign, c.tick(5.0))
    assert assign.messages[0].attempt == 2


def test_expirations_are_capped_at_the_brokers_limit() -> None:
    """Given a coordinator that accepts deadlines a century away, When such a task is
    assigned, Expect the message's expiration at RabbitMQ's maximum, not beyond."""
    c = Coordinator(max_horizon=200 * 365 * 86400.0)
    c.join("w1")
    (assign,) = of(Assign, c.submit(task("t1", deadline=100 * 365 * 86400.0)))
    assert assign.expiration_s == MAX_EXPIRATION_S


def test_out_of_bounds_fields_fail_their_task_with_the_reason_and_spare_the_others() -> None:
    """Given one submission with a valid task and five out of bounds (priority 10, agents 0,
    a NaN deadline, a deadline 60 days ahead, max_attempts 0), When it arrives, Expect each
    bad one failed at once with its reason, the valid one assigned, and the submission
    acknowledged once the finals are stored - nothing held forever, nothing lost."""
    c = Coordinator()
    c.join("w1")
    bad = {
        "p": task("p", priority=10),
        "a": task("a", agents=0),
        "n": task("n", deadline=float("nan")),
        "far": task("far", deadline=60 * 86400.0),
        "m": task("m", max_attempts=0),
    }
    actions = c.submit(task("ok"), *bad.values())
    finals = c.finals(actions)
    assert sorted(finals) == sorted(bad) and all(f.state == "failed" for f in finals.values())
    assert "priority" in finals["p"].error and "agents" in finals["a"].error
    assert "deadline" in finals["n"].error and "days ahead" in finals["far"].error
    assert "max_attempts" in finals["m"].error
    assert [m.task_id for a in of(Assign, actions) for m in a.messages] == ["ok"]
    assert of(AckSubmission, c.handle(FinalsStored(tuple(bad)))) == []  # "ok" still runs
    c.result("w1", "ok")
    assert of(AckSubmission, c.handle(FinalsStored(("ok",)))) == [AckSubmission(1)]


def test_an_attempt_without_a_result_times_out_and_is_retried() -> None:
    """Given a task without a deadline whose assignment vanished (a swallowed message),
    When attempt_timeout passes, Expect the attempt failed and the task assigned again;
    the late result of the first attempt is stale."""
    c = Coordinator(attempt_timeout=60.0)
    c.join("w1")
    c.join("w2")
    first = of(Assign, c.submit(task("t1")))[0].agent_id
    assigned: list[Assign] = []
    for second in range(1, 62):  # both agents keep beating: neither is lost
        c.now = float(second)
        assigned += of(Assign, c.join("w1") + c.join("w2") + c.tick(float(second)))
    assert [m.attempt for a in assigned for m in a.messages] == [2]
    assert c.m.counters["attempts_timed_out"] == 1
    assert c.result(first, "t1", attempt=1) == [] and c.m.counters["stale_results"] == 1


def test_a_result_too_large_for_any_message_fails_its_task_with_the_reason() -> None:
    """Given a coordinator whose messages hold 1 KiB, When a task's result is 2 KiB,
    Expect its final failed and saying so, instead of a final nobody could receive."""
    c = Coordinator(max_result_bytes=1024)
    c.join("w1")
    c.submit(task("t1"))
    finals = c.finals(c.result("w1", "t1", result="x" * 2048))
    assert finals["t1"].state == "failed" and "over the 1024 bytes" in finals["t1"].error


def test_a_split_task_reports_progress_and_one_merged_final() -> None:
    """Given a task split over two agents, When both parts succeed, Expect two progress
    notices, then one final merging the parts."""
    c = Coordinator()
    c.join("w1")
    c.join("w2")
    assigned = of(Assign, c.submit(task("t1", agents=2, payload=[1, 2, 3, 4])))
    parts = sorted((m.task_id, a.agent_id) for a in assigned for m in a.messages)
    assert [p for p, _ in parts] == ["t1.0", "t1.1"]
    out = [a for part, agent in parts for a in c.result(agent, part, result=[part])]
    assert [(p.done, p.total) for p in of(SendProgress, out)] == [(1, 2), (2, 2)]
    assert c.finals(out)["t1"].result == ["t1.0", "t1.1"]


def test_an_invalid_submission_gets_failed_finals_and_is_acked_once_stored() -> None:
    """Given a batch whose tasks depend on each other in a cycle, When it arrives, Expect a
    failed final for each task and the ack only after they are stored."""
    c = Coordinator()
    out = c.submit(task("t1", depends_on=("t2",)), task("t2", depends_on=("t1",)))
    finals = c.finals(out)
    assert {f.state for f in finals.values()} == {"failed"} and sorted(finals) == ["t1", "t2"]
    assert "cycle" in (finals["t1"].error or "") and of(AckSubmission, out) == []
    assert of(AckSubmission, c.handle(FinalsStored(("t1", "t2")))) == [AckSubmission(1)]


def test_a_resubmission_of_a_running_task_is_acknowledged_once_its_final_is_stored() -> None:
    """Given t1 running, When it is resubmitted, Expect no ack yet (a failover now would
    lose the resubmitter, whose submission would be gone); When t1's final is stored,
    Expect both submissions acknowledged."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"))
    assert of(AckSubmission, c.submit(task("t1"), reply_to="q2")) == []
    c.result("w1", "t1")
    acks = of(AckSubmission, c.handle(FinalsStored(("t1",))))
    assert sorted(a.token for a in acks) == [1, 2]


def test_a_resubmission_answered_by_a_final_not_yet_stored_waits_for_the_store() -> None:
    """Given t1's final failed to store, When t1 is resubmitted, Expect the final told at
    once but no ack; When the retried store succeeds, Expect both submissions acknowledged."""
    c = Coordinator(store_retry=1.0)
    c.join("w1")
    c.submit(task("t1"))
    c.result("w1", "t1")
    c.handle(FinalsNotStored(("t1",), "stream down"))
    again = c.submit(task("t1"), reply_to="q2")
    assert "t1" in c.finals(again) and of(AckSubmission, again) == []
    assert of(DeliverFinals, c.tick(1.5))
    acks = of(AckSubmission, c.handle(FinalsStored(("t1",))))
    assert sorted(a.token for a in acks) == [1, 2]


def test_an_id_that_names_a_running_subtask_is_refused() -> None:
    """Given t1 split into t1.0 and t1.1, When a task named t1.0 is submitted, Expect a
    failed final for it (the id is taken), not a wait for a final subtasks never get."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1", agents=2, payload=[1, 2]))
    out = c.submit(task("t1.0"))
    assert c.finals(out)["t1.0"].state == "failed"
    assert of(AckSubmission, c.handle(FinalsStored(("t1.0",)))) == [AckSubmission(2)]


def test_a_backup_stops_taking_work_as_soon_as_its_primary_rejoins() -> None:
    """Given backup b1 active because primary w1 died, When w1 beats again, Expect b1
    out of scheduling at once (not at its own next beat): new work goes to w1."""
    c = Coordinator()
    c.join("w1", incarnation="w1-a")
    c.join("b1", standby=True, backup_for="w1")
    c.handle(ConnectionClosed("w1", "w1-a", verified=True))
    c.join("b1", standby=True, backup_for="w1")
    assert "b1" in c.m.fleet.registry
    c.join("w1", incarnation="w1-b", started_at=200.0)
    assert "b1" not in c.m.fleet.registry and c.m.fleet.idle_backups() == ["b1"]
    (assign,) = of(Assign, c.submit(task("t1")))
    assert assign.agent_id == "w1"


def test_a_heartbeat_of_an_older_process_changes_nothing() -> None:
    """Given w1 restarted (process w1-b, started at 200) while its old process w1-a froze,
    When w1-a wakes, beats and then its connection closes, Expect neither to change w1's
    view: w1-b keeps its capacity and stays scheduled, holding its task."""
    c = Coordinator()
    c.join("w1", incarnation="w1-a", started_at=100.0, capacity=1)
    c.join("w1", incarnation="w1-b", started_at=200.0, capacity=1)  # replaces w1-a
    c.join("w1", incarnation="w1-b", started_at=200.0, capacity=1)  # joins afresh
    c.submit(task("t1"))
    assert c.join("w1", incarnation="w1-a", started_at=100.0, capacity=9) == []
    assert c.m.fleet.registry.get("w1").capacity == 1
    assert c.m.fleet.counters["stale_heartbeats"] == 1
    assert c.handle(ConnectionClosed("w1", "w1-a", verified=True)) == []
    assert "w1" in c.m.fleet.registry and c.holder("t1") == "w1"


def test_a_heartbeat_of_an_older_process_does_not_bring_a_lost_agent_back() -> None:
    """Given w1's newest process w1-b was lost, When a beat of the older w1-a arrives,
    Expect w1 to stay lost and get no work."""
    c = Coordinator()
    c.join("w1", incarnation="w1-b", started_at=200.0)
    c.handle(ConnectionClosed("w1", "w1-b", verified=True))
    assert c.join("w1", incarnation="w1-a", started_at=100.0) == []
    assert of(Assign, c.submit(task("t1"))) == [] and c.m.fleet.is_dead("w1")


def test_a_late_result_of_an_earlier_attempt_past_the_deadline_is_stale() -> None:
    """Given w1 runs attempt 2 of t1 (deadline 10), When attempt 1's result arrives past
    the deadline, Expect it stale and nothing changed: the deadline is the tick's to
    enforce, and w1's count of running work must not drop."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1", deadline=10.0))
    c.result("w1", "t1", ok=False, error={"type": "Busy"}, transient=True)
    assert of(Assign, c.tick(5.0))
    c.now = 10.0
    assert c.result("w1", "t1", attempt=1) == []
    assert c.m.counters["stale_results"] == 1
    assert c.m.graph.get("t1").state is TaskState.ASSIGNED
    assert c.m.fleet.registry.get("w1").load == 1
    assert c.finals(c.tick(10.0))["t1"].state == "expired"


# --- task ids belong to their submitter ------------------------------------------------


def test_a_task_id_belongs_to_its_submitter() -> None:
    """Given t1 submitted by alice, When bob submits t1 while it runs and after it finished,
    Expect bob refused with a reason both times, never told alice's final, and alice's
    resubmission still answered from the store."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1"), who="alice", reply_to="qa")
    running = c.submit(task("t1"), who="bob", reply_to="qb")
    (refusal,) = of(RefuseTasks, running)
    assert refusal.recipient == ("bob", "qb") and "another submitter" in refusal.tasks[0][1]
    assert of(AckSubmission, running) == [AckSubmission(2)]  # nothing of bob's to wait for
    done = c.result("w1", "t1")
    assert [r for d in of(DeliverFinals, done) for _, r in d.finals] == [(("alice", "qa"),)]
    c.handle(FinalsStored(("t1",)))
    later = c.submit(task("t1"), who="bob", reply_to="qb")
    assert of(RefuseTasks, later) and not of(DeliverFinals, later)
    again = c.submit(task("t1"), who="alice", reply_to="qa2")
    (answer,) = of(DeliverFinals, again)
    assert not answer.store and answer.finals[0][1] == (("alice", "qa2"),)


def test_one_submitter_reusing_a_task_id_with_another_payload_is_refused() -> None:
    """Given t1 submitted by alice with payload 1, When alice submits t1 again with payload 2
    (while it runs, and after it finished), Expect a refusal stating the rule — the first
    submission wins, use a new id — and nothing run twice; the same payload again is still
    an idempotent resubmission."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1", payload=1), who="alice", reply_to="qa")
    running = c.submit(task("t1", payload=2), who="alice", reply_to="qa")
    (refusal,) = of(RefuseTasks, running)
    assert "first submission wins" in refusal.tasks[0][1] and of(Assign, running) == []
    c.result("w1", "t1")
    c.handle(FinalsStored(("t1",)))
    assert of(RefuseTasks, c.submit(task("t1", payload=2), who="alice", reply_to="qa"))
    (answer,) = of(DeliverFinals, c.submit(task("t1", payload=1), who="alice", reply_to="qa"))
    assert not answer.store


def test_the_loser_of_a_race_for_resources_is_told_why_it_waits_then_runs() -> None:
    """Given one agent contributing 2 cpus, When alice's task needing 2 cpus (priority 5)
    and bob's (priority 5, submitted later) arrive, Expect alice's assigned and bob told
    once that it waits for resources (what it needs, what is free, the rule); when
    alice's finishes, Expect bob's assigned."""
    c = Coordinator()
    c.join("w1", resources=Resources(cpu=2))
    first = c.submit(task("ta", resources={"cpu": 2}), who="alice", reply_to="qa")
    assert of(Assign, first)[0].messages[0].task_id == "ta"
    second = c.submit(task("tb", resources={"cpu": 2}), who="bob", reply_to="qb")
    (notice,) = of(SendProgress, second)
    assert notice.recipient == ("bob", "qb") and notice.task_id == "tb"
    assert "needs {'cpu': 2" in notice.note and "higher priority go first" in notice.note
    assert of(SendProgress, c.tick(1.0)) == []  # told once
    done = c.result("w1", "ta")
    assert [m.task_id for a in of(Assign, done) for m in a.messages] == ["tb"]


# --- clusters -----------------------------------------------------------------------


def test_a_task_for_a_named_cluster_runs_only_on_its_members_and_others_stay_default() -> None:
    """Given w1 in the default cluster and w2 in cluster c2, When a task for c2 and a
    task without a cluster arrive, Expect the first on w2 and the second on w1."""
    c = Coordinator()
    c.join("w1")
    c.join("w2", cluster_id="c2")
    c.submit(task("t1", cluster="c2"))
    c.submit(task("t2"))
    assert (c.holder("t1"), c.holder("t2")) == ("w2", "w1")


def test_a_task_for_a_cluster_without_live_members_waits() -> None:
    c = Coordinator()
    c.join("w1")
    assert of(Assign, c.submit(task("t1", cluster="c9"))) == []
    assert c.holder("t1") is None
    (assign,) = of(Assign, c.join("w9", cluster_id="c9"))  # a member appears: it runs there
    assert assign.agent_id == "w9" and c.holder("t1") == "w9"


def test_a_task_for_a_cluster_without_live_members_is_taken_with_a_warning() -> None:
    c = Coordinator()
    c.join("w1")
    c.submit(task("t1", cluster="c9"))
    answer = queries.intake_answer(c.m, ["t1"], c.now)
    assert answer["t1"]["warning"] == "waiting for a live member of cluster c9: it has none"
    c.submit(task("t2"))  # the default cluster has w1: no warning
    assert "warning" not in queries.intake_answer(c.m, ["t2"], c.now)["t2"]
