"""The runtime: the agent process and the one inbound path it runs every delivery through.

* :class:`Agent` (:mod:`.agent`) — connection, lifecycle, sending, heartbeats;
  implements :class:`~robeing.agents.context.AgentContext`;
* :mod:`.inbound` — open → check → dispatch → settle, for every queue.

It imports no role; :mod:`robeing.agents.assembly` installs them.
"""

from .agent import Agent

__all__ = ["Agent"]
