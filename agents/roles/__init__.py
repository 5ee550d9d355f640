"""Role behaviours: one module per role, each installing what the role does.

``install_role(agent)`` looks the agent's role up in the role table
(:mod:`robeing.protocol.roles`) and calls that role's ``install``, which
registers handlers, heartbeat fields and start/stop hooks on the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import coordinator, guardian, messenger, specialist, worker

if TYPE_CHECKING:
    from ..runtime import Agent

INSTALLERS: dict[str, Callable[[Agent], None]] = {
    "coordinator": coordinator.install,
    "specialist": specialist.install,
    "worker": worker.install,
    "messenger": messenger.install,
    "guardian": guardian.install,
}


def install_role(agent: Agent) -> None:
    """Give ``agent`` the behaviour of its role (clients have none)."""
    installer = INSTALLERS.get(agent.settings.role)
    if installer is not None:
        installer(agent)
