"""Specialist: deep domain work in its specializations.

A specialist offers the deep-analysis task types
(:mod:`robeing.agents.tasking.analysis_tasks`: ``describe``, ``outliers``,
``correlate``, ``trend``, ``histogram``) that a plain worker does not, and
announces them in its heartbeats. The coordinator prefers it for work that
matches its skills: its role priority (2, a worker's 3) enters the score
(see :mod:`robeing.protocol.scheduling`), as does the proficiency it claims
(``--specialization analysis:0.9``). Otherwise it runs the app's handlers
like a worker does.
"""

from __future__ import annotations

from ..context import AgentContext
from ..tasking.analysis_tasks import tasks as analysis_tasks


def install(agent: AgentContext) -> None:
    """Offer the analysis task types (an app's own of the same name win)."""
    for tdef in analysis_tasks.tasks.values():
        agent.add_task(tdef, default=True)
