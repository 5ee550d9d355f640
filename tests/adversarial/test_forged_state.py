"""Attacks 3-5: forging the state the broker keeps for the coordinators.

What is not a signed envelope — results-stream records, the epoch queue, the
lock queue — is written through the default exchange or declared by anyone
with *configure*, so DESIGN §8 treats it as a hint. Under least privilege
only coordinators may write or declare these; on the guest login anyone may,
and the coordinator must still not serve a forged result, nor stop assigning
because of a forged epoch. Each attack ends with a coordinator restart, when
that state is read.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import msgpack
import pytest

from robeing.broker import topology as topo
from robeing.protocol.taskmsgs import FinalResult

from .attacker import Attacker, Loot
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]


def robeing_result(fleet: Fleet, task_id: str) -> subprocess.CompletedProcess[str]:
    """``robeing result TASK_ID --json`` as alice would run it (her login in AMQP_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBEING_", "AMQP_URL"))}
    env["AMQP_URL"] = fleet.keys.broker_url(fleet.agent_url, fleet.ids["alice"])
    env["ROBEING_KEYS"] = str(fleet.keys.root)
    cmd = [sys.executable, "-m", "robeing.agents", "result", task_id, "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


async def test_a_forged_results_record_is_never_printed_or_served(fleet: Fleet, finding) -> None:
    """Given a task id of alice's, and an attacker with a worker's login (least privilege)
    or guest (default),
    When it appends an unsigned record claiming that task succeeded (submitter alice) to
    robeing.results through the default exchange, then alice runs `robeing result ID`,
    the coordinator restarts and alice submits that id,
    Expect least privilege to refuse the write (no write on amq.default); and in both
    setups neither `robeing result` nor the coordinator to print or serve the forged
    value: alice's submission runs and returns its real result."""
    task_id = f"report-{os.urandom(4).hex()}"
    forged_value = f"forged-{os.urandom(4).hex()}"
    forged = FinalResult(task_id, "succeeded", forged_value, attempts=1, finished_at=time.time())
    record = msgpack.packb([{**forged.to_data(), "submitter": fleet.ids["alice"]}])
    async with Attacker(fleet.login("mallory")) as mallory:
        appended = await mallory.publish("", topo.RESULTS_STREAM, record)
    printed = robeing_result(fleet, task_id)
    await fleet.restart("coordinator")
    async with fleet.client("alice") as alice:
        handle = await alice.submit("add", {"a": 20, "b": 22}, task_id=task_id)
        final = await handle.result(20)

    shown = forged_value in printed.stdout + printed.stderr
    finding(
        "3 forge results record",
        "broker permission (write amq.default)" if not appended.allowed else "nobody",
        f"append {appended}; `robeing result` {'printed the forged value' if shown else 'did not'}"
        f" (exit {printed.returncode}); after a coordinator restart alice's submission got "
        f"{final.state} {final.result!r}",
    )
    if fleet.least_privilege:
        assert appended.by_permission, appended
    assert not shown, f"`robeing result` printed the forged record:\n{printed.stdout}"
    assert final.result != forged_value, "the coordinator served the forged record"
    assert final.ok and final.result == 42, final


async def _serving_within(fleet: Fleet, since: float, seconds: float) -> bool:
    try:
        await fleet.wait_serving("coordinator", since, timeout=seconds)
    except TimeoutError:
        return False
    return True


POISONS = {"2**64-1": str(2**64 - 1).encode(), "garbage": b"\xff\xfe" + os.urandom(14)}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_a_poisoned_epoch_does_not_stop_assignments(
    fleet: Fleet, poison: str, finding
) -> None:
    """Given a serving coordinator, and an attacker with a worker's login or guest,
    When it publishes 2**64-1 (or garbage) into robeing.coordinator.epoch and the
    coordinator restarts,
    Expect least privilege to refuse the publish; and in both setups the restarted
    coordinator to take the lead with a usable epoch and assign tasks that complete."""
    async with Attacker(fleet.login("mallory")) as mallory:
        published = await mallory.publish("", topo.EPOCH_QUEUE, POISONS[poison])
    since = time.time()
    await fleet.stop("coordinator")
    await fleet.start("coordinator")
    try:
        beats = await _serving_within(fleet, since, 10)
        epoch = fleet.coordinator_report().get("epoch") if beats else None
        try:
            async with fleet.client("alice") as alice:
                handle = await alice.submit("add", {"a": 1, "b": 2})
                final = await handle.result(15)
            outcome = f"{final.state} {final.result!r}"
        except TimeoutError:
            final, outcome = None, "no result within 15s"
        log = fleet.log("coordinator")
    finally:
        if published.allowed:  # the operator clears the queue, for the tests after this one
            async with Attacker(fleet.admin_url, "operator") as operator:
                await operator.purge(topo.EPOCH_QUEUE)
            await fleet.restart("coordinator")
    errors = sorted({line.split(": ", 1)[-1] for line in log.splitlines() if "failed" in line})
    finding(
        f"4 poison epoch {poison}",
        "broker permission (write amq.default)" if not published.allowed else "nobody",
        f"publish {published}; after the restart the coordinator "
        f"{'heartbeats as active' if beats else 'is not seen active'}, a task: {outcome}"
        + (f"; its log: {'; '.join(errors)[:200]}" if errors else ""),
    )
    if fleet.least_privilege:
        assert published.by_permission, published
    assert final is not None and final.ok, f"{outcome}; coordinator log: {errors}"
    assert beats, f"the restarted coordinator never heartbeat as active: {errors}"
    assert isinstance(epoch, int) and epoch < 2**63, epoch


async def test_taking_the_lock_while_the_coordinator_restarts(fleet: Fleet, finding) -> None:
    """Given a serving coordinator, and an attacker with a worker's login or guest,
    When the coordinator stops and the attacker keeps trying to take robeing.coordinator.lock
    (consuming it: the lock's holder is that quorum queue's single active consumer) while
    it starts again, and alice submits a task meanwhile,
    Expect least privilege to refuse every attempt (read) and the coordinator to
    take the lead and run the task at once. On guest the attacker owns the lock: the
    restarted coordinator waits as a standby and the task waits with it (accepted, not
    lost) until the attacker's connection closes; then the coordinator takes over and
    the task completes."""
    async with fleet.client("alice") as alice:
        async with Attacker(fleet.login("mallory")) as mallory:
            await fleet.stop("coordinator")
            tries, held = [], None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                outcome = await mallory.consume(topo.COORDINATOR_LOCK, Loot())
                tries.append(outcome)
                if outcome.allowed or outcome.by_permission:
                    held = outcome
                    break
                await asyncio.sleep(0.02)
            since = time.time()
            await fleet.start("coordinator")
            handle = await alice.submit("add", {"a": 2, "b": 3})
            # Least privilege: the coordinator should lead at once; the window only
            # allows for a slow start on a loaded machine. On guest it stays standby,
            # so there a short look is enough.
            window = 15 if fleet.least_privilege else 5
            active_while_held = await _serving_within(fleet, since, window)
            done_while_held = handle.finished
            released = time.monotonic()
        active_after = await _serving_within(fleet, since, 15)
        took_over = time.monotonic() - released
        final = await handle.result(15)

    owned = held is not None and held.allowed
    finding(
        "5 take coordinator lock",
        "broker permission (read)" if held is not None and not owned else "nobody",
        f"consume {held} after {len(tries)} tries; restarted coordinator "
        f"{'active' if active_while_held else 'standby'} while the attacker was connected, "
        f"task {'done' if done_while_held else 'waiting'}; after it left: coordinator "
        f"{'active' if active_after else 'standby'} ({took_over:.1f}s), task {final.state}",
    )
    assert final.ok and final.result == 5
    assert active_after
    if fleet.least_privilege:
        assert held is not None and held.by_permission, tries[-1]
        assert active_while_held and done_while_held
    else:
        assert owned, tries[-1]
        assert not active_while_held and not done_while_held
