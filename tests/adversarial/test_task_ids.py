"""Attack 8: taking over a task id (DESIGN §8: task ids belong to their submitter).

Task ids are chosen by submitters and may be predictable (``report-2024-06``).
The attacker here submits as a client identity of its own (``mallory-c``,
through robeing's ``Client``); alice is the honest submitter. The broker has
no say — both may submit in both setups —: the coordinator's rule does. The
first submitter owns an id; anyone else submitting it is refused with a
reason and never receives the owner's result.
"""

from __future__ import annotations

import os

import pytest

from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]


async def test_an_id_taken_first_is_refused_to_the_victim(fleet: Fleet, finding) -> None:
    """Given alice about to submit a task under a predictable id,
    When mallory-c submits that id first (with a result of its choosing) and alice
    submits it afterwards,
    Expect alice's submission refused with the reason (the id belongs to another
    submitter) and alice never given mallory's result; mallory gets its own."""
    task_id = f"report-{os.urandom(3).hex()}"
    async with fleet.client("mallory-c") as mallory, fleet.client("alice") as alice:
        theirs = await mallory.submit("sleepy", {"seconds": 0.5, "tag": "mallory"}, task_id=task_id)
        first = await theirs.result(15)
        mine = await alice.submit("sleepy", {"seconds": 0.1, "tag": "alice"}, task_id=task_id)
        final = await mine.result(15)
    finding(
        "8 task id taken first",
        "coordinator (id belongs to its first submitter)",
        f"mallory's task {first.state} {first.result!r}; alice's: {final.state} "
        f"({final.error}) result {final.result!r}",
    )
    assert first.ok and first.result == "mallory"
    assert final.state == "failed" and final.result is None
    assert "belongs to another submitter" in (final.error or "")


async def test_resubmitting_a_victims_id_does_not_yield_its_result(fleet: Fleet, finding) -> None:
    """Given alice's finished task and one still running,
    When mallory-c submits both ids,
    Expect both refused with the reason, and mallory given neither alice's result nor a
    place among the recipients of the running one; alice gets both of hers."""
    done_id, running_id = f"alice-{os.urandom(3).hex()}", f"alice-{os.urandom(3).hex()}"
    async with fleet.client("alice") as alice, fleet.client("mallory-c") as mallory:
        done = await alice.submit("sleepy", {"seconds": 0.1, "tag": "alice-1"}, task_id=done_id)
        assert (await done.result(15)).result == "alice-1"
        running = await alice.submit("sleepy", {"seconds": 2, "tag": "alice-2"}, task_id=running_id)
        stolen = [
            await mallory.submit("sleepy", {"seconds": 0.1, "tag": "x"}, task_id=task_id)
            for task_id in (done_id, running_id)
        ]
        got = [await h.result(15) for h in stolen]
        own = await running.result(15)
    finding(
        "8 resubmit a victim's id",
        "coordinator (id belongs to its first submitter)",
        f"mallory got {[(f.state, f.result) for f in got]}; alice's running task {own.state} "
        f"{own.result!r}",
    )
    for final in got:
        assert final.state == "failed" and final.result is None, final
        assert "belongs to another submitter" in (final.error or "")
    assert own.ok and own.result == "alice-2"
