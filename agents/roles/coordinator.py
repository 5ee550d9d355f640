"""Coordinator: distribution of work and conflict resolution.

For now the coordinator keeps the registry of live agents from the heartbeat
topic and answers ``coordinator.agents`` requests with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime import Agent


def install(agent: Agent) -> None:
    """Install the coordinator's behaviour."""
