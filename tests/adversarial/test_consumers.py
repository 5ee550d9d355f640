"""Attack 1: a consumer of someone else's queue takes what it was meant for.

The attacker attaches consumers (aio-pika, a stolen login) to the
coordinator's task and heartbeat queues and to a worker's inbox and work
queues, and acknowledges whatever it gets. Under least privilege the broker
refuses each for lack of *read* permission. On the shared login only the
coordinator's own *exclusive* consumers keep it off the coordinator's
queues; a worker's queues are open to it, and what protects the fleet there
is encryption (it reads no payload) and the coordinator's attempt timeout (a
swallowed assignment is retried, so every task still ends).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest

from robeing.broker import topology as topo
from robeing.protocol.errors import AckTimeout

from .attacker import Attacker, Loot
from .setups import ATTEMPT_TIMEOUT, Fleet, finals_within

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]


async def test_the_coordinators_queues_cannot_be_consumed_by_anyone_else(
    fleet: Fleet, finding
) -> None:
    """Given a serving coordinator and an attacker with a worker's login (least privilege)
    or guest (default),
    When it attaches consumers to robeing.coordinator.tasks and .heartbeats, and keeps
    getting from both, while alice's tasks run,
    Expect, under least privilege, both consumers and every basic.get refused by
    permission; on guest, the consumers attached but idle and basic.get refused
    (RESOURCE_LOCKED): both queues have a single active consumer, the coordinator's.
    Either way no submission in the attacker's hands, every task completed and no worker
    declared dead."""
    loot = Loot()
    async with Attacker(fleet.login("mallory")) as mallory, fleet.client("alice") as alice:
        tasks = await mallory.consume(topo.TASK_QUEUE, loot)
        beats = await mallory.consume(topo.HEARTBEAT_QUEUE, loot)
        handles = [await alice.submit("sleepy", {"seconds": 0.5, "tag": f"t{i}"}) for i in range(5)]
        gets = []
        until = time.monotonic() + 3.0  # longer than the detector's tolerated silence
        while time.monotonic() < until:
            for queue in (topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE):
                gets.append(await mallory.get_all(queue, loot))
            await asyncio.sleep(0.2)
    finals = await finals_within(handles, 10)
    report = fleet.coordinator_report()

    kinds = Counter(f.get("type") for f in loot.envelopes())
    lost = sum(f is None for f in finals)
    finding(
        "1 consume tasks/heartbeats",
        "broker permission (read)" if fleet.least_privilege else "nobody",
        f"consume tasks: {tasks}; consume heartbeats: {beats}; basic.get "
        f"{'allowed' if any(g.allowed for g in gets) else 'refused'}; took {dict(kinds)}; "
        f"{lost}/5 tasks lost; workers {report['health']}",
    )
    if fleet.least_privilege:
        assert tasks.by_permission and beats.by_permission, (tasks, beats)
        assert not any(g.allowed for g in gets)
    assert kinds["task.submit"] == 0, (
        f"the attacker took {kinds['task.submit']} submission(s) (consume: {tasks})"
    )
    assert kinds["heartbeat"] == 0, f"the attacker took {kinds['heartbeat']} heartbeat(s)"
    assert not any(g.allowed for g in gets), gets
    assert [f and f.state for f in finals] == ["succeeded"] * 5
    health = report["health"]
    assert health[fleet.ids["w1"]] == health[fleet.ids["w2"]] == "alive", health
    assert report.get("reassigned", 0) == 0


async def test_swallowed_messages_and_assignments_still_end_every_task(
    fleet: Fleet, finding
) -> None:
    """Given two workers and an attacker consuming w1's inbox and both work queues
    (worker login, least privilege; guest, default),
    When alice submits tasks without a deadline and asks w1 for echoes,
    Expect least privilege to refuse all three consumers (read permission) and the work
    to go through untouched; on guest the consumers are allowed and take a share of the
    assignments and messages — envelopes whose sender and type it can read but whose
    payload is encrypted to the worker — and every task still ends: the coordinator fails
    an attempt that brings no result within --attempt-timeout and retries it."""
    secret = f"secret-{os.urandom(4).hex()}"
    w1, w2 = fleet.ids["w1"], fleet.ids["w2"]
    inbox, work = Loot(), Loot()
    async with Attacker(fleet.login("mallory")) as mallory, fleet.client("alice") as alice:
        attached = [
            await mallory.consume(topo.agent_queue(w1), inbox),
            await mallory.consume(topo.work_queue(w1), work),
            await mallory.consume(topo.work_queue(w2), work),
        ]
        start = time.monotonic()
        handles = []
        for i in range(6):  # one assignment message each: a consumer in turn gets each
            handles.append(await alice.submit("sleepy", {"seconds": 0.1, "tag": f"{secret}-{i}"}))
            await asyncio.sleep(0.05)
        echoes_lost = 0
        for i in range(4):
            try:
                await alice.request(w1, "echo", f"{secret}-echo-{i}", timeout=2)
            except AckTimeout:
                echoes_lost += 1
        # Three attempts, each ended by the attempt timeout at worst, plus backoff.
        bound = 3 * ATTEMPT_TIMEOUT + 15
        finals = [await h.result(max(1.0, bound - (time.monotonic() - start))) for h in handles]
        took = time.monotonic() - start

    retried = sum(1 for f in finals if f.attempts > 1)
    assert all(f.state in ("succeeded", "dead_lettered", "failed") for f in finals)
    assert all(f.ok for f in finals if f.attempts == 1)
    assert not work.contains(secret.encode()) and not inbox.contains(secret.encode())
    if fleet.least_privilege:
        assert all(a.by_permission for a in attached), attached
        assert work.bodies == inbox.bodies == [] and echoes_lost == 0
        assert [f.state for f in finals] == ["succeeded"] * 6 and retried == 0
    else:
        assert all(a.allowed for a in attached), attached
        assert work.bodies, "guest may consume a worker's work queues"
        for fields in work.envelopes():
            assert fields["type"] == "task.assign" and fields["encryption"] == "box"
            assert "payload" not in fields or fields["payload"] is None
        assert retried >= 1  # a swallowed assignment came back after the attempt timeout
    finding(
        "1 consume inbox/work",
        "broker permission (read)"
        if fleet.least_privilege
        else "nobody; encryption hides payloads",
        f"took {len(work.bodies)} assignment message(s), {len(inbox.bodies)} inbox message(s) "
        f"({echoes_lost}/4 echoes lost); payloads encrypted; "
        f"{sum(f.ok for f in finals)}/6 tasks succeeded, {retried} after a timed-out attempt, "
        f"all ended in {took:.1f}s",
    )
