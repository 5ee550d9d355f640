"""Per-agent broker users on a real RabbitMQ: what the broker refuses, what still works.

Given a coordinator, two workers, a guardian and a client issued in a keys
directory, when ``robeing broker setup`` and ``robeing broker users --apply``
have run (as the CLI, in this session's vhost), expect the broker itself —
driven with aio-pika directly, not with robeing's client — to refuse a
worker everything it does not own and to allow what its job needs. The
users are made with random suffixes (users are global to the broker) and
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import pytest

from robeing.agents.keystore import Keystore
from robeing.broker import topology as topo
from robeing.broker.management import Management, with_vhost

pytestmark = pytest.mark.broker

Action = Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]


@dataclass(frozen=True)
class Fleet:
    keys: Keystore
    url: str  # the agents' AMQP_URL: this vhost, no login in it
    admin_url: str
    vhost: str
    tag: str  # in every user name made here
    ids: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBEING_", "AMQP_URL"))}
        cmd = [sys.executable, "-m", "robeing.agents", "--keys-dir", str(self.keys.root)]
        cmd += ["--amqp-url", self.url, *args, "--admin-url", self.admin_url]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    def apply(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``robeing broker users --apply``, connection events in this vhost too."""
        return self.cli("broker", "users", "--apply", "--events-vhost", self.vhost, *args)

    async def connect(self, who: str) -> aio_pika.abc.AbstractConnection:
        """A plain aio-pika connection with ``who``'s own login (Keystore.broker_url)."""
        return await aio_pika.connect(self.keys.broker_url(self.url, self.ids[who]))


@pytest.fixture(scope="module")
async def fleet(
    broker_url: str, management: Management, vhost: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    tag = uuid.uuid4().hex[:6]
    roles = {
        "coordinator": "coordinator",
        "worker": "worker",
        "other_worker": "worker",
        "guardian": "guardian",
        "client": "client",
    }
    ids = {who: f"t{tag}-{who.replace('_', '-')}" for who in roles}
    keys = Keystore(tmp_path_factory.mktemp("broker-users") / "keys")
    keys.init()
    for who, role in roles.items():
        keys.issue(ids[who], role)
    bare = with_vhost("amqp://127.0.0.1:5672/", vhost)
    fleet = Fleet(keys, bare, with_vhost(broker_url, vhost), vhost, tag, ids)
    try:
        fleet.cli("broker", "setup")
        applied = json.loads(fleet.apply("--json").stdout)
        assert {u["user"]: u["broker"] for u in applied["users"]} == {
            name: "created" for name in ids.values()
        }
        yield fleet
    finally:
        for name in [*ids.values(), f"t{tag}-revoked"]:  # also closes their connections
            await management.delete_user(name)


async def refused(conn: aio_pika.abc.AbstractConnection, action: Action) -> None:
    """Expect the broker to close the channel with ACCESS_REFUSED (403)."""
    channel = await conn.channel()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await action(channel)


async def allowed(conn: aio_pika.abc.AbstractConnection, action: Action) -> Any:
    channel = await conn.channel()
    try:
        return await action(channel)
    finally:
        await channel.close()


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def consume(queue: str) -> Action:
    async def go(ch: aio_pika.abc.AbstractChannel) -> None:
        q = await ch.get_queue(queue, ensure=False)
        await q.consume(ignore)

    return go


def purge(queue: str) -> Action:
    async def go(ch: aio_pika.abc.AbstractChannel) -> None:
        await (await ch.get_queue(queue, ensure=False)).purge()

    return go


def publish(exchange: str, key: str) -> Action:
    async def go(ch: aio_pika.abc.AbstractChannel) -> None:
        ex = (
            ch.default_exchange if exchange == "" else await ch.get_exchange(exchange, ensure=False)
        )
        await ex.publish(aio_pika.Message(b"x"), routing_key=key, mandatory=False)

    return go


def declare(spec: topo.QueueSpec) -> Action:
    async def go(ch: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
        return await ch.declare_queue(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=spec.arguments,
        )

    return go


def declare_and_bind(spec: topo.QueueSpec, exchange: str, key: str) -> Action:
    async def go(ch: aio_pika.abc.AbstractChannel) -> None:
        queue = await declare(spec)(ch)
        await queue.bind(exchange, routing_key=key)

    return go


async def test_a_worker_is_refused_what_it_does_not_own(fleet: Fleet) -> None:
    """Given the users applied, When a worker tries what only a coordinator or another
    agent may do, Expect ACCESS_REFUSED from the broker every time."""
    me, other = fleet.ids["worker"], fleet.ids["other_worker"]
    other_conn, conn = await fleet.connect("other_worker"), await fleet.connect("worker")
    try:
        await allowed(other_conn, declare(topo.inbox_spec(other)))
        listener = topo.QueueSpec(
            topo.listen_queue(me, "a1b2c3"), durable=False, exclusive=True, auto_delete=True
        )
        for action in [
            consume(topo.TASK_QUEUE),
            consume(topo.agent_queue(other)),
            consume(topo.RESULTS_STREAM),
            lambda ch: ch.queue_delete(topo.DEAD_LETTER_QUEUE),
            purge(topo.DEAD_LETTER_QUEUE),
            publish("", topo.EPOCH_QUEUE),
            publish("", topo.RESULTS_STREAM),
            publish("", topo.agent_queue(other)),
            declare(topo.lock_spec()),
            declare(topo.task_queue_spec(topo.TopologySettings())),
            lambda ch: ch.declare_exchange(topo.DIRECT_EXCHANGE, "direct", durable=True),
            publish(topo.EVENTS_EXCHANGE, topo.heartbeat_routing_key("worker", other)),
            publish(topo.EVENTS_EXCHANGE, topo.heartbeat_routing_key("coordinator", me)),
            declare_and_bind(listener, topo.EVENTS_EXCHANGE, "task.#"),
            declare_and_bind(topo.inbox_spec(me), topo.DEAD_EXCHANGE, ""),
        ]:
            await refused(conn, action)
    finally:
        await conn.close()
        await other_conn.close()


async def test_a_worker_can_do_its_job(fleet: Fleet, management: Management, vhost: str) -> None:
    """Given the users applied, When a worker declares its own queues (with the DLX),
    binds them, heartbeats and answers, Expect the broker to allow it, logged in as itself."""
    me = fleet.ids["worker"]
    conn = await fleet.connect("worker")
    try:
        for name, _kind in topo.EXCHANGES:  # refused to declare them, it checks them passively
            await allowed(conn, lambda ch, n=name: ch.declare_exchange(n, passive=True))
        await allowed(conn, declare_and_bind(topo.inbox_spec(me), topo.DIRECT_EXCHANGE, me))
        await allowed(conn, declare(topo.work_spec(me, topo.TopologySettings())))
        await allowed(conn, declare_and_bind(topo.broadcast_spec(me), topo.BROADCAST_EXCHANGE, ""))
        reply = topo.reply_spec(me, "0a1b2c3d")
        await allowed(conn, declare_and_bind(reply, topo.REPLY_EXCHANGE, reply.name))
        await allowed(conn, publish(topo.EVENTS_EXCHANGE, topo.heartbeat_routing_key("worker", me)))
        await allowed(conn, publish(topo.EVENTS_EXCHANGE, topo.task_routing_key("analysis")))
        await allowed(conn, publish(topo.REPLY_EXCHANGE, topo.reply_queue("someone", "0a1b2c3d")))
        await allowed(conn, publish(topo.DIRECT_EXCHANGE, fleet.ids["other_worker"]))
        await allowed(conn, publish(topo.DEAD_EXCHANGE, topo.agent_queue(me)))
        await allowed(conn, consume(topo.agent_queue(me)))
        for _ in range(100):  # the management API lists a connection within seconds
            if me in {c.get("user") for c in await management.connections(vhost)}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no connection of user {me} in {vhost}")
    finally:
        await conn.close()


async def test_coordinator_guardian_and_client_can_do_theirs(fleet: Fleet) -> None:
    """Expect the coordinator to publish through the default exchange and read its queues,
    the guardian to watch the dead letters, and the client to read the results stream
    but send no heartbeat."""
    coordinator, guardian, client = (
        await fleet.connect("coordinator"),
        await fleet.connect("guardian"),
        await fleet.connect("client"),
    )
    try:
        await allowed(coordinator, declare(topo.epoch_spec()))
        await allowed(coordinator, publish("", topo.EPOCH_QUEUE))
        await allowed(coordinator, consume(topo.TASK_QUEUE))
        await allowed(coordinator, declare(topo.lock_spec()))
        await refused(coordinator, consume(topo.DEAD_LETTER_QUEUE))
        watch = topo.QueueSpec(
            topo.watch_queue(fleet.ids["guardian"], "0a1b2c3d"),
            durable=False,
            exclusive=True,
            auto_delete=True,
        )
        await allowed(guardian, declare_and_bind(watch, topo.DEAD_EXCHANGE, ""))
        await refused(guardian, consume(topo.DEAD_LETTER_QUEUE))

        async def read_results(ch: aio_pika.abc.AbstractChannel) -> None:
            await ch.set_qos(prefetch_count=10)
            q = await ch.get_queue(topo.RESULTS_STREAM, ensure=False)
            tag = await q.consume(ignore, arguments={"x-stream-offset": "first"})
            await q.cancel(tag)

        await allowed(client, read_results)
        await refused(
            client, publish(topo.EVENTS_EXCHANGE, f"heartbeat.client.{fleet.ids['client']}")
        )
    finally:
        for conn in (coordinator, guardian, client):
            await conn.close()


async def test_known_limit_an_exchange_binding_carries_any_heartbeat_key(fleet: Fleet) -> None:
    """Given a worker, When it binds robeing.events to robeing.broadcast and publishes a
    coordinator's heartbeat key there, Expect the broker to allow it and route it to the
    coordinator's heartbeats (deploy/README.md, what permissions cannot stop): the
    envelope inside is still signed by its real sender, which is what the coordinator reads."""
    forged = topo.heartbeat_routing_key("coordinator", fleet.ids["coordinator"])
    conn, coordinator = await fleet.connect("worker"), await fleet.connect("coordinator")
    try:

        async def forge(ch: aio_pika.abc.AbstractChannel) -> None:
            events = await ch.get_exchange(topo.EVENTS_EXCHANGE, ensure=False)
            await events.bind(topo.BROADCAST_EXCHANGE, routing_key="")
            try:
                await publish(topo.BROADCAST_EXCHANGE, forged)(ch)
            finally:
                await events.unbind(topo.BROADCAST_EXCHANGE, routing_key="")

        await allowed(conn, forge)

        async def received(ch: aio_pika.abc.AbstractChannel) -> bool:
            # The queue has a single active consumer, so basic.get is refused: consume.
            q = await ch.get_queue(topo.HEARTBEAT_QUEUE, ensure=False)
            found = asyncio.Event()

            async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                await msg.ack()
                if msg.routing_key == forged:
                    found.set()

            tag = await q.consume(on)
            try:
                await asyncio.wait_for(found.wait(), 5)
            except TimeoutError:
                return False
            finally:
                await q.cancel(tag)
            return True

        assert await allowed(coordinator, received)
    finally:
        await conn.close()
        await coordinator.close()


async def test_revoking_an_identity_removes_its_broker_user(
    fleet: Fleet, management: Management
) -> None:
    """Given an applied identity with an open connection, When it is revoked and the users
    applied again, Expect its broker user deleted and its connection closed."""
    name = f"t{fleet.tag}-revoked"
    fleet.keys.issue(name, "worker")
    fleet.apply()
    conn = await aio_pika.connect(fleet.keys.broker_url(fleet.url, name))
    closed = asyncio.get_running_loop().create_future()
    conn.close_callbacks.add(lambda *_: closed.done() or closed.set_result(True))

    fleet.keys.revoke(name)
    out = json.loads(fleet.apply("--json").stdout)

    assert out["removed"] == [name]
    assert await management.user(name) is None
    await asyncio.wait_for(closed, 10)
    assert name not in {u["user"] for u in out["users"]}


def test_passwords_stay_in_the_keys_directory(fleet: Fleet) -> None:
    """Expect each password private to its file and absent from the tool's output."""
    out = fleet.apply()
    for name in fleet.ids.values():
        password = fleet.keys.broker_password(name)
        assert password and password not in out.stdout + out.stderr
        path = Path(fleet.keys.broker_password_path(name))
        assert path.stat().st_mode & 0o077 == 0
