"""Worker: executes work handed to it.

A worker runs the handlers of the app it was started with (``--app``) for
the message types they register, announces its specializations, load and
capacity in every heartbeat, and takes part in votes. Nothing extra is
installed here: execution is the runtime's handler dispatch.
"""

from __future__ import annotations

from ..context import AgentContext


def install(agent: AgentContext) -> None:
    """Workers need no handlers beyond the runtime's dispatch and the app's."""
