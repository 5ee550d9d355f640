"""Attacks 10-11: values that used to hang the coordinator or lose work.

Every field from the wire is validated before it reaches a broker argument
or a loop bound (DESIGN §8). Out-of-bounds values come here from a legitimate
client through the ``Client``'s lower layer, past the checks the ``Client``
applies locally, so that the coordinator is the one to receive them. Results
too large for a message must fail their task with the reason, never hang it.
Both setups behave alike: the broker has no part in this.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from typing import Any

import pytest

from robeing.agents.client import TaskHandle
from robeing.broker import topology as topo
from robeing.protocol.taskmsgs import TaskRequest

from .setups import Fleet, finals_within, submit_unchecked

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]

# field -> bad values; the coordinator must name the field in each failure.
BAD: dict[str, list[Any]] = {
    "deadline": [1e18, math.nan],
    "priority": [10, -1, 2**63],
    "agents": [0, -5, 100_000],
    "max_attempts": [0],
}
MIB = 1 << 20


def _bad_tasks(tag: str) -> list[tuple[str, TaskRequest]]:
    out = []
    for name, values in BAD.items():
        for i, value in enumerate(values):
            request = TaskRequest(f"bad-{tag}-{name}-{i}", "add", {"a": 1, "b": 1})
            out.append((name, dataclasses.replace(request, **{name: value})))
    return out


async def test_bad_values_fail_their_tasks_and_nothing_else(fleet: Fleet, finding) -> None:
    """Given bob streaming valid submissions, and alice sending three submissions that
    each mix valid tasks with out-of-bounds ones — deadline 1e18 and NaN, priority 10,
    -1 and 2**63, agents 0, -5 and 100000, max_attempts 0 —,
    When the coordinator receives them,
    Expect every bad task to get a failed final naming its field, every valid task to
    complete with its result, the coordinator to keep its lock and epoch and keep
    serving, and robeing.coordinator.tasks to hold nothing at the end:
    accepted = completed, lost = 0."""
    tag = os.urandom(3).hex()
    before = fleet.coordinator_report()
    expected: dict[str, Any] = {}  # task id -> result, or the field its failure names
    handles: dict[str, TaskHandle] = {}
    async with fleet.client("alice") as alice, fleet.client("bob") as bob:
        stop = asyncio.Event()

        async def stream() -> None:
            i = 0
            while not stop.is_set():
                h = await bob.submit("add", {"a": i, "b": 1000}, task_id=f"bob-{tag}-{i}")
                handles[h.task_id], expected[h.task_id] = h, i + 1000
                i += 1
                await asyncio.sleep(0.05)

        streaming = asyncio.create_task(stream())
        bad = _bad_tasks(tag)
        for k in range(3):
            batch = [TaskRequest(f"ok-{tag}-{k}-{j}", "add", {"a": k, "b": j}) for j in range(3)]
            expected.update((r.id, k + j) for j, r in enumerate(batch))
            mixed = bad[3 * k : 3 * k + 3]
            expected.update((r.id, name) for name, r in mixed)
            requests = [r for _, r in mixed] + batch
            for h in await submit_unchecked(alice, requests):
                handles[h.task_id] = h
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        stop.set()
        await streaming
        finals = dict(zip(handles, await finals_within(list(handles.values()), 30), strict=True))
    await asyncio.sleep(5.5)  # the management API's counts are at most 5 s old after this
    tasks_queue = await fleet.settled(topo.TASK_QUEUE)
    after = fleet.coordinator_report()

    def as_expected(task_id: str) -> bool:
        final, want = finals[task_id], expected[task_id]
        if final is None:
            return False
        if isinstance(want, str):  # a bad field: failed, with the field named
            return final.state == "failed" and want in (final.error or "")
        return final.ok and final.result == want

    accepted, lost = len(handles), sum(f is None for f in finals.values())
    completed = sum(as_expected(t) for t in handles)
    wrong = {t: finals[t] for t in handles if finals[t] is not None and not as_expected(t)}
    held = (tasks_queue.get("messages_ready") or 0) + (
        tasks_queue.get("messages_unacknowledged") or 0
    )
    figures = f"accepted {accepted} / completed {completed} / lost {lost}"
    print(f"attack 10 [{fleet.setup}]: {figures}, unexpected {len(wrong)}, held {held}")
    finding(
        "10 bad values",
        "coordinator (field validation)",
        f"{figures} ({len(bad)} bad tasks failed with the reason); coordinator epoch "
        f"{before.get('epoch')} -> {after.get('epoch')}, active {after.get('active')}; "
        f"{held} submission(s) left in the task queue",
    )
    assert lost == 0, [t for t, f in finals.items() if f is None]
    assert wrong == {}, wrong
    assert completed == accepted
    assert after.get("active") and after.get("epoch") == before.get("epoch")
    assert held == 0, tasks_queue


async def test_results_over_a_message_fail_with_the_reason(fleet: Fleet, finding) -> None:
    """Given a task whose result is 1.5 MiB, and a chain whose three 400 KiB results are
    the inputs of a fourth task (1.2 MiB together),
    When alice submits them,
    Expect the big task and the chain's last task to get a failed final with the reason
    (a size over the limit), the three others to succeed and reach alice, and none to
    hang."""
    tag = os.urandom(3).hex()
    parts = [TaskRequest(f"part-{tag}-{i}", "blob", {"size": 400 << 10}) for i in range(3)]
    joined = TaskRequest(
        f"joined-{tag}", "blob", {"size": 1}, depends_on=tuple(p.id for p in parts)
    )
    start = time.monotonic()
    async with fleet.client("alice") as alice:
        big = await alice.submit("blob", {"size": 3 * MIB // 2}, task_id=f"big-{tag}")
        chain = await alice.submit_many([*parts, joined])
        finals = await finals_within([big, *chain], 40)
    took = time.monotonic() - start

    big_final, *part_finals, joined_final = finals

    def summary(f: Any) -> str:
        return "no final" if f is None else f"{f.state} ({(f.error or '')[:90]})"

    finding(
        "11 results over 1 MiB",
        "coordinator / worker (size limit)",
        f"1.5 MiB result: {summary(big_final)}; 3 x 400 KiB parts: "
        f"{[summary(f) if f is None or not f.ok else 'succeeded' for f in part_finals]}; "
        f"their dependent: {summary(joined_final)}; {took:.1f}s",
    )
    for final in (big_final, joined_final):
        assert final is not None and final.state == "failed", summary(final)
        assert "bytes" in (final.error or ""), final.error
    assert all(f is not None and f.ok and len(f.result) == 400 << 10 for f in part_finals), [
        summary(f) for f in part_finals
    ]
