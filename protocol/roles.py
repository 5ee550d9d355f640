"""The role table of the original design, as data the runtime uses.

Each role has a priority (lower is more important: coordinator 1, specialist
2, guardian 2, worker 3, messenger 4), responsibilities (documentation shown
by ``robeing status`` and ``robeing agent --help``), and capabilities, which
decide the message types the role may send. A receiver refuses an envelope
whose sender's certified role lacks the capability its type needs
(``NotAllowed``, reason ``not_allowed``) — the last check of DESIGN §2.

The ``client`` role is not an agent: it is the identity of a submitter (the
CLI or a Python program) that publishes tasks, sends messages and asks for
votes, but never takes work.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError, NotAllowed


@dataclass(frozen=True, slots=True)
class Role:
    """One row of the role table."""

    name: str
    priority: int
    responsibilities: tuple[str, ...]
    capabilities: frozenset[str]
    takes_work: bool = True


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
                "distribute tasks to the best agents",
                "split tasks, track deadlines and dependencies, merge results",
                "resolve conflicts between agents",
            ),
            _AGENT_BASE | {ASSIGN},
        ),
        Role(
            "specialist",
            2,
            ("deep domain work in its specializations",),
            _AGENT_BASE,
        ),
        Role(
            "guardian",
            2,
            (
                "validate messages and results",
                "monitor the dead-letter queue and agent behaviour",
                "record evidence and quarantine misbehaving agents",
            ),
            _AGENT_BASE | {GUARD},
        ),
        Role("worker", 3, ("execute tasks",), _AGENT_BASE),
        Role(
            "messenger",
            4,
            ("protocol handling", "format conversion between JSON, msgpack and CSV"),
            _AGENT_BASE | {CONVERT},
        ),
        Role(
            "client",
            5,
            ("submit tasks and send messages on behalf of a user",),
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
    "guardian.alert": GUARD,
    "guardian.quarantine": GUARD,
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
