"""Attack 9: reading other people's submissions and results.

DESIGN §8: confidential by default — submissions encrypted to the
coordinators, results to their submitter. Permissions narrow who can get the
bytes (a worker may not bind ``task.#`` keys, nor read the results stream);
but clients must read the results stream to fetch their results, and on the
guest login anyone may bind anything. So these tests assert on the bytes the
attacker obtains: alice's payload and result must not be in them in clear.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from robeing.broker import topology as topo

from .attacker import Attacker, Loot
from .setups import Fleet

pytestmark = [pytest.mark.broker, pytest.mark.adversarial]


def _secret() -> str:
    return f"secret-{os.urandom(6).hex()}"


async def test_a_copy_of_the_task_topic_reveals_no_payload(fleet: Fleet, finding) -> None:
    """Given an attacker with a worker's login (least privilege) or guest (default),
    When it binds a queue of its own to robeing.events with 'task.#' and alice submits a
    task whose payload (and so its result) holds a secret,
    Expect least privilege to refuse the binding (topic permission: a worker binds only
    heartbeat keys); on guest copies of the submission arrive, and the secret is in none
    of the bytes the attacker obtains (submissions encrypted to the coordinators)."""
    secret = _secret()
    loot = Loot()
    queue = topo.listen_queue(fleet.ids["mallory"], os.urandom(3).hex())
    async with Attacker(fleet.login("mallory")) as mallory, fleet.client("alice") as alice:
        bound = await mallory.bind_copy(queue, topo.EVENTS_EXCHANGE, "task.#", loot)
        handle = await alice.submit("sleepy", {"seconds": 0.1, "tag": secret})
        assert (await handle.result(15)).result == secret
        await asyncio.sleep(0.5)
    in_clear = loot.contains(secret.encode())
    finding(
        "9 read submissions (task.#)",
        "broker topic permission (read)" if not bound.allowed else "nobody",
        f"bind {bound}; {len(loot.bodies)} submission copies, the payload "
        f"{'readable in clear' if in_clear else 'not readable'}",
    )
    if fleet.least_privilege:
        assert bound.by_permission, bound
    else:
        assert bound.allowed and loot.bodies, "guest may bind any key"
    assert not in_clear, "the attacker read the submission's payload in clear"


async def test_the_results_stream_reveals_no_result(fleet: Fleet, finding) -> None:
    """Given alice's finished task whose result holds a secret, and an attacker with a
    client's login (least privilege: clients read the stream to fetch their results) or
    guest,
    When it reads robeing.results from its first record (and tries with a worker's login),
    Expect the worker's login refused under least privilege, and the secret in none of the
    records the client's login reads (results encrypted to their submitter)."""
    secret = _secret()
    async with fleet.client("alice") as alice:
        handle = await alice.submit("sleepy", {"seconds": 0.1, "tag": secret})
        assert (await handle.result(15)).result == secret
    as_worker, loot = Loot(), Loot()
    async with Attacker(fleet.login("mallory")) as mallory:
        by_worker = await mallory.read_stream(topo.RESULTS_STREAM, as_worker)
    async with Attacker(fleet.login("mallory-c")) as mallory:
        by_client = await mallory.read_stream(topo.RESULTS_STREAM, loot)
    in_clear = loot.contains(secret.encode()) or as_worker.contains(secret.encode())
    finding(
        "9 read results stream",
        "worker: broker permission (read); client: nobody" if fleet.least_privilege else "nobody",
        f"worker login: {by_worker}; client login: {by_client}, {len(loot.bodies)} records, "
        f"alice's result {'readable in clear' if in_clear else 'not readable'}",
    )
    if fleet.least_privilege:
        assert by_worker.by_permission, by_worker
    assert by_client.allowed and loot.bodies
    assert not in_clear, "the attacker read alice's result in clear from robeing.results"
