"""Least privilege on the broker: users that touch only what they own (DESIGN §8).

Pure (no I/O): from the (agent id, role) pairs issued in a keys directory it
builds one broker user per agent — its configure/write/read regexes per
vhost and its topic permissions on ``robeing.events`` — and a RabbitMQ
definitions document holding those users and the shared topology.
:class:`~robeing.broker.management.Management` applies them and
``robeing broker users`` is the command; ``deploy/README.md`` has the table
per role for operators.

RabbitMQ's checks (AMQP 0-9-1, access-control guide)::

    exchange.declare / delete    configure: exchange
    queue.declare / delete       configure: queue; with x-dead-letter-exchange
                                 also write: that exchange and read: queue
    queue.bind / unbind          write: queue, read: exchange (+ topic read: key)
    exchange.bind / unbind       write: destination, read: source (+ topic read: key)
    basic.publish                write: exchange (+ topic write: routing key)
    basic.get / consume, purge   read: queue

The default exchange is called ``amq.default`` in these checks; passive
declarations need no permission (3.10); topic permissions apply to topic
exchanges only, and a user without one for an exchange may use every key.
A permission regex matches *anywhere* in a name (Erlang ``re:run``), so
every regex here is anchored ``^(…)$``. Ids are ``re.escape``d; what follows
an id in a name (an instance, a tag) is ``[^.]+``: ids may contain dots, but
a suffix without one cannot reach into the names of an agent whose id
extends ours (``a`` and ``a.b``).

Who may do what:

coordinator
    Configures the exchanges and the shared queues (tasks, heartbeats, the
    results and clusters streams, lock, epoch, dead letters) and its own queues. Writes to
    the default exchange (assignments into work queues, records into the
    results stream and the epoch queue) and to every robeing exchange. Reads
    its queues, the results stream, the epoch queue, and every work queue
    (it purges the work queue of a dead agent). Topic: publishes ``task.*``
    and its own ``heartbeat.coordinator.<id>``, binds ``task.*`` and
    ``heartbeat.*`` keys. In the events vhost: its own
    ``robeing.connwatch.<id>.<tag>``, bound to ``amq.rabbitmq.event`` with
    ``connection.*`` keys.
worker, specialist, messenger, guardian
    Configure, write and read only their own queues (inbox, work, broadcast,
    reply and listener queues); publish to robeing.direct, .broadcast,
    .replies, .dead and .events (keys ``task.*`` and their own
    ``heartbeat.<role>.<id>`` only); bind their queues to robeing.direct,
    .broadcast, .replies and, with ``heartbeat.*`` and ``summary.*`` keys,
    .events. A guardian also binds its watch queue to robeing.dead. As
    members of named clusters they publish their own
    ``member.<c>.<role>.<id>``, and to lead one they configure, write and read
    ``robeing.cluster.<c>.lock``, ``.term`` and their own
    ``robeing.members.<c>.<id>`` (bound with ``member.*``/``term.*`` keys) and
    publish ``summary.<c>`` and ``term.<c>`` (any cluster ``<c>``).
client
    Its reply and listener queues; publishes like an agent but no
    heartbeats; reads the results stream to fetch results (every record of
    it, so records are to be encrypted to their submitter). Tagged
    ``management`` so ``robeing status`` can read queue depths (names and
    counts, never messages it may not read).

A :class:`Pool` is one user for every agent of a role whose id starts with a
prefix, for fleets whose ids are not known in advance (the pods of a
Deployment). Its guarantee is weaker: the members of a pool may read,
purge and delete each other's queues and publish each other's heartbeat
keys. Payloads stay encrypted to their receiver and every envelope is
signed, so a member can disturb another's traffic but neither read nor
forge it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..protocol.errors import ConfigError
from ..protocol.roles import ROLES
from . import topology as topo

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
DEFAULT_EXCHANGE = "amq.default"  # the default exchange's name in permission checks
EVENT_EXCHANGE = "amq.rabbitmq.event"  # the broker's own (rabbitmq_event_exchange)
NOTHING = "^$"

# Marks the users made here, so revoking an identity may delete its user
# without ever touching a user someone else made.
AGENT_TAG = "robeing-agent"
ADMIN_TAGS = ("administrator",)

# Placeholders passed to the topology's name functions; re.escape keeps them.
_ID = "AGENTID"
_SUFFIX = "NAMESUFFIX"
_CLUSTER = "CLUSTERNAME"
_CLUSTER_CHARS = r"[A-Za-z0-9_-]+"  # robeing.protocol.clusters.names: no dot
_ID_CHARS = r"[A-Za-z0-9_.:-]"  # robeing.agents.settings.check_agent_id
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_EXCHANGES = tuple(name for name, _kind in topo.EXCHANGES)


@dataclass(frozen=True, slots=True)
class Permission:
    """configure / write / read regexes of one user in one vhost."""

    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """write (publish keys) / read (binding keys) regexes on one topic exchange."""

    vhost: str
    exchange: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """A broker login and everything it may do.

    Attributes:
        name: the user name (an agent's id; a pool's ``pool.<prefix>``).
        role: the agent role it serves, or ``admin``.
        covers: the agent ids that log in as this user (``<prefix>*`` for a pool).
    """

    name: str
    role: str
    covers: str
    tags: tuple[str, ...]
    permissions: tuple[Permission, ...]
    topic_permissions: tuple[TopicPermission, ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    """One user for every agent of ``role`` whose id starts with ``prefix``.

    Raises:
        ConfigError: unknown role, or a prefix no agent id could start with.
    """

    role: str
    prefix: str

    def __post_init__(self) -> None:
        _check_role(self.role)
        if not _VALID_ID.match(self.prefix):
            raise ConfigError(
                f"invalid pool prefix {self.prefix!r}: it must begin like an agent id "
                "(a letter or digit, then letters, digits, '_', '.', ':' or '-')"
            )

    @property
    def user(self) -> str:
        return f"pool.{self.prefix.rstrip('-_.:')}"

    @staticmethod
    def parse(text: str) -> Pool:
        """``ROLE=PREFIX``, e.g. ``worker=worker-``.

        Raises:
            ConfigError: not of that form, or invalid (see the class).
        """
        role, sep, prefix = text.partition("=")
        if not sep:
            raise ConfigError(f"pool {text!r}: expected ROLE=PREFIX, e.g. worker=worker-")
        return Pool(role.strip(), prefix.strip())


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def _any(alternatives: Iterable[str]) -> str:
    """One anchored regex matching exactly the ``alternatives`` (regexes)."""
    alts = _merge(_merge(list(dict.fromkeys(alternatives)), _VARYING_FIRST), _VARYING_LAST)
    return f"^({'|'.join(alts)})$" if alts else NOTHING


# Names that differ in one word are merged, for regexes an operator can read in
# the management UI: robeing\.(agent|work)\.w1 rather than robeing\.agent\.w1|robeing\.work\.w1.
_WORD = r"[a-z]+(?:\\-[a-z]+)*"
_VARYING_FIRST = re.compile(rf"^(?P<head>robeing\\\.)(?P<word>{_WORD})(?P<tail>(?:\\\..*)?)$")
_VARYING_LAST = re.compile(rf"^(?P<head>robeing\\\.{_WORD}\\\.)(?P<word>{_WORD})(?P<tail>)$")


def _merge(alts: list[str], shape: re.Pattern[str]) -> list[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    out: list[str | tuple[str, str]] = []
    for alt in alts:
        m = shape.match(alt)
        if m is None:
            out.append(alt)
            continue
        key = (m["head"], m["tail"])
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(m["word"])
    return [
        x
        if isinstance(x, str)
        else f"{x[0]}{groups[x][0]}{x[1]}"
        if len(groups[x]) == 1
        else f"{x[0]}({'|'.join(groups[x])}){x[1]}"
        for x in out
    ]


def _name(name: str, ids: str) -> str:
    """The regex of ``name``, built with the placeholders, for the ids ``ids``."""
    return re.escape(name).replace(_ID, ids).replace(_SUFFIX, r"[^.]+")


def _own_queues(role: str, ids: str) -> list[str]:
    names = [topo.reply_queue(_ID, _SUFFIX), topo.listen_queue(_ID, _SUFFIX)]
    if ROLES[role].takes_work:
        names += [topo.agent_queue(_ID), topo.work_queue(_ID), topo.broadcast_queue(_ID)]
    if role == "guardian":
        names.append(topo.watch_queue(_ID, _SUFFIX))
    return [_name(n, ids) for n in names]


def _esc(*names: str) -> list[str]:
    return [re.escape(n) for n in names]


def _cluster_names(role: str, ids: str) -> tuple[list[str], list[str], list[str]]:
    """What a member of a named cluster may need to lead it: (queues, topic write, topic read).

    Any member may become its cluster's leader, and ids do not say which
    cluster an agent is in, so the lock and term queues of every cluster are
    allowed; the coordinator refuses summaries from non-members, so a
    squatter can keep a cluster leaderless (its members then heartbeat to the
    coordinator directly) but not act for it.
    """
    c = _CLUSTER
    queues = [
        topo.cluster_lock_spec(c).name,
        topo.cluster_term_spec(c).name,
        topo.member_queue_spec(c, _ID).name,
    ]
    writes = [topo.member_routing_key(c, role, _ID), topo.summary_routing_key(c)]
    writes.append(topo.term_routing_key(c))
    named = [_name(n, ids).replace(c, _CLUSTER_CHARS) for n in (*queues, *writes)]
    return named[:3], named[3:], [r"member\..*", r"term\..*"]


def _user(name: str, role: str, ids: str, covers: str, vhost: str, events_vhost: str) -> BrokerUser:
    own = _own_queues(role, ids)
    configure, write, read = list(own), [*own, *_esc(*_EXCHANGES)], list(own)
    topic_write = [r"task\..+"]  # topo.task_routing_key: task.<specialization>
    # Status listeners bind heartbeat.#, and summary.# for named clusters' members.
    topic_read = [r"heartbeat\..*", r"summary\..*"]
    if role != "client":
        topic_write.append(_name(topo.heartbeat_routing_key(role, _ID), ids))
    if ROLES[role].takes_work and role != "coordinator":
        queues, writes, reads = _cluster_names(role, ids)
        configure += queues
        write += queues
        read += queues
        topic_write += writes
        topic_read += reads
    if role == "client":
        read += _esc(topo.REPLY_EXCHANGE, topo.EVENTS_EXCHANGE, topo.RESULTS_STREAM)
    else:
        read += _esc(topo.DIRECT_EXCHANGE, topo.BROADCAST_EXCHANGE)
        read += _esc(topo.REPLY_EXCHANGE, topo.EVENTS_EXCHANGE)
    if role == "guardian":
        read += _esc(topo.DEAD_EXCHANGE)
    by_vhost: dict[str, tuple[list[str], list[str], list[str]]] = {vhost: (configure, write, read)}
    topics = []
    if role == "coordinator":
        configure += _esc(*_EXCHANGES, topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE)
        configure += _esc(topo.RESULTS_STREAM, topo.COORDINATOR_LOCK, topo.EPOCH_QUEUE)
        configure += _esc(topo.CLUSTERS_STREAM)
        configure += _esc(topo.DEAD_LETTER_QUEUE)
        write += _esc(DEFAULT_EXCHANGE, topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE)
        write += _esc(topo.DEAD_LETTER_QUEUE)
        read += _esc(*_EXCHANGES, topo.TASK_QUEUE, topo.HEARTBEAT_QUEUE)
        read += _esc(topo.RESULTS_STREAM, topo.EPOCH_QUEUE, topo.CLUSTERS_STREAM)
        read.append(_name(topo.work_queue(_ID), f"{_ID_CHARS}+"))
        topic_read.append(r"task\..*")
        watch = _name(topo.connection_watch_spec(_ID, _SUFFIX).name, ids)
        conf_e, write_e, read_e = by_vhost.setdefault(events_vhost, ([], [], []))
        conf_e.append(watch)
        write_e.append(watch)
        read_e += [re.escape(EVENT_EXCHANGE), watch]
        topics.append(TopicPermission(events_vhost, EVENT_EXCHANGE, NOTHING, r"^connection\."))
    topics.insert(
        0, TopicPermission(vhost, topo.EVENTS_EXCHANGE, _any(topic_write), _any(topic_read))
    )
    perms = tuple(Permission(v, _any(c), _any(w), _any(r)) for v, (c, w, r) in by_vhost.items())
    tags = (AGENT_TAG, "management") if role == "client" else (AGENT_TAG,)
    return BrokerUser(name, role, covers, tags, perms, tuple(topics))


def agent_user(agent_id: str, role: str, vhost: str, events_vhost: str = "/") -> BrokerUser:
    """The user of one agent, named after it, for its ``role``.

    Raises:
        ConfigError: invalid id or unknown role.
    """
    if not _VALID_ID.match(agent_id):
        raise ConfigError(f"invalid agent id {agent_id!r}")
    _check_role(role)
    return _user(agent_id, role, re.escape(agent_id), agent_id, vhost, events_vhost)


def pool_user(pool: Pool, vhost: str, events_vhost: str = "/") -> BrokerUser:
    """The one user of every agent in ``pool`` (see the module's note on pools)."""
    ids = re.escape(pool.prefix) + f"{_ID_CHARS}*"
    return _user(pool.user, pool.role, ids, f"{pool.prefix}*", vhost, events_vhost)


def admin_user(name: str, vhosts: Iterable[str]) -> BrokerUser:
    """The operator: everything in ``vhosts`` (dead letters, definitions); never an agent."""
    perms = tuple(Permission(v, ".*", ".*", ".*") for v in dict.fromkeys(vhosts))
    return BrokerUser(name, "admin", "", ADMIN_TAGS, perms)


def plan_users(
    agents: Iterable[tuple[str, str]],
    vhost: str,
    events_vhost: str = "/",
    pools: Iterable[Pool] = (),
    admin: str | None = None,
) -> list[BrokerUser]:
    """Every user of a fleet: the admin (if named), one per agent, one per pool.

    Args:
        agents: (agent id, role) pairs, e.g. the identities of a keys directory.
        vhost: where the agents work.
        events_vhost: where the broker's event exchange is (coordinators).
        pools: role pools for agents whose ids are not known in advance.
        admin: the operator's user name, if it belongs in the result.

    Raises:
        ConfigError: an invalid id or role, a name used twice, or a pool
            prefix that covers an issued agent id or another pool's prefix
            (its members could then read that agent's queues).
    """
    pools = list(pools)
    users = [agent_user(agent_id, role, vhost, events_vhost) for agent_id, role in agents]
    for pool in pools:
        for user in users:
            if user.name.startswith(pool.prefix):
                raise ConfigError(
                    f"pool {pool.role}={pool.prefix} covers the agent {user.name!r}, whose "
                    "queues its members could then read: choose a prefix no agent id starts with"
                )
        for other in pools:
            if other is not pool and other.prefix.startswith(pool.prefix):
                raise ConfigError(f"pool prefix {pool.prefix!r} covers {other.prefix!r}")
    users += [pool_user(pool, vhost, events_vhost) for pool in pools]
    if admin is not None:
        users.insert(0, admin_user(admin, (vhost, events_vhost)))
    seen: set[str] = set()
    for user in users:
        if user.name in seen:
            raise ConfigError(f"broker user {user.name!r} would be made twice")
        seen.add(user.name)
    return users


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``password`` as RabbitMQ's ``rabbit_password_hashing_sha256`` stores it.

    base64(salt + SHA-256(salt + UTF-8 password)), with a 4-byte random salt.
    """
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def topology_definitions(vhost: str, settings: topo.TopologySettings) -> dict[str, Any]:
    """The shared topology as definitions: exchanges, shared queues, their bindings.

    The queues carry exactly the arguments :mod:`.topology` declares, so the
    import and a coordinator's own declarations never disagree.
    """
    return {
        "exchanges": [
            {
                "name": name,
                "vhost": vhost,
                "type": kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for name, kind in topo.EXCHANGES
        ],
        "queues": [
            {
                "name": spec.name,
                "vhost": vhost,
                "durable": spec.durable,
                "auto_delete": spec.auto_delete,
                "arguments": dict(spec.arguments or {}),
            }
            for spec in topo.shared_queues(settings)
        ],
        "bindings": [
            {
                "source": exchange,
                "vhost": vhost,
                "destination": queue,
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for exchange, queue, key in topo.SHARED_BINDINGS
        ],
    }


def definitions(
    users: Iterable[BrokerUser],
    password_hashes: Mapping[str, str],
    vhost: str,
    events_vhost: str = "/",
    settings: topo.TopologySettings | None = None,
) -> dict[str, Any]:
    """A RabbitMQ definitions document: vhosts, ``users``, their permissions, the topology.

    Args:
        password_hashes: user name → :func:`hash_password` of its password.

    Raises:
        ConfigError: a user has no password hash.
    """
    users = list(users)
    missing = [u.name for u in users if u.name not in password_hashes]
    if missing:
        raise ConfigError(f"no password for broker user(s) {', '.join(missing)}")
    return {
        "vhosts": [{"name": v} for v in dict.fromkeys((vhost, events_vhost))],
        "users": [
            {
                "name": u.name,
                "password_hash": password_hashes[u.name],
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": list(u.tags),
                "limits": {},
            }
            for u in users
        ],
        "permissions": [{"user": u.name, **asdict(p)} for u in users for p in u.permissions],
        "topic_permissions": [
            {"user": u.name, **asdict(t)} for u in users for t in u.topic_permissions
        ],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        **topology_definitions(vhost, settings or topo.TopologySettings()),
    }
