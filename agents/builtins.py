"""Handlers every agent has: ``ping``, ``hello``, ``guardian.alert`` and ``crl.update``."""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.errors import Reject
from .context import AgentContext, Message

log = logging.getLogger(__name__)


def ping(msg: Message) -> dict[str, Any]:
    """Answer who we are and how busy, echoing the payload."""
    agent = msg.agent
    return {
        "pong": agent.id,
        "role": agent.settings.role,
        "load": agent.load,
        "echo": msg.payload,
    }


async def hello(msg: Message) -> None:
    """The codec already learned the sender's certificate.

    Answer a broadcast hello with our own, so newcomers can encrypt to us
    without the keys dir.
    """
    agent = msg.agent
    if msg.envelope.is_broadcast and agent.role.takes_work:
        await agent.send(msg.sender, "hello", agent.describe(), encrypt=False)


def guardian_alert(msg: Message) -> None:
    """Guardians broadcast these; every agent records them in its log."""
    log.warning("guardian %s alerts: %s", msg.sender, msg.payload)


def crl_update(msg: Message) -> bool:
    """Install a newer signed revocation list (older or forged ones are refused)."""
    if not isinstance(msg.payload, bytes):
        raise Reject("crl.update payload must be a signed revocation list")
    trust = msg.agent.trust
    installed = trust.update_revocations(msg.payload)
    if installed:
        log.warning("installed revocation list version %d", trust.revocations.version)
    return installed


def install(agent: AgentContext) -> None:
    """Register the built-in handlers on ``agent``."""
    agent.handle("ping", ping)
    agent.handle("hello", hello)
    agent.handle("guardian.alert", guardian_alert)
    agent.handle("crl.update", crl_update)
