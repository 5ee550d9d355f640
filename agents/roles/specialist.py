"""Specialist: deep domain work in its specializations.

A specialist is chosen before workers for work that matches its
specializations (its role priority is 2, a worker's 3). It runs the app's
handlers like a worker does.
"""

from __future__ import annotations

from ..context import AgentContext


def install(agent: AgentContext) -> None:
    """Specialists need no handlers beyond the runtime's dispatch and the app's."""
