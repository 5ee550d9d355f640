"""Role behaviours: one module per role, each installing what the role does.

``install_role(agent)`` looks the agent's role up in the role table
(:mod:`robeing.protocol.roles`) and calls that role's ``install``, which
registers handlers, heartbeat fields and start/stop hooks through the agent's
context (:class:`~robeing.agents.context.AgentContext`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..context import AgentContext
from . import coordinator, guardian, messenger, specialist, worker

INSTALLERS: dict[str, Callable[[AgentContext], Any]] = {
    "coordinator": coordinator.install,
    "specialist": specialist.install,
    "worker": worker.install,
    "messenger": messenger.install,
    "guardian": guardian.install,
}


def install_role(agent: AgentContext) -> None:
    """Give ``agent`` the behaviour of its role (clients have none)."""
    installer = INSTALLERS.get(agent.settings.role)
    if installer is not None:
        installer(agent)
