"""Specification of the broker users (robeing.broker.permissions), checked on a model of RabbitMQ.

The model below implements RabbitMQ's authorisation for AMQP 0-9-1 as the
access-control guide and ``rabbit_channel`` / ``rabbit_auth_backend_internal``
do it: the operation → configure/write/read table, regexes matched anywhere
in a name (``re:run``, unanchored; an empty regex means ``^$``), the default
exchange checked as ``amq.default`` (and never bindable), topic permissions
on topic exchanges only (publish: write on the routing key; queue.bind and
exchange.bind: read on the binding key; no topic permission for an exchange
means every key), and passive declarations unchecked.

Given a fleet's generated users, the table says what each role may and may
not do. Denials are listed one by one, and a last test loosens every regex
in turn to ``.*`` and expects some denial of the table to break: a regex that
no denial depends on would be untested.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from robeing.broker import topology as topo
from robeing.broker.permissions import (
    ADMIN_TAGS,
    AGENT_TAG,
    EVENT_EXCHANGE,
    BrokerUser,
    Pool,
    admin_user,
    definitions,
    hash_password,
    plan_users,
    pool_user,
)
from robeing.protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
VHOST, EVENTS = "prod", "/"
DIRECT, BROADCAST, REPLIES = topo.DIRECT_EXCHANGE, topo.BROADCAST_EXCHANGE, topo.REPLY_EXCHANGE
EVENTS_X, DEAD = topo.EVENTS_EXCHANGE, topo.DEAD_EXCHANGE
FLEET = [
    ("coordinator-1", "coordinator"),
    ("coordinator-2", "coordinator"),
    ("worker-1", "worker"),
    ("worker-2", "worker"),
    ("worker-10", "worker"),  # shares worker-1's id as a prefix
    ("worker-1.b", "worker"),  # extends worker-1's id with a dot
    ("specialist-1", "specialist"),
    ("messenger-1", "messenger"),
    ("guardian-1", "guardian"),
    ("guardian-2", "guardian"),
    ("cli-host", "client"),
]
AGENTS = ("worker-1", "specialist-1", "messenger-1", "guardian-1")


# --- the model -----------------------------------------------------------------------


def matches(regex: str, name: str) -> bool:
    return re.search(regex or "^$", name) is not None


@dataclass
class Broker:
    users: dict[str, BrokerUser]

    def exchange_type(self, vhost: str, name: str) -> str | None:
        if name == EVENT_EXCHANGE:  # in the events vhost, wherever that is
            return "topic"
        return dict(topo.EXCHANGES).get(name) if vhost == VHOST else None

    def can(self, user: str, vhost: str, kind: str, name: str) -> bool:
        perm = next((p for p in self.users[user].permissions if p.vhost == vhost), None)
        return perm is not None and matches(getattr(perm, kind), name)

    def topic(self, user: str, vhost: str, exchange: str, kind: str, key: str) -> bool:
        if self.exchange_type(vhost, exchange) != "topic":
            return True
        for t in self.users[user].topic_permissions:
            if (t.vhost, t.exchange) == (vhost, exchange):
                return matches(getattr(t, kind), key)
        return True

    def allowed(self, user: str, op: tuple[str, ...], vhost: str = VHOST) -> bool:
        c = lambda kind, name: self.can(user, vhost, kind, name)  # noqa: E731
        match op:
            case ("declare_exchange" | "delete_exchange", name):
                return c("configure", name)
            case ("declare", queue):
                return c("configure", queue)
            case ("declare_dlx", queue):  # x-dead-letter-exchange robeing.dead
                return c("configure", queue) and c("write", DEAD) and c("read", queue)
            case ("delete", queue):
                return c("configure", queue)
            case ("consume" | "get" | "purge", queue):
                return c("read", queue)
            case ("bind", queue, exchange, key):
                return (
                    exchange != ""
                    and c("write", queue)
                    and c("read", exchange)
                    and self.topic(user, vhost, exchange, "read", key)
                )
            case ("bind_exchange", destination, source, key):
                return (
                    c("write", destination)
                    and c("read", source)
                    and self.topic(user, vhost, source, "read", key)
                )
            case ("publish", exchange, key):
                return c("write", exchange or "amq.default") and self.topic(
                    user, vhost, exchange, "write", key
                )
        raise AssertionError(f"unknown operation {op}")


def fleet_broker(events_vhost: str = EVENTS) -> Broker:
    users = plan_users(FLEET, VHOST, events_vhost, [Pool("worker", "wk-")], admin="ops")
    return Broker({u.name: u for u in users})


@pytest.fixture(scope="module")
def broker() -> Broker:
    return fleet_broker()


# --- the table -----------------------------------------------------------------------


def reply(agent_id: str) -> str:
    return topo.reply_queue(agent_id, "0a1b2c3d")


def own_queues_ops(me: str) -> list[tuple[str, ...]]:
    """What every agent does with its own queues."""
    return [
        ("declare_dlx", topo.agent_queue(me)),
        ("declare_dlx", topo.work_queue(me)),
        ("declare_dlx", topo.broadcast_queue(me)),
        ("declare", reply(me)),
        ("declare", topo.listen_queue(me, "a1b2c3")),
        ("bind", topo.agent_queue(me), DIRECT, me),
        ("bind", topo.agent_queue(me), DIRECT, "bft/orders"),
        ("bind", topo.broadcast_queue(me), BROADCAST, ""),
        ("bind", reply(me), REPLIES, reply(me)),
        ("bind", topo.listen_queue(me, "a1b2c3"), EVENTS_X, "heartbeat.#"),
        ("consume", topo.agent_queue(me)),
        ("consume", topo.work_queue(me)),
        ("consume", reply(me)),
        ("purge", topo.work_queue(me)),
        ("delete", topo.agent_queue(me)),
        ("publish", DIRECT, "worker-2"),
        ("publish", DIRECT, "bft/orders"),
        ("publish", BROADCAST, ""),
        ("publish", REPLIES, reply("cli-host")),
        ("publish", DEAD, topo.agent_queue(me)),
        ("publish", EVENTS_X, "task.data_processing"),
    ]


def agent_denials(me: str, role: str) -> list[tuple[str, ...]]:
    """What no agent but a coordinator may do, nor touch another agent's queues."""
    other = "worker-2" if me != "worker-2" else "worker-1"
    shared = [topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE, topo.DEAD_LETTER_QUEUE, topo.RESULTS_STREAM]
    return [
        *[("consume", q) for q in [*shared, topo.EPOCH_QUEUE]],
        *[("purge", q) for q in shared],
        *[("delete", q) for q in [*shared, topo.EPOCH_QUEUE]],
        ("declare_dlx", topo.TASK_QUEUE),
        ("declare", topo.COORDINATOR_LOCK),
        ("declare", topo.EPOCH_QUEUE),
        ("declare", topo.DEAD_LETTER_QUEUE),
        ("declare_exchange", DIRECT),
        ("delete_exchange", EVENTS_X),
        ("bind", topo.TASK_QUEUE, EVENTS_X, "heartbeat.x"),
        *[("consume", q) for q in (topo.agent_queue(other), topo.work_queue(other))],
        ("consume", reply(other)),
        ("consume", topo.broadcast_queue(other)),
        ("purge", topo.work_queue(other)),
        ("delete", topo.agent_queue(other)),
        ("declare_dlx", topo.agent_queue(other)),
        ("declare", reply(other)),
        ("consume", topo.watch_queue("guardian-2", "0a1b2c3d")),
        ("publish", "", topo.EPOCH_QUEUE),
        ("publish", "", topo.RESULTS_STREAM),
        ("publish", "", topo.work_queue(other)),
        ("publish", "", topo.agent_queue(other)),
        ("publish", EVENTS_X, f"heartbeat.{role}.{other}"),
        ("publish", EVENTS_X, f"heartbeat.coordinator.{me}"),
        ("bind", topo.listen_queue(me, "a1b2c3"), EVENTS_X, "task.#"),
        ("bind", topo.listen_queue(me, "a1b2c3"), EVENTS_X, "#"),
        ("bind", topo.listen_queue(me, "a1b2c3"), EVENTS_X, "*.any"),
        ("bind_exchange", DIRECT, EVENTS_X, "task.#"),
        ("bind", topo.agent_queue(me), "", topo.agent_queue(me)),  # the default exchange
    ]


ALLOW: list[tuple[str, tuple[str, ...]]] = [
    *[(me, op) for me in AGENTS for op in own_queues_ops(me)],
    *[(me, ("publish", EVENTS_X, f"heartbeat.{me.split('-')[0]}.{me}")) for me in AGENTS],
    ("guardian-1", ("declare", topo.watch_queue("guardian-1", "0a1b2c3d"))),
    ("guardian-1", ("bind", topo.watch_queue("guardian-1", "0a1b2c3d"), DEAD, "")),
    ("guardian-1", ("consume", topo.watch_queue("guardian-1", "0a1b2c3d"))),
    # the coordinator's job
    *[("coordinator-1", op) for op in own_queues_ops("coordinator-1")],
    *[("coordinator-1", ("declare_exchange", name)) for name, _ in topo.EXCHANGES],
    ("coordinator-1", ("declare_dlx", topo.TASK_QUEUE)),
    *[
        ("coordinator-1", ("declare", q))
        for q in (topo.HEARTBEAT_QUEUE, topo.RESULTS_STREAM, topo.COORDINATOR_LOCK)
    ],
    ("coordinator-1", ("declare", topo.EPOCH_QUEUE)),
    ("coordinator-1", ("declare", topo.DEAD_LETTER_QUEUE)),
    *[("coordinator-1", ("bind", q, x, key)) for x, q, key in topo.SHARED_BINDINGS],
    ("coordinator-1", ("publish", "", topo.work_queue("worker-1"))),
    ("coordinator-1", ("publish", "", topo.EPOCH_QUEUE)),
    ("coordinator-1", ("publish", "", topo.RESULTS_STREAM)),
    ("coordinator-1", ("publish", EVENTS_X, "heartbeat.coordinator.coordinator-1")),
    *[
        ("coordinator-1", ("consume", q))
        for q in (topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE, topo.RESULTS_STREAM)
    ],
    ("coordinator-1", ("get", topo.EPOCH_QUEUE)),
    ("coordinator-1", ("purge", topo.work_queue("worker-1"))),
    ("coordinator-1", ("purge", topo.work_queue("worker-1.b"))),
    # a client
    ("cli-host", ("declare", reply("cli-host"))),
    ("cli-host", ("bind", reply("cli-host"), REPLIES, reply("cli-host"))),
    ("cli-host", ("bind", topo.listen_queue("cli-host", "a1b2c3"), EVENTS_X, "heartbeat.#")),
    ("cli-host", ("consume", topo.RESULTS_STREAM)),
    ("cli-host", ("publish", EVENTS_X, "task.any")),
    ("cli-host", ("publish", DIRECT, "worker-1")),
    # a named cluster's member: heartbeats to its leader, and what leading it takes
    *[
        ("worker-1", op)
        for op in [
            ("publish", EVENTS_X, "member.etl.worker.worker-1"),
            ("declare", topo.cluster_lock_spec("etl").name),
            ("declare", topo.cluster_term_spec("etl").name),
            ("bind", topo.cluster_term_spec("etl").name, EVENTS_X, "term.etl"),
            ("publish", EVENTS_X, "term.etl"),
            ("get", topo.cluster_term_spec("etl").name),
            ("declare", topo.member_queue_spec("etl", "worker-1").name),
            ("bind", topo.member_queue_spec("etl", "worker-1").name, EVENTS_X, "member.etl.#"),
            ("consume", topo.member_queue_spec("etl", "worker-1").name),
            ("publish", EVENTS_X, "summary.etl"),
            ("bind", topo.listen_queue("worker-1", "a1b2c3"), EVENTS_X, "summary.#"),
        ]
    ],
    ("coordinator-1", ("bind", topo.HEARTBEAT_QUEUE, EVENTS_X, topo.SUMMARY_BINDING)),
    # a pool member, and the pool's weaker guarantee
    ("pool.wk", ("declare_dlx", topo.agent_queue("wk-7f9c"))),
    ("pool.wk", ("publish", EVENTS_X, "heartbeat.worker.wk-7f9c")),
    ("pool.wk", ("consume", topo.agent_queue("wk-other"))),
]

DENY: list[tuple[str, tuple[str, ...]]] = [
    *[(me, op) for me, role in FLEET if me in AGENTS for op in agent_denials(me, role)],
    # ids that extend worker-1's
    *[
        ("worker-1", op)
        for op in [
            ("consume", topo.agent_queue("worker-10")),
            ("consume", topo.agent_queue("worker-1.b")),
            ("consume", reply("worker-1.b")),
            ("declare", reply("worker-1.b")),
            ("publish", EVENTS_X, "heartbeat.worker.worker-10"),
            ("publish", EVENTS_X, "heartbeat.worker.worker-1.b"),
        ]
    ],
    ("worker-1", ("bind", topo.agent_queue("worker-1"), DEAD, "")),
    # a member speaks for itself only, and records its term without the default exchange
    ("worker-1", ("publish", EVENTS_X, "member.etl.worker.worker-2")),
    ("worker-1", ("publish", EVENTS_X, "member.etl.coordinator.worker-1")),
    ("worker-1", ("publish", "", topo.cluster_term_spec("etl").name)),
    ("worker-1", ("consume", topo.member_queue_spec("etl", "worker-2").name)),
    ("cli-host", ("declare", topo.cluster_lock_spec("etl").name)),
    ("cli-host", ("publish", EVENTS_X, "summary.etl")),
    ("specialist-1", ("publish", EVENTS_X, "heartbeat.worker.specialist-1")),
    ("guardian-1", ("declare", topo.watch_queue("guardian-2", "0a1b2c3d"))),
    # what even a coordinator may not do
    *[
        ("coordinator-1", op)
        for op in [
            ("consume", topo.DEAD_LETTER_QUEUE),
            ("purge", topo.DEAD_LETTER_QUEUE),
            ("consume", topo.agent_queue("worker-1")),
            ("consume", reply("worker-1")),
            ("declare_dlx", topo.agent_queue("worker-1")),
            ("delete", topo.work_queue("worker-1")),
            ("bind", topo.agent_queue("worker-1"), DIRECT, "x"),
            ("publish", EVENTS_X, "heartbeat.worker.worker-1"),
            ("publish", EVENTS_X, "heartbeat.coordinator.coordinator-2"),
            ("bind", topo.TASK_QUEUE, EVENTS_X, "#"),
            ("consume", reply("coordinator-2")),
        ]
    ],
    # a client
    *[
        ("cli-host", op)
        for op in [
            ("publish", EVENTS_X, "heartbeat.client.cli-host"),
            ("publish", EVENTS_X, "heartbeat.worker.cli-host"),
            ("declare_dlx", topo.agent_queue("cli-host")),
            ("delete", topo.RESULTS_STREAM),
            ("consume", topo.TASK_QUEUE),
            ("consume", reply("worker-1")),
            ("publish", "", topo.RESULTS_STREAM),
            ("bind", topo.listen_queue("cli-host", "a1b2c3"), EVENTS_X, "task.#"),
        ]
    ],
    # a pool member stays inside its pool, and is an agent like the others
    *[("pool.wk", op) for op in agent_denials("wk-7f9c", "worker")],
    ("pool.wk", ("consume", topo.agent_queue("worker-1"))),
    ("pool.wk", ("publish", EVENTS_X, "heartbeat.worker.worker-1")),
]

# The coordinator in the events vhost: its own connection-event feed only.
CONNWATCH = topo.connection_watch_spec("coordinator-1", "ab12").name
OTHER_CONNWATCH = topo.connection_watch_spec("coordinator-2", "ab12").name
EVENTS_ALLOW = [
    ("coordinator-1", ("declare", CONNWATCH)),
    ("coordinator-1", ("bind", CONNWATCH, EVENT_EXCHANGE, "connection.closed")),
    ("coordinator-1", ("consume", CONNWATCH)),
]
EVENTS_DENY = [
    ("coordinator-1", ("declare", OTHER_CONNWATCH)),
    ("coordinator-1", ("consume", OTHER_CONNWATCH)),
    ("coordinator-1", ("bind", OTHER_CONNWATCH, EVENT_EXCHANGE, "connection.closed")),
    ("coordinator-1", ("bind", CONNWATCH, EVENT_EXCHANGE, "user.#")),
    ("coordinator-1", ("publish", EVENT_EXCHANGE, "connection.closed")),
    *[(me, ("declare", topo.connection_watch_spec(me, "ab12").name)) for me in AGENTS],
]


def case_id(case: tuple[str, tuple[str, ...]]) -> str:
    return f"{case[0]}:{' '.join(case[1])}"


@pytest.mark.parametrize("case", ALLOW, ids=case_id)
def test_each_role_may_do_its_job(broker: Broker, case: tuple[str, tuple[str, ...]]) -> None:
    """Given the generated users, expect the broker to allow what the role needs."""
    user, op = case
    assert broker.allowed(user, op)


@pytest.mark.parametrize("case", DENY, ids=case_id)
def test_each_role_touches_nothing_it_does_not_own(
    broker: Broker, case: tuple[str, tuple[str, ...]]
) -> None:
    """Given the generated users, expect the broker to refuse what the role does not own."""
    user, op = case
    assert not broker.allowed(user, op)


@pytest.mark.parametrize("events_vhost", [EVENTS, VHOST], ids=["own vhost", "same vhost"])
def test_a_coordinator_watches_only_its_own_connection_events(events_vhost: str) -> None:
    """Given the event exchange in another vhost or in the agents' own, expect the
    coordinator to own its connection-event feed there and nothing more."""
    broker = fleet_broker(events_vhost)
    for user, op in EVENTS_ALLOW:
        assert broker.allowed(user, op, events_vhost), op
    for user, op in EVENTS_DENY:
        assert not broker.allowed(user, op, events_vhost), op


# What least privilege cannot express, kept visible: each is allowed, and the
# reason it does no harm is in deploy/README.md ("What permissions cannot stop").
KNOWN_LIMITS = [
    # copies of another agent's point-to-point messages: encrypted to it, signed
    ("worker-1", ("bind", topo.agent_queue("worker-1"), DIRECT, "worker-2")),
    # copies of another process's answers: encrypted to it, signed
    ("worker-1", ("bind", reply("worker-1"), REPLIES, reply("worker-2"))),
    # any PBFT group's multicasts: signed; confidential only with a cluster key
    ("worker-1", ("bind", topo.agent_queue("worker-1"), DIRECT, "bft/any-group")),
    # an exchange-to-exchange binding carries any routing key into robeing.events,
    # so topic write permissions do not stop a forged heartbeat key (the envelope
    # inside is still signed by its real sender, which the coordinator uses)
    ("worker-1", ("bind_exchange", EVENTS_X, BROADCAST, "")),
    ("worker-1", ("publish", BROADCAST, "heartbeat.coordinator.coordinator-1")),
    # noise in the dead letters: their headers are hints (DESIGN §8)
    ("worker-1", ("bind_exchange", DEAD, DIRECT, "coordinator-1")),
]


@pytest.mark.parametrize("case", KNOWN_LIMITS, ids=case_id)
def test_what_permissions_cannot_stop(broker: Broker, case: tuple[str, tuple[str, ...]]) -> None:
    """Expect these to stay allowed: if one becomes refused, update the README's list."""
    user, op = case
    assert broker.allowed(user, op)


# Regexes no denial depends on, and why that is acceptable.
REDUNDANT = {
    ("coordinator-1", EVENTS, EVENT_EXCHANGE, "write"): (
        "no write on the event exchange at all, so no publish reaches the topic check"
    ),
}


def loosenings(user: BrokerUser) -> list[tuple[str, str, str, BrokerUser]]:
    """``user`` with each of its regexes replaced by ``.*`` in turn."""
    out = []
    for i, p in enumerate(user.permissions):
        for kind in ("configure", "write", "read"):
            perms = list(user.permissions)
            perms[i] = dataclasses.replace(p, **{kind: ".*"})
            out.append((p.vhost, "", kind, dataclasses.replace(user, permissions=tuple(perms))))
    for i, t in enumerate(user.topic_permissions):
        for kind in ("write", "read"):
            topics = list(user.topic_permissions)
            topics[i] = dataclasses.replace(t, **{kind: ".*"})
            loose = dataclasses.replace(user, topic_permissions=tuple(topics))
            out.append((t.vhost, t.exchange, kind, loose))
    return out


@pytest.mark.parametrize("who", ["coordinator-1", *AGENTS, "cli-host", "pool.wk"])
def test_every_regex_is_load_bearing(broker: Broker, who: str) -> None:
    """Given one regex of ``who`` loosened to ``.*``, expect at least one denial of the
    table to be allowed: each regex is there for a reason the table states."""
    denials = [(op, VHOST) for u, op in DENY if u == who]
    denials += [(op, EVENTS) for u, op in EVENTS_DENY if u == who]
    for vhost, exchange, kind, loose in loosenings(broker.users[who]):
        if (who, vhost, exchange, kind) in REDUNDANT:
            continue
        loosened = Broker({**broker.users, who: loose})
        assert any(loosened.allowed(who, op, v) for op, v in denials), (
            f"{who}: loosening {kind} of {exchange or 'vhost'} {vhost!r} breaks no denial"
        )


# --- users, pools, definitions ---------------------------------------------------------


def test_the_admin_may_do_everything_and_agents_are_marked() -> None:
    """Expect the operator to get .* on both vhosts, and every agent user the marker tag."""
    admin = admin_user("ops", [VHOST, EVENTS, VHOST])
    assert admin.tags == ADMIN_TAGS
    assert [(p.vhost, p.configure, p.write, p.read) for p in admin.permissions] == [
        (VHOST, ".*", ".*", ".*"),
        (EVENTS, ".*", ".*", ".*"),
    ]
    users = plan_users(FLEET, VHOST, EVENTS)
    assert all(AGENT_TAG in u.tags for u in users)
    assert [u.tags for u in users if u.role == "client"] == [(AGENT_TAG, "management")]


def test_a_pool_covers_its_prefix_and_its_user_is_named_after_it() -> None:
    pool = Pool.parse("worker=wk-")
    user = pool_user(pool, VHOST)
    assert (user.name, user.role, user.covers) == ("pool.wk", "worker", "wk-*")


@pytest.mark.parametrize(
    "pools, message",
    [
        (["worker=worker-"], "covers the agent 'worker-1'"),
        (["worker=wk-", "specialist=wk-s"], "covers 'wk-s'"),
        (["worker"], "expected ROLE=PREFIX"),
        (["boss=b-"], "unknown role"),
        (["worker=-x"], "invalid pool prefix"),
    ],
)
def test_pools_that_would_reach_other_agents_are_refused(pools: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_users(FLEET, VHOST, EVENTS, [Pool.parse(p) for p in pools])


def test_a_name_used_twice_is_refused() -> None:
    """Given an admin named like an agent, expect a ConfigError rather than one user for both."""
    with pytest.raises(ConfigError, match="'worker-1' would be made twice"):
        plan_users(FLEET, VHOST, EVENTS, admin="worker-1")


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    """Given the salt of the published definitions' hash of "robeing", expect the same hash."""
    published = "dZr/LiXUT06FiK721LZigOcTLIg3o0+LLLuVFFSZTlq6lr+Q"
    salt = base64.b64decode(published)[:4]
    assert hash_password("robeing", salt) == published
    a, b = hash_password("robeing"), hash_password("robeing")
    assert a != b and len(base64.b64decode(a)) == 36  # random salt, 4 + 32 bytes


def _check_definitions() -> object:
    spec = importlib.util.spec_from_file_location(
        "check_definitions", ROOT / "deploy" / "check-definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_definitions_hold_users_permissions_and_the_topology_the_code_declares() -> None:
    """Given the generated definitions for vhost "/", expect deploy/check-definitions.py to
    find the topology the agents declare, and every user's permissions in it."""
    users = plan_users(FLEET, "/", "/", admin="ops")
    doc = definitions(users, {u.name: hash_password("pw") for u in users}, "/", "/")

    assert _check_definitions().compare(json.loads(json.dumps(doc))) == []  # type: ignore[attr-defined]
    assert {u["name"] for u in doc["users"]} == {u.name for u in users}
    assert all(u["hashing_algorithm"] == "rabbit_password_hashing_sha256" for u in doc["users"])
    worker = next(p for p in doc["topic_permissions"] if p["user"] == "worker-1")
    assert worker == {
        "user": "worker-1",
        "vhost": "/",
        "exchange": EVENTS_X,
        "write": r"^(task\..+|heartbeat\.worker\.worker\-1|member\.[A-Za-z0-9_-]+\.worker"
        r"\.worker\-1|summary\.[A-Za-z0-9_-]+|term\.[A-Za-z0-9_-]+)$",
        "read": r"^(heartbeat\..*|summary\..*|member\..*|term\..*)$",
    }


def test_definitions_need_every_password() -> None:
    users = plan_users(FLEET[:1], VHOST, EVENTS)
    with pytest.raises(ConfigError, match="coordinator-1"):
        definitions(users, {}, VHOST, EVENTS)
