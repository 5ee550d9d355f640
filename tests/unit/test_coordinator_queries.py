"""Specification of the coordinator's queries: what a task waits for (coordinator/queries)."""

from __future__ import annotations

from test_coordinator_state import Coordinator, task

from robeing.protocol.coordinator import queries
from robeing.protocol.resources import Resources


def show(c: Coordinator, task_id: str, who: str = "c") -> dict:
    return queries.describe(c.m, who, task_id, c.now)


def test_each_unfinished_task_says_what_it_waits_for() -> None:
    """Given tasks blocked in each way, Expect each described by its kind and a reason."""
    c = Coordinator()
    c.join("w1", capacity=1, resources=Resources(cpu=2))
    c.submit(
        task("runs"),
        task("after", depends_on=("runs",)),
        task("skill", skills=("nosuch",)),
        task("huge", resources={"cpu": 8}),
        task("busy", skills=("a",)),
    )
    kinds = {t: show(c, t)["kind"] for t in ("runs", "after", "skill", "huge", "busy")}
    assert kinds == {
        "runs": "running",
        "after": "dependencies",
        "skill": "skill",
        "huge": "resources",
        "busy": "queued",
    }
    assert show(c, "runs")["detail"].startswith("running on w1, attempt 1")
    assert show(c, "after")["detail"] == "waiting for dependencies: 'runs' (assigned)"
    assert show(c, "skill")["detail"] == "waiting for a skill no live agent has: nosuch"
    assert show(c, "huge")["detail"] == (
        "waiting for resources no agent offers: needs cpu=8; "
        "the most one agent contributes is cpu=2"
    )
    assert c.m.report(c.now)["waiting"] == {
        "dependencies": 1,
        "retry": 0,
        "parts": 0,
        "skill": 1,
        "resources": 1,
        "queued": 1,
        "running": 1,
    }


def test_a_split_task_is_shown_with_its_parts() -> None:
    """Given a task split in three, one part running, Expect kind 'parts' and each part shown."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.submit(task("t", agents=3, payload=[1, 2, 3]))
    shown = show(c, "t")
    assert shown["kind"] == "parts" and shown["detail"] == "waiting for its parts: 0 of 3 done"
    assert [p["kind"] for p in shown["parts"]] == ["running", "queued", "queued"]


def test_a_task_is_shown_only_to_its_submitter_and_finished_ones_from_their_final() -> None:
    """Given c's task, Expect d refused, an unknown id not found, and once it ended, its
    final's state and reason (never its result)."""
    c = Coordinator()
    c.join("w1")
    c.submit(task("t"))
    assert show(c, "t", who="d") == {
        "task_id": "t",
        "found": True,
        "refused": "it belongs to another submitter",
    }
    assert show(c, "nosuch") == {"task_id": "nosuch", "found": False}
    c.result("w1", "t")
    shown = show(c, "t")
    assert shown["state"] == "succeeded" and shown["attempts"] == 1 and "result" not in shown


def test_a_list_holds_the_requesters_tasks_or_everyones_without_reasons() -> None:
    """Given tasks of c and d, Expect c's list to hold c's, and --all both without d's reasons;
    a state filter keeps matching rows, 'finished' adds the finals kept."""
    c = Coordinator()
    c.join("w1", capacity=1)
    c.submit(task("c1"), task("c2", skills=("nosuch",)))
    c.submit(task("d1", skills=("nosuch",)), who="d", reply_to="qd")
    mine = queries.list_tasks(c.m, "c", c.now)
    assert [r["task_id"] for r in mine] == ["c1", "c2"] and all("detail" in r for r in mine)
    everyone = queries.list_tasks(c.m, "c", c.now, everyone=True)
    assert [r["task_id"] for r in everyone] == ["c1", "c2", "d1"]
    assert "detail" not in everyone[2] and everyone[2]["submitter"] == "d"
    assert [r["task_id"] for r in queries.list_tasks(c.m, "c", c.now, states=["skill"])] == ["c2"]
    c.result("w1", "c1")
    finished = queries.list_tasks(c.m, "c", c.now, states=["finished"])
    assert [(r["task_id"], r["state"]) for r in finished] == [("c1", "succeeded")]


def test_the_answer_to_a_submission_gives_parts_and_warns_of_what_can_never_start() -> None:
    """Given no live agent with skill 'nosuch' and none offering 8 cpus, When tasks needing
    them are taken, Expect a warning for each, and the split task's real number of parts."""
    c = Coordinator()
    c.join("w1", resources=Resources(cpu=2))
    c.submit(
        task("s", skills=("nosuch",)),
        task("r", resources={"cpu": 8}),
        task("p", agents=4, payload=[1, 2, 3, 4]),
    )
    answer = queries.intake_answer(c.m, ["s", "r", "p"], c.now)
    assert answer["s"]["warning"] == "waiting for a skill no live agent has: nosuch"
    assert answer["r"]["warning"].startswith("waiting for resources no agent offers")
    assert answer["p"] == {"parts": 4, "kind": "parts"}
