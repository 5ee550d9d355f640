"""Attack 7: forging a worker's death with connections named like it.

A connection's name is what the client says it is. The coordinator learns of
crashes from the broker's connection events, so an attacker that opens and
closes connections named ``robeing worker <id> [..] … inst=<incarnation>``
(the incarnation read from the worker's own heartbeats) could have a live
worker declared dead and its tasks run twice. The coordinator takes a close
as proof only when the broker authenticated the worker's own user on that
connection, in its vhost; any other close makes the worker suspected until
its next heartbeat.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from robeing.broker import topology as topo
from robeing.broker.management import with_vhost

from .attacker import Attacker, Loot, open_and_close
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]

CLOSES = 15  # per vhost


async def _incarnation(fleet: Fleet, worker: str) -> str:
    """Read ``worker``'s incarnation from its heartbeat, as the attacker can."""
    loot = Loot()
    key = topo.heartbeat_routing_key("worker", worker)
    queue = topo.listen_queue(fleet.ids["mallory"], os.urandom(3).hex())
    async with Attacker(fleet.login("mallory")) as mallory:
        bound = await mallory.bind_copy(queue, topo.EVENTS_EXCHANGE, key, loot)
        assert bound.allowed, bound
        for _ in range(100):  # heartbeats come every 0.5 s
            if loot.bodies:
                break
            await asyncio.sleep(0.05)
    (beat,) = [f["payload"] for f in loot.envelopes()[:1]]
    return beat["incarnation"]


async def test_forged_connection_closes_do_not_kill_a_live_worker(
    fleet: Fleet, broker_url: str, finding
) -> None:
    """Given w1 running tasks, and an attacker with a worker's login (least privilege) or
    guest (default) that read w1's incarnation from its heartbeat,
    When it opens and closes 15 connections named exactly like w1's, in the fleet's vhost,
    and 15 more in another vhost (as guest there),
    Expect w1 never declared dead, none of its tasks reassigned (each finishes in its
    first attempt), the same-vhost closes counted as unconfirmed (suspicion only, refuted
    by w1's heartbeats) and the other vhost's ignored."""
    w1 = fleet.ids["w1"]
    inst = await _incarnation(fleet, w1)
    name = f"robeing worker {w1} [math] cluster=default vhost={fleet.vhost} inst={inst}"
    other_vhost_url = with_vhost(broker_url, "/")
    before = fleet.coordinator_report()
    health_seen: set[str] = set()
    async with fleet.client("alice") as alice:
        handles = [
            await alice.submit("sleepy", {"seconds": 4, "tag": f"long-{i}"}) for i in range(4)
        ]
        deadline = time.monotonic() + 5
        while w1 not in fleet.coordinator_report().get("in_flight", {}):
            assert time.monotonic() < deadline, "no task ran on w1"
            await asyncio.sleep(0.05)
        running = fleet.coordinator_report()["in_flight"][w1]
        opened = await open_and_close(fleet.login("mallory"), name, CLOSES)
        opened += await open_and_close(other_vhost_url, name, CLOSES)
        for _ in range(20):  # the suspicion lasts at most a grace period
            health_seen.add(fleet.coordinator_report()["health"].get(w1, "gone"))
            await asyncio.sleep(0.1)
        finals = [await h.result(20) for h in handles]
    after = fleet.coordinator_report()

    def grew(counter: str) -> int:
        return after.get(counter, 0) - before.get(counter, 0)

    finding(
        "7 connection-close forgery",
        "coordinator (close attributed by the broker's user and vhost)",
        f"{opened} connections opened and closed as {w1!r} inst={inst} while it ran {running} "
        f"task(s); w1 seen "
        f"{sorted(health_seen)}; reassigned +{grew('reassigned')}, connection deaths "
        f"+{grew('connection_deaths')}, unconfirmed closes +{grew('unconfirmed_closes')}; "
        f"attempts of the tasks {[f.attempts for f in finals]}",
    )
    assert opened == 2 * CLOSES
    assert "dead" not in health_seen and "gone" not in health_seen, health_seen
    assert all(f.ok and f.attempts == 1 for f in finals), finals
    assert grew("reassigned") == 0 and grew("connection_deaths") == 0
    assert 1 <= grew("unconfirmed_closes") <= CLOSES  # ours, in this vhost only
    assert running >= 1
