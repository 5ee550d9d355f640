"""Specification of the role table: priorities, capabilities, and who may send what."""

from __future__ import annotations

import pytest

from robeing.protocol.errors import ConfigError, NotAllowed
from robeing.protocol.roles import (
    AGENT_ROLES,
    ASSIGN,
    CONVERT,
    EXECUTE,
    GUARD,
    HEARTBEAT,
    MESSAGE,
    OPERATE,
    ROLES,
    SUBMIT,
    VOTE,
    capability_for,
    check_allowed,
    get_role,
)


@pytest.mark.parametrize(
    ("name", "priority"),
    [("coordinator", 1), ("specialist", 2), ("guardian", 2), ("worker", 3), ("messenger", 4)],
)
def test_role_priorities_of_the_original_design(name: str, priority: int) -> None:
    """Expect coordinator 1, specialist 2, guardian 2, worker 3, messenger 4."""
    assert get_role(name).priority == priority
    assert get_role(name).name == name
    assert get_role(name).responsibilities


def test_agent_roles_are_the_five_that_take_work() -> None:
    """Expect the five agent roles (in table order) to take work and the client not to."""
    assert AGENT_ROLES == ("coordinator", "specialist", "guardian", "worker", "messenger")
    assert not ROLES["client"].takes_work
    assert all(ROLES[name].takes_work for name in AGENT_ROLES)


def test_unknown_role_lists_the_valid_ones() -> None:
    """Given an unknown role name, When looked up, Expect ConfigError naming the valid roles."""
    with pytest.raises(ConfigError, match="wizard") as exc:
        get_role("wizard")
    assert all(name in str(exc.value) for name in AGENT_ROLES)


@pytest.mark.parametrize(
    ("message_type", "capability"),
    [
        ("task.assign", ASSIGN),
        ("task.cancel", ASSIGN),
        ("coordinator.epoch", ASSIGN),
        ("coordinator.", ASSIGN),
        ("task.result", EXECUTE),
        ("task.progress", ASSIGN),
        ("task.final", ASSIGN),
        ("task.finals", ASSIGN),
        ("task.refused", ASSIGN),
        ("task.submit", SUBMIT),
        ("heartbeat", HEARTBEAT),
        ("vote.cast", VOTE),
        ("vote.propose", VOTE),
        ("pbft.prepare", VOTE),
        ("guardian.alert", GUARD),
        ("guardian.quarantine", GUARD),
        # guardians only: orders, policies, re-runs; coordinators hand out audits
        ("guardian.orders", GUARD),
        ("guardian.policy", GUARD),
        ("guardian.rerun", GUARD),
        ("guardian.audit", ASSIGN),
        ("guardian.command", MESSAGE),  # an operator's request; the guardian decides
        ("pool.request", SUBMIT),
        ("pool.renew", SUBMIT),
        ("pool.record", ASSIGN),
        ("pool.contribute", OPERATE),  # operators ask the coordinator…
        ("pool.contribution", ASSIGN),  # …which orders the agent
        # not a listed type or prefix: plain messages
        ("chat", MESSAGE),
        ("ping", MESSAGE),
        ("vote", MESSAGE),
        ("heartbeat.extra", MESSAGE),
        ("task.assigned", MESSAGE),
        ("guardian.report", MESSAGE),
        ("messenger.convert", MESSAGE),
        ("xcoordinator.epoch", MESSAGE),
    ],
)
def test_capability_for(message_type: str, capability: str) -> None:
    """Given a message type, Expect exact entries to match exactly, entries ending in '.' to
    match as prefixes, and everything else to need only MESSAGE."""
    assert capability_for(message_type) == capability


ALLOWED = {
    "coordinator": {
        "task.assign",
        "task.cancel",
        "coordinator.epoch",
        "task.result",
        "task.finals",
    },
    "specialist": {"task.result", "vote.cast"},
    "guardian": {"guardian.alert", "guardian.quarantine", "pbft.commit"},
    "worker": {"task.result", "heartbeat", "task.submit"},
    "messenger": {"task.result", "heartbeat"},
    "client": {"task.submit", "vote.propose", "chat"},
}
REFUSED = {
    "coordinator": {"guardian.alert"},
    # Only a coordinator tells a submitter about its tasks: a forged final is refused.
    "specialist": {"task.assign", "guardian.quarantine", "task.progress", "task.finals"},
    "guardian": {"task.assign", "coordinator.epoch"},
    "worker": {"task.assign", "task.cancel", "coordinator.epoch", "guardian.alert", "task.final"},
    "messenger": {"task.assign", "guardian.alert"},
    "client": {"task.assign", "task.result", "task.refused", "heartbeat", "guardian.alert"},
}


@pytest.mark.parametrize(
    ("role", "message_type"),
    sorted((r, t) for r, types in ALLOWED.items() for t in types),
)
def test_check_allowed_accepts(role: str, message_type: str) -> None:
    """Given a role and a type its capabilities cover, Expect no error."""
    check_allowed(role, message_type)


@pytest.mark.parametrize(
    ("role", "message_type"),
    sorted((r, t) for r, types in REFUSED.items() for t in types),
)
def test_check_allowed_refuses(role: str, message_type: str) -> None:
    """Given a role and a type it lacks the capability for, Expect NotAllowed (not_allowed)
    naming the role, the type and the missing capability."""
    with pytest.raises(NotAllowed) as exc:
        check_allowed(role, message_type)

    assert exc.value.reason == "not_allowed"
    assert role in str(exc.value) and message_type in str(exc.value)
    assert capability_for(message_type) in str(exc.value)


@pytest.mark.parametrize("message_type", ["chat", "heartbeat", "task.submit"])
def test_unknown_role_may_send_nothing(message_type: str) -> None:
    """Given a certificate with a role not in the table, Expect every type refused."""
    with pytest.raises(NotAllowed):
        check_allowed("superuser", message_type)


def test_every_role_may_send_plain_messages() -> None:
    """Expect every role, the client included, to hold the MESSAGE capability."""
    for name in ROLES:
        check_allowed(name, "chat")


def test_only_the_messenger_converts() -> None:
    """Expect the CONVERT capability on the messenger only."""
    assert [name for name, role in ROLES.items() if CONVERT in role.capabilities] == ["messenger"]


def test_only_operators_and_coordinators_may_change_what_an_agent_contributes() -> None:
    """Expect OPERATE on clients and coordinators only: no agent reorders another."""
    holders = [name for name, role in ROLES.items() if OPERATE in role.capabilities]
    assert holders == ["coordinator", "client"]
