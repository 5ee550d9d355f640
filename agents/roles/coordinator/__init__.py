"""The coordinator role: task distribution around the pure coordinator state machine.

* :mod:`.shell` — hosts :class:`~robeing.protocol.coordinator.CoordinatorState`:
  deliveries become events, actions become publishes;
* :mod:`.leadership` — the broker-held lock and the epoch that fences deposed
  coordinators.
"""

from __future__ import annotations

from ...context import AgentContext
from ...tasking.analysis_tasks import tasks as analysis_tasks
from .shell import Coordinator

__all__ = ["Coordinator", "install"]


def install(agent: AgentContext) -> Coordinator:
    """Give ``agent`` the coordinator's behaviour."""
    coordinator = Coordinator(agent)
    # Specialists run these; the coordinator needs their skill, split and merge.
    for tdef in analysis_tasks.tasks.values():
        agent.add_task(tdef, default=True)
    agent.on_start(coordinator.start)
    agent.on_stop(coordinator.stop)
    agent.add_heartbeat_extra(coordinator.report)
    agent.handle("task.result", coordinator.on_result)
    agent.handle("coordinator.status", lambda msg: coordinator.report())
    return coordinator
