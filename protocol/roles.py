"""The role table of the original design, as data the runtime uses.

Each role has a priority (lower is more important: coordinator 1, specialist
2, guardian 2, worker 3, messenger 4; the coordinator scores specialists
above workers with it, see ``protocol/scheduling.py``), its responsibilities
and capabilities as the original design names them, each with what
implements it here (shown by ``robeing roles``, ``robeing agent --role X
--help`` and ``robeing status``), and its *permissions*: the message types
the role may send. A receiver refuses an envelope whose sender's certified
role lacks the permission its type needs (``NotAllowed``, reason
``not_allowed``) — the last check of DESIGN §2.

The ``client`` role is not an agent: it is the identity of a submitter (the
CLI or a Python program) that publishes tasks, sends messages and asks for
votes, but never takes work.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, NotAllowed


@dataclass(frozen=True, slots=True)
class Role:
    """One row of the role table.

    Attributes:
        name: the role. priority: 1 (most important) to 9.
        responsibilities: ``(name in the original design, what does it here)``.
        capabilities: the permissions: what the role may send (see TYPE_CAPABILITY).
        takes_work: it runs as an agent (the client does not).
        abilities: the original design's capabilities, ``(name, what does it here)``.
    """

    name: str
    priority: int
    responsibilities: tuple[tuple[str, str], ...]
    capabilities: frozenset[str]
    takes_work: bool = True
    abilities: tuple[tuple[str, str], ...] = ()


# Capabilities. A message type needs at most one of them (see TYPE_CAPABILITY).
ASSIGN = "assign"  # hand out and cancel work
EXECUTE = "execute"  # report results of work
HEARTBEAT = "heartbeat"  # announce liveness and load
VOTE = "vote"  # take part in votes and BFT agreement
SUBMIT = "submit"  # submit tasks, propose votes
MESSAGE = "message"  # plain point-to-point and broadcast messages
CONVERT = "convert"  # protocol handling and format conversion
GUARD = "guard"  # quarantine agents, publish security alerts

_AGENT_BASE = frozenset({HEARTBEAT, VOTE, SUBMIT, MESSAGE, EXECUTE})

ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "coordinator",
            1,
            (
                ("task_distribution", "places tasks on the best agents; splits and merges"),
                ("conflict_resolution", "one task id per submitter and payload; resource races"),
                ("resource_management", "keeps the resource pool's ledger, fences attempts"),
            ),
            _AGENT_BASE | {ASSIGN},
            abilities=(
                ("overview", "the fleet's health, load and tasks in its heartbeats"),
                ("planning", "task graphs: dependencies, deadlines, priorities"),
                ("monitoring", "failure detection; reassigns a lost agent's tasks"),
            ),
        ),
        Role(
            "specialist",
            2,
            (
                ("domain_expertise", "preferred for tasks of its skills (priority 2)"),
                ("deep_analysis", "describe, outliers, correlate, trend, histogram"),
            ),
            _AGENT_BASE,
            abilities=(
                ("specialized_processing", "analysis tasks a plain worker does not offer"),
                ("expert_knowledge", "a proficiency per skill: --specialization analysis:0.9"),
            ),
        ),
        Role(
            "guardian",
            2,
            (
                ("security", "signed quarantine orders and access policies"),
                ("monitoring", "verified refusals and message rates per sender"),
                ("validation", "re-runs a sample of finished tasks and compares"),
            ),
            _AGENT_BASE | {GUARD},
            abilities=(
                ("threat_detection", "alerts on refusals and rate anomalies; evidence"),
                ("access_control", "quarantine; a signed role → message-type policy"),
            ),
        ),
        Role(
            "worker",
            3,
            (
                ("task_execution", "runs its app's tasks and the built-in ones"),
                ("data_processing", "wordcount, sort, statistics, sha256, convert"),
            ),
            _AGENT_BASE,
            abilities=(
                ("parallel_processing", "--concurrency tasks at once; split tasks"),
                ("batch_operations", "assignments and results batched per round"),
            ),
        ),
        Role(
            "messenger",
            4,
            (
                ("communication", "relays messages to agents that are away"),
                ("data_transfer", "chunked, signed, encrypted transfers of any size"),
            ),
            _AGENT_BASE | {CONVERT},
            abilities=(
                ("protocol_handling", "an HTTP/JSON gateway: --http HOST:PORT"),
                ("format_conversion", "JSON, msgpack, CSV and records"),
            ),
        ),
        Role(
            "client",
            5,
            (("submission", "submits tasks and sends messages on behalf of a user"),),
            frozenset({SUBMIT, MESSAGE, VOTE}),
            takes_work=False,
        ),
    )
}

AGENT_ROLES: tuple[str, ...] = tuple(name for name, r in ROLES.items() if r.takes_work)

# Message type (exact, or prefix ending in ".") → capability needed to send it.
# Types not listed need MESSAGE, which every role has.
TYPE_CAPABILITY: dict[str, str] = {
    "task.assign": ASSIGN,
    "task.cancel": ASSIGN,
    "coordinator.status": MESSAGE,  # a read-only query anyone may ask
    "coordinator.": ASSIGN,
    "task.result": EXECUTE,
    # What a submitter is told about its tasks comes from a coordinator only.
    "task.progress": ASSIGN,
    "task.final": ASSIGN,
    "task.finals": ASSIGN,
    "task.refused": ASSIGN,
    "task.record": ASSIGN,  # a results-stream record (protocol/records.py)
    "task.submit": SUBMIT,
    "task.revoke": SUBMIT,  # a submitter cancels its task (through the task queue)
    "task.query": SUBMIT,  # a submitter asks about its tasks (through the task queue)
    "heartbeat": HEARTBEAT,
    "vote.": VOTE,
    "pbft.": VOTE,
    "guardian.": GUARD,  # alerts, quarantine orders, evidence, access policies
    "guardian.report": MESSAGE,  # a read-only query anyone may ask
    "guardian.command": MESSAGE,  # an operator's request; the guardian decides who may
    "guardian.audit": ASSIGN,  # a coordinator's sample of finished tasks to validate
    "cluster.": SUBMIT,  # form, dissolve, leave, list, show: asked of the coordinator
    "cluster.member": ASSIGN,  # a coordinator's membership order
    "cluster.elect": ASSIGN,  # a coordinator's nudge to claim a cluster's lead
    # A leader's summary and term (records and announcements): agents only, not clients.
    "cluster.summary": HEARTBEAT,
    "cluster.term": HEARTBEAT,
    "cluster.record": ASSIGN,  # a clusters-stream record (protocol/clusters/directory.py)
    "pool.": SUBMIT,  # show, request, release: asked of the coordinator
}


def get_role(name: str) -> Role:
    """Look up a role by name.

    Raises:
        ConfigError: unknown role (the message lists the valid ones).
    """
    try:
        return ROLES[name]
    except KeyError:
        raise ConfigError(f"unknown role {name!r}; choose one of {', '.join(ROLES)}") from None


def capability_for(message_type: str) -> str:
    """The capability a sender needs for ``message_type``."""
    cap = TYPE_CAPABILITY.get(message_type)
    if cap is not None:
        return cap
    for key, needed in TYPE_CAPABILITY.items():
        if key.endswith(".") and message_type.startswith(key):
            return needed
    return MESSAGE


def check_allowed(role_name: str, message_type: str) -> None:
    """Refuse ``message_type`` from a sender certified as ``role_name``.

    Raises:
        NotAllowed: the role lacks the capability, or is unknown.
    """
    role = ROLES.get(role_name)
    needed = capability_for(message_type)
    if role is None or needed not in role.capabilities:
        raise NotAllowed(f"role {role_name!r} may not send {message_type!r} (needs {needed!r})")
