"""Names and declarations of robeing's broker topology (DESIGN §3).

Everything is named so it reads well in the management UI:

==========================  ========  ==============================================
name                        kind      purpose
==========================  ========  ==============================================
``robeing.direct``          direct    point-to-point; routing key = agent id
``robeing.agent.<id>``      queue     an agent's durable inbox (classic, priorities 0-9, expires)
``robeing.broadcast``       fanout    broadcasts to every live agent
``robeing.broadcast.<id>``  queue     a live agent's broadcast feed (exclusive)
``robeing.replies``         direct    answers; routing key = the reply queue's name
``robeing.reply.<id>.<n>``  queue     an agent's reply-to queue for ACKs, results, votes
``robeing.work.<id>``       queue     an agent's task assignments (transient)
``robeing.events``          topic     ``task.<specialization>…``, ``heartbeat.<role>.<id>``
``robeing.coordinator.tasks``       quorum queue, ``task.#``, bounded delivery limit
``robeing.coordinator.heartbeats``  quorum queue, ``heartbeat.#``, bounded length and age
``robeing.results``                 stream, final task results (kept ``results_max_age``)
``robeing.coordinator.lock``        exclusive queue; its owner is the active coordinator
``robeing.coordinator.epoch``       holds the last coordinator epoch (one message)
``robeing.coordinator.clusters``    stream, signed cluster definitions (kept for good)
``robeing.cluster.<c>.lock``        exclusive queue; its owner leads named cluster ``<c>``
``robeing.cluster.<c>.term``        holds cluster ``<c>``'s last leader term (one message)
``robeing.members.<c>.<leader>``    the leader's feed of ``member.<c>.#`` heartbeats (exclusive)
``robeing.dead``            fanout    dead-letter exchange
``robeing.dead-letters``    queue     dead letters, reason in ``x-robeing-reason`` (bounded)
==========================  ========  ==============================================

Declarations are idempotent; arguments live here only, because RabbitMQ
refuses a redeclaration whose arguments differ (PRECONDITION_FAILED).
Only features of RabbitMQ 3.10 and newer are used (quorum queues with
``x-delivery-limit``, message TTL and ``drop-head`` overflow).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DIRECT_EXCHANGE = "robeing.direct"
BROADCAST_EXCHANGE = "robeing.broadcast"
REPLY_EXCHANGE = "robeing.replies"
EVENTS_EXCHANGE = "robeing.events"
DEAD_EXCHANGE = "robeing.dead"
DEAD_LETTER_QUEUE = "robeing.dead-letters"
TASK_QUEUE = "robeing.coordinator.tasks"
HEARTBEAT_QUEUE = "robeing.coordinator.heartbeats"
RESULTS_STREAM = "robeing.results"
COORDINATOR_LOCK = "robeing.coordinator.lock"
EPOCH_QUEUE = "robeing.coordinator.epoch"
CLUSTERS_STREAM = "robeing.coordinator.clusters"

# Header names on dead-lettered messages.
REASON_HEADER = "x-robeing-reason"
DETAIL_HEADER = "x-robeing-detail"
SOURCE_HEADER = "x-robeing-queue"
REPORT_HEADER = "x-robeing-report"  # the refusing agent's signed report (protocol/rejections)
SIZE_HEADER = "x-robeing-size"  # the original size, when the stored body is truncated
AT_HEADER = "x-robeing-at"  # when it was dead-lettered (the refusing process's clock)

# robeing.dead-letters is bounded so that a flood cannot fill the broker's
# disk: past either limit the oldest dead letters are dropped (drop-head),
# silently (the queue has no dead-letter exchange of its own). Operators
# list, replay and purge them with `robeing dead-letters`.
DEAD_LETTERS_MAX_LENGTH = 100_000
DEAD_LETTERS_MAX_BYTES = 256 << 20

MAX_PRIORITY = 9


def agent_queue(agent_id: str) -> str:
    return f"robeing.agent.{agent_id}"


def broadcast_queue(agent_id: str) -> str:
    return f"robeing.broadcast.{agent_id}"


def work_queue(agent_id: str) -> str:
    return f"robeing.work.{agent_id}"


def reply_queue(agent_id: str, instance: str) -> str:
    return f"robeing.reply.{agent_id}.{instance}"


def listen_queue(agent_id: str, tag: str) -> str:
    """A temporary status listener's queue (bound to ``heartbeat.#``)."""
    return f"robeing.listen.{agent_id}.{tag}"


def watch_queue(agent_id: str, instance: str) -> str:
    """A guardian's feed of every dead letter (bound to the dead-letter exchange)."""
    return f"robeing.watch.{agent_id}.{instance}.dead-letters"


def is_reply_queue(queue: str, agent_id: str | None = None) -> bool:
    """Whether ``queue`` is a reply queue (of ``agent_id``, when given)."""
    prefix = f"robeing.reply.{agent_id}." if agent_id else "robeing.reply."
    return queue.startswith(prefix) and len(queue) > len(prefix)


def route_to_queue(queue: str) -> tuple[str, str]:
    """``(exchange, routing key)`` that reaches ``queue``.

    Answers go through ``robeing.replies``, to which every reply queue is bound
    under its own name, so publishing them needs no write permission on the
    default exchange (which reaches every queue). Other queues are reached
    through the default exchange, which only coordinators may write to.
    """
    if is_reply_queue(queue):
        return REPLY_EXCHANGE, queue
    return "", queue


CONTROL_ROUTING_KEY = "task.control"  # questions to the active coordinator (task.query…)


def task_routing_key(specialization: str | None) -> str:
    return f"task.{specialization or 'any'}"


def heartbeat_routing_key(role: str, agent_id: str) -> str:
    return f"heartbeat.{role}.{agent_id}"


# Named clusters (wire contract: robeing.protocol.clusters.summary). Cluster
# names hold no dot, so ``member.<c>.#`` matches the members of ``<c>`` only,
# and neither ``member.…`` nor ``summary.…`` matches the coordinator's ``heartbeat.#``.
SUMMARY_BINDING = "summary.#"


def member_routing_key(cluster: str, role: str, agent_id: str) -> str:
    """A named cluster's member heartbeats: consumed by its leader, not the coordinator."""
    return f"member.{cluster}.{role}.{agent_id}"


def member_binding(cluster: str) -> str:
    return f"member.{cluster}.#"


def summary_routing_key(cluster: str) -> str:
    return f"summary.{cluster}"


def term_routing_key(cluster: str) -> str:
    """How a leader records its term (members may not write to the default exchange)."""
    return f"term.{cluster}"


def cluster_lock_spec(cluster: str) -> QueueSpec:
    """The lock of a named cluster's leader: the same primitive as :func:`lock_spec`."""
    return dataclasses.replace(lock_spec(), name=f"robeing.cluster.{cluster}.lock")


def cluster_term_spec(cluster: str, settings: TopologySettings | None = None) -> QueueSpec:
    """Where a named cluster's last term is kept (like :func:`epoch_spec`)."""
    return dataclasses.replace(epoch_spec(settings), name=f"robeing.cluster.{cluster}.term")


def member_queue_spec(cluster: str, leader_id: str) -> QueueSpec:
    """A leader's feed of its members' heartbeats; gone with the leader's connection."""
    return feed_spec(f"robeing.members.{cluster}.{leader_id}")


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue's name and declaration arguments."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TopologySettings:
    """Tunable parts of the topology.

    Attributes:
        task_delivery_limit: deliveries of one task message before the broker
            dead-letters it (poison tasks).
        heartbeat_ttl_ms: heartbeats older than this are dropped unread.
        heartbeat_max_length: the heartbeat queue keeps at most this many.
        agent_queue_expiry_s: an agent's inbox and work queue are deleted,
            messages and all, once no process has used them for this long (an
            agent that is gone for good, e.g. a pod replaced in a rollout);
            a restarting agent finds them as it left them. 0: never.
        clustered: the broker is a cluster (``AMQP_URL`` lists several
            nodes). Then the epoch and dead-letter queues are quorum queues
            (replicated), and an agent's inbox and work queue are declared
            non-durable: a classic queue lives on one node (the one its agent
            is connected to, RabbitMQ's default ``client-local`` placement),
            and a durable one whose node is down cannot be declared anywhere
            until that node returns (``NOT_FOUND - home node ... is down``),
            which would keep its agent from reconnecting at all. A
            non-durable one is deleted with its node, and the agent declares
            it afresh on the node it fails over to. What this costs, queue by
            queue, is in deploy/README.md ("A cluster of brokers").
    """

    task_delivery_limit: int = 5
    heartbeat_ttl_ms: int = 30_000
    heartbeat_max_length: int = 100_000
    results_max_age: str = "7D"
    agent_queue_expiry_s: float = 24 * 3600.0
    clustered: bool = False

    def expiry(self) -> dict[str, int]:
        """The ``x-expires`` argument of per-agent queues ({} when they never expire)."""
        if self.agent_queue_expiry_s <= 0:
            return {}
        return {"x-expires": max(1, round(self.agent_queue_expiry_s * 1000))}


def inbox_spec(agent_id: str, settings: TopologySettings | None = None) -> QueueSpec:
    return QueueSpec(
        agent_queue(agent_id),
        durable=not (settings or TopologySettings()).clustered,
        arguments={
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            **(settings or TopologySettings()).expiry(),
        },
    )


def broadcast_spec(agent_id: str) -> QueueSpec:
    return QueueSpec(
        broadcast_queue(agent_id),
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments={"x-dead-letter-exchange": DEAD_EXCHANGE},
    )


def reply_spec(agent_id: str, instance: str) -> QueueSpec:
    return QueueSpec(
        reply_queue(agent_id, instance), durable=False, exclusive=True, auto_delete=True
    )


def task_queue_spec(settings: TopologySettings) -> QueueSpec:
    # Single active consumer: a quorum queue ignores the exclusive flag of a
    # consumer, so without it anyone allowed to read could take a share of the
    # submissions while the coordinator consumes; with it other consumers wait
    # idle and basic.get is refused.
    return QueueSpec(
        TASK_QUEUE,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.task_delivery_limit,
            "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-single-active-consumer": True,
        },
    )


def heartbeat_queue_spec(settings: TopologySettings) -> QueueSpec:
    # No dead-letter exchange: dropped or expired heartbeats are noise, not loss.
    return QueueSpec(
        HEARTBEAT_QUEUE,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 3,
            "x-message-ttl": settings.heartbeat_ttl_ms,
            "x-max-length": settings.heartbeat_max_length,
            "x-overflow": "drop-head",
            "x-single-active-consumer": True,
        },
    )


def work_spec(agent_id: str, settings: TopologySettings) -> QueueSpec:
    """An agent's assignments: a classic queue holding transient messages.

    Assignments need no disk: the durable record of a task is its submission
    in the quorum task queue, and a coordinator that restarts (the broker's
    restart included) assigns every unfinished task again. Poison tasks are
    bounded by the coordinator, which counts an agent lost during an attempt
    as a failed attempt and purges a dead agent's work queue.
    """
    arguments = {"x-dead-letter-exchange": DEAD_EXCHANGE, **settings.expiry()}
    return QueueSpec(work_queue(agent_id), durable=not settings.clustered, arguments=arguments)


def results_spec(settings: TopologySettings) -> QueueSpec:
    return QueueSpec(
        RESULTS_STREAM,
        arguments={"x-queue-type": "stream", "x-max-age": settings.results_max_age},
    )


def feed_spec(name: str) -> QueueSpec:
    """A process's own bounded feed: exclusive, gone with its connection."""
    return QueueSpec(
        name, durable=False, exclusive=True, auto_delete=True, arguments={"x-max-length": 100_000}
    )


def connection_watch_spec(agent_id: str, tag: str) -> QueueSpec:
    """A coordinator's feed of the broker's connection events (in the events vhost)."""
    return feed_spec(f"robeing.connwatch.{agent_id}.{tag}")


def lock_spec() -> QueueSpec:
    return QueueSpec(COORDINATOR_LOCK, durable=False, exclusive=True, auto_delete=True)


def _replicated(settings: TopologySettings | None) -> dict[str, str]:
    """The queue type of a shared classic queue: quorum on a cluster (see ``clustered``)."""
    return {"x-queue-type": "quorum"} if settings is not None and settings.clustered else {}


def epoch_spec(settings: TopologySettings | None = None) -> QueueSpec:
    return QueueSpec(EPOCH_QUEUE, arguments={"x-max-length": 1, **_replicated(settings)})


def clusters_spec() -> QueueSpec:
    # No max-age: a definition holds until a later record ends it. The records
    # are few (one per form, leave or dissolve), so the stream stays small.
    return QueueSpec(CLUSTERS_STREAM, arguments={"x-queue-type": "stream"})


def dead_letter_spec(settings: TopologySettings | None = None) -> QueueSpec:
    return QueueSpec(
        DEAD_LETTER_QUEUE,
        arguments={
            "x-max-length": DEAD_LETTERS_MAX_LENGTH,
            "x-max-length-bytes": DEAD_LETTERS_MAX_BYTES,
            "x-overflow": "drop-head",
            **_replicated(settings),
        },
    )


# (exchange name, type) declared by everyone, in dependency order.
EXCHANGES: tuple[tuple[str, str], ...] = (
    (DEAD_EXCHANGE, "fanout"),
    (DIRECT_EXCHANGE, "direct"),
    (BROADCAST_EXCHANGE, "fanout"),
    (EVENTS_EXCHANGE, "topic"),
    (REPLY_EXCHANGE, "direct"),
)


# Binding keys of the coordinator's queues on the events exchange.
TASK_BINDING = "task.#"
HEARTBEAT_BINDING = "heartbeat.#"


def shared_queues(settings: TopologySettings) -> tuple[QueueSpec, ...]:
    """The queues a coordinator declares for everyone (and broker definitions import)."""
    return (
        dead_letter_spec(settings),
        task_queue_spec(settings),
        heartbeat_queue_spec(settings),
        results_spec(settings),
    )


# (exchange, queue, routing key) of the shared queues' bindings.
SHARED_BINDINGS: tuple[tuple[str, str, str], ...] = (
    (DEAD_EXCHANGE, DEAD_LETTER_QUEUE, ""),
    (EVENTS_EXCHANGE, TASK_QUEUE, TASK_BINDING),
    (EVENTS_EXCHANGE, HEARTBEAT_QUEUE, HEARTBEAT_BINDING),
)
